"""The T5 text encoder: umT5 (Wan's text encoder, one relative position bias per layer) and T5 v1.1 (one shared bias).

Papers: Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer",
JMLR 2020 (arXiv:1910.10683), with the v1.1 changes (gated-GELU feed-forward, no dropout at pre-training,
untied embeddings); Chung, Constant et al., "UniMax: Fairer and More Effective Language Sampling for Large-Scale
Multilingual Pretraining", ICLR 2023 (umT5: a 256k-piece multilingual vocabulary and a relative position bias
in *every* layer instead of the first one only). Original code this file follows: Wan-Video/Wan2.1
``wan/modules/t5.py`` (``T5Encoder``, ``umt5_xxl``, ``T5EncoderModel``); attribute names are the keys of Wan's
released ``models_t5_umt5-xxl-enc-bf16.pth``. Hugging Face ``UMT5EncoderModel`` / ``T5EncoderModel`` folders load
through the rename table :data:`HF_RENAMES`.

The encoder, for token ids t_1..t_n (b = batch, n = tokens, d = dim, h = heads)::

    x = E[t]                                                  token embedding, no scaling, no absolute positions
    for each block:
        x = x + o(Attention(q(RMSNorm(x)), k(.), v(.), bias = B + M))       B: relative position bias (h, n, n)
        x = x + fc2( fc1(RMSNorm(x)) * gelu_tanh(gate(RMSNorm(x))) )       gated-GELU feed-forward
    y = RMSNorm(x)                                            (b, n, d)

- RMSNorm (T5LayerNorm): x / sqrt(mean(x^2) + 1e-6) * w -- no mean subtraction, no bias.
- Attention is *not* scaled by 1/sqrt(d_head): T5 folds that factor into its initialisation (``scale=1``).
- B[h, i, j] = bias_table[bucket(j - i), h]: the signed distance between key j and query i falls in one of
  ``num_buckets`` buckets (half for each direction): exact for |j - i| < 8, then logarithmic up to
  ``max_dist`` = 128 and shared beyond. umT5 has one table per block (``blocks.N.pos_embedding``), T5 v1.1 one
  for the whole encoder (``pos_embedding``, ``shared_pos=True``).
- M masks the padding: the key positions whose mask is 0 get the most negative finite number, as the original.

Layouts: in ``ids`` (b, n) int64 and ``mask`` (b, n) (1 = token, 0 = padding); out (b, n, dim). Wan pads every
prompt to 512 tokens and then keeps only the first L = mask.sum() rows of each output (:func:`encode_prompts`).

Config from shapes. Every width is in the tensor shapes, and so is the number of heads: the bias table is
(num_buckets, num_heads) (umT5-XXL: (32, 64), so 64 heads of 4096 / 64 = 64 channels). A Hugging Face
config.json, or ``num_heads=`` given to :meth:`T5Encoder.from_pretrained`, must agree with it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ...checkpoints import load_model, open_state_dict
from ...errors import CheckpointError, ConfigError, InputError
from ...nn.attention import attention

WAN_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"  # the file's name in a Wan-AI release folder


@dataclass(frozen=True)
class Config:
    vocab: int = 256384  # token_embedding rows (umT5: 256384 pieces; T5 v1.1: 32128)
    dim: int = 4096  # model width d (umT5-XXL 4096)
    dim_attn: int = 4096  # q/k/v width = num_heads * head_dim (XXL: 64 x 64)
    dim_ffn: int = 10240  # gated-GELU hidden width
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32  # relative-position buckets, half for keys before the query, half after
    max_dist: int = 128  # distances beyond this share the last bucket (log-spaced from 8 up to here)
    shared_pos: bool = False  # False: umT5, one bias table per block; True: T5 v1.1, one for the encoder
    eps: float = 1e-6  # RMSNorm epsilon

    @property
    def head_dim(self) -> int:
        return self.dim_attn // self.num_heads

    @classmethod
    def from_state_dict(cls, shapes: dict[str, tuple], num_heads: int | None = None) -> "Config":
        """The config from Wan-layout tensor shapes (key -> shape); ``num_heads``, if given, is checked."""
        if "token_embedding.weight" not in shapes or "blocks.0.attn.q.weight" not in shapes:
            raise CheckpointError("not a T5 encoder in Wan's layout: no token_embedding.weight / "
                                  f"blocks.0.attn.q.weight (found e.g. {sorted(shapes)[:3]})")
        shared = "pos_embedding.embedding.weight" in shapes  # T5 v1.1: one table for the encoder
        table = "pos_embedding.embedding.weight" if shared else "blocks.0.pos_embedding.embedding.weight"
        if table not in shapes:
            raise CheckpointError("T5 encoder without a relative position bias (expected blocks.0.pos_embedding.* for "
                                  "umT5 or pos_embedding.* for T5 v1.1)")
        buckets, heads = shapes[table]  # (num_buckets, num_heads): the head count is in the shapes
        if num_heads is not None and num_heads != heads:
            raise CheckpointError(f"num_heads={num_heads} was given, but the file's position-bias table is "
                                  f"({buckets}, {heads}): {heads} heads")
        vocab, dim = shapes["token_embedding.weight"]
        dim_attn = shapes["blocks.0.attn.q.weight"][0]
        if dim_attn % heads:
            raise CheckpointError(f"attention width {dim_attn} is not a multiple of {heads} heads")
        layers = len({int(k.split(".")[1]) for k in shapes if k.startswith("blocks.") and k.split(".")[1].isdigit()})
        return cls(vocab=vocab, dim=dim, dim_attn=dim_attn, dim_ffn=shapes["blocks.0.ffn.fc1.weight"][0],
                   num_heads=heads, num_layers=layers, num_buckets=buckets, shared_pos=shared)


# ------------------------------------------------------------------------------------------------ layers

def fp16_clamp(x: torch.Tensor) -> torch.Tensor:
    """As the original: in float16, an overflowed residual stream is clamped back into range (bf16/fp32: no-op)."""
    if x.dtype == torch.float16 and torch.isinf(x).any():
        limit = torch.finfo(x.dtype).max - 1000
        x = x.clamp(-limit, limit)
    return x


class T5LayerNorm(nn.Module):
    """RMS LayerNorm: x / sqrt(mean(x^2) + eps) * weight, the statistic in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.type_as(self.weight)
        return self.weight * x


class T5RelativeEmbedding(nn.Module):
    """The relative position bias B (1, heads, n_q, n_k) from a learned (num_buckets, heads) table."""

    def __init__(self, num_buckets: int, num_heads: int, max_dist: int = 128):
        super().__init__()
        self.num_buckets, self.max_dist = num_buckets, max_dist
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def bucket(self, rel: torch.Tensor) -> torch.Tensor:
        """Bidirectional bucket of each signed distance rel = j - i (keys after the query use the upper half)::

            half = num_buckets / 2,  exact = half / 2
            bucket = (rel > 0) * half + (|rel|                                      if |rel| < exact
                                         min(exact + log(|rel|/exact) / log(max_dist/exact) * (half - exact),
                                             half - 1)                              otherwise)
        """
        half = self.num_buckets // 2
        exact = half // 2
        out = (rel > 0).long() * half
        rel = rel.abs()
        large = exact + (torch.log(rel.float() / exact) / math.log(self.max_dist / exact) * (half - exact)).long()
        large = large.clamp(max=half - 1)
        return out + torch.where(rel < exact, rel, large)

    def forward(self, n_q: int, n_k: int) -> torch.Tensor:
        device = self.embedding.weight.device
        rel = torch.arange(n_k, device=device)[None, :] - torch.arange(n_q, device=device)[:, None]  # (n_q, n_k): j - i
        bias = self.embedding(self.bucket(rel))  # (n_q, n_k, heads)
        return bias.permute(2, 0, 1).unsqueeze(0)  # (1, heads, n_q, n_k)


class T5Attention(nn.Module):
    """Multi-head self-attention without the 1/sqrt(d) scale; the position bias and padding mask come in ``bias``."""

    def __init__(self, dim: int, dim_attn: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim_attn, bias=False)
        self.k = nn.Linear(dim, dim_attn, bias=False)
        self.v = nn.Linear(dim, dim_attn, bias=False)
        self.o = nn.Linear(dim_attn, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # x (b, n, dim); q/k/v (b, n, heads * head_dim); bias (b or 1, heads, n, n)
        out = attention(self.q(x), self.k(x), self.v(x), heads=self.num_heads, bias=bias, scale=1.0)
        return self.o(out)


class T5FeedForward(nn.Module):
    """Gated-GELU MLP (Shazeer 2020): fc2( fc1(x) * gelu_tanh(gate(x)) ). ``gate`` is a Sequential (index 0 is
    the Linear) because the checkpoint's key is ``ffn.gate.0.weight``."""

    def __init__(self, dim: int, dim_ffn: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, dim_ffn, bias=False), nn.GELU(approximate="tanh"))
        self.fc1 = nn.Linear(dim, dim_ffn, bias=False)
        self.fc2 = nn.Linear(dim_ffn, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))), the original's GELU
        return self.fc2(self.fc1(x) * self.gate(x))


class T5Block(nn.Module):
    """Pre-norm residual block: attention, then the feed-forward. umT5 blocks own their position bias."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.norm1 = T5LayerNorm(cfg.dim, cfg.eps)
        self.attn = T5Attention(cfg.dim, cfg.dim_attn, cfg.num_heads)
        self.norm2 = T5LayerNorm(cfg.dim, cfg.eps)
        self.ffn = T5FeedForward(cfg.dim, cfg.dim_ffn)
        self.pos_embedding = None if cfg.shared_pos else T5RelativeEmbedding(cfg.num_buckets, cfg.num_heads,
                                                                             cfg.max_dist)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None, shared_bias: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[1]
        bias = shared_bias if self.pos_embedding is None else self.pos_embedding(n, n)  # (1, heads, n, n)
        bias = bias.to(x.dtype)
        if pad_mask is not None:  # padding keys: the most negative finite value, replacing the position bias
            bias = bias.masked_fill(pad_mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)  # (b, heads, n, n)
        x = fp16_clamp(x + self.attn(self.norm1(x), bias))
        return fp16_clamp(x + self.ffn(self.norm2(x)))


# ------------------------------------------------------------------------------------------------ the encoder

class T5Encoder(nn.Module):
    """The encoder stack. ``T5Encoder.from_pretrained(path)`` for Wan's .pth or a Hugging Face folder."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab, cfg.dim)
        self.pos_embedding = T5RelativeEmbedding(cfg.num_buckets, cfg.num_heads, cfg.max_dist) if cfg.shared_pos \
            else None
        self.blocks = nn.ModuleList(T5Block(cfg) for _ in range(cfg.num_layers))
        self.norm = T5LayerNorm(cfg.dim, cfg.eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids (b, n) int64, mask (b, n) 1/0 or None -> (b, n, dim). Rows at padded positions are computed too
        (Wan discards them); the real rows do not depend on the padding."""
        x = self.token_embedding(ids)  # (b, n, dim)
        n = ids.shape[1]
        shared = self.pos_embedding(n, n) if self.pos_embedding is not None else None
        for block in self.blocks:
            x = block(x, mask, shared)
        return self.norm(x)

    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype | None = None, device="cpu", *,
                        num_heads: int | None = None) -> "T5Encoder":
        """Load Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` (or a Wan-AI folder holding it), or a Hugging Face
        ``UMT5EncoderModel`` / ``T5EncoderModel`` folder (config.json + safetensors, sharded or not). ``dtype``:
        None = float32 (the released bf16 weights upcast); ``torch.bfloat16`` keeps them as released."""
        path, dtype = Path(path), _dtype(dtype)
        sd = open_state_dict(path, names=(WAN_T5_FILE,))
        skip: dict = {}
        if any(k.startswith(("encoder.block.", "shared.")) for k in sd):  # Hugging Face layout
            config_file = (path if path.is_dir() else path.parent) / "config.json"
            hf = json.loads(config_file.read_text()) if config_file.is_file() else {}
            num_heads = _check_hf_config(hf, num_heads, str(config_file))
            sd, skip = hf_to_wan(sd)
        cfg = Config.from_state_dict(sd.shapes, num_heads=num_heads)
        model = load_model(cls, cfg, sd, source=str(path), skip=skip, dtype=dtype, device=device,
                  hint="Expected Wan's models_t5_umt5-xxl-enc-bf16.pth or a UMT5EncoderModel/T5EncoderModel folder")
        return model.eval().requires_grad_(False)


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def _dtype(dtype):
    """A torch dtype, None, or one of the names in DTYPES (as the registry and CLI pass them)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)} or a torch dtype")
    return DTYPES[dtype]


# ------------------------------------------------------------------------------------------------ Hugging Face layout

# Hugging Face (transformers' UMT5EncoderModel / T5EncoderModel) key -> Wan key, applied in order
HF_RENAMES = [
    (r"^shared\.weight$", "token_embedding.weight"),
    (r"^encoder\.final_layer_norm\.", "norm."),
    (r"^encoder\.block\.(\d+)\.layer\.0\.layer_norm\.", r"blocks.\1.norm1."),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.", r"blocks.\1.pos_embedding.embedding."),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.", r"blocks.\1.attn.\2."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.layer_norm\.", r"blocks.\1.norm2."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.", r"blocks.\1.ffn.gate.0."),  # gelu(wi_0 x) ...
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.", r"blocks.\1.ffn.fc1."),  # ... * wi_1 x
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.", r"blocks.\1.ffn.fc2."),
]
HF_SKIP = {
    "the token embedding tied to shared.weight (a second copy of it)": "encoder.embed_tokens.",
    "the decoder and LM head of a full encoder-decoder checkpoint: only the encoder is used": ("decoder.", "lm_head."),
}


def hf_to_wan(sd):
    """A lazy view of a Hugging Face T5/UMT5 state dict under Wan's names, and the skip rules for the rest. T5
    (not umT5) keeps its one bias table in block 0: it becomes the shared ``pos_embedding``."""
    per_layer = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in sd.shapes
    has_shared = "shared.weight" in sd.shapes

    def rename(key: str) -> str:
        if not has_shared and key == "encoder.embed_tokens.weight":
            return "token_embedding.weight"
        if not per_layer and key == "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight":
            return "pos_embedding.embedding.weight"
        for pattern, new in HF_RENAMES:
            if re.match(pattern, key):
                return re.sub(pattern, new, key)
        return key

    return sd.rename(rename), HF_SKIP


def _check_hf_config(hf: dict, num_heads: int | None, source: str) -> int | None:
    """What a Hugging Face config.json says that the shapes cannot: the feed-forward kind and the head count."""
    if not hf:
        return num_heads
    ff = hf.get("feed_forward_proj", "gated-gelu")
    if ff not in ("gated-gelu", "gated-gelu_new"):
        raise CheckpointError(f"{source}: feed_forward_proj {ff!r}; i2v's T5 encoder is the gated-GELU one of T5 v1.1 "
                              "and umT5 (the original T5's ReLU feed-forward is not implemented)")
    if hf.get("dense_act_fn", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"{source}: dense_act_fn {hf['dense_act_fn']!r}; expected the tanh GELU (gelu_new)")
    if hf.get("relative_attention_max_distance", 128) != 128:
        raise CheckpointError(f"{source}: relative_attention_max_distance {hf['relative_attention_max_distance']}; "
                              "this encoder uses 128 as T5 and umT5 do")
    heads = hf.get("num_heads")
    if num_heads is not None and heads is not None and heads != num_heads:
        raise ConfigError(f"num_heads={num_heads} was given but {source} says {heads}")
    return num_heads if num_heads is not None else heads


# ------------------------------------------------------------------------------------------------ prompts -> embeddings

def encode_prompts(model: T5Encoder, tokenizer, prompts, *, text_len: int = 512, clean: bool = True,
                   device=None) -> list[torch.Tensor]:
    """Prompts -> one (L_i, dim) tensor each, as Wan's ``T5EncoderModel.__call__``: clean each prompt
    (:func:`i2v.text.prompt.clean_prompt`), tokenize to ``text_len`` ids + mask (a longer prompt is cut to
    ``text_len - 1`` tokens + ``</s>`` with a :class:`~i2v.text.tokenizer.TruncationWarning`), encode, and keep the
    first L_i = mask.sum() rows of each output.

    The encoder runs on the first max(L_i) positions only, not all ``text_len``: padded keys are masked out, so
    the rows that are kept are the same (tests/test_text.py checks against the full 512-token run)."""
    from ...text.prompt import clean_prompt

    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise InputError("encode_prompts: no prompts given (an empty prompt is \"\", not an empty list)")
    texts = [clean_prompt(p) for p in prompts] if clean else list(prompts)
    batch = tokenizer.encode_batch(texts, length=text_len, stacklevel=3)  # a warning names the caller's line
    if int(batch.ids.max()) >= model.cfg.vocab:
        raise ConfigError(f"the tokenizer ({tokenizer!r}) gave id {int(batch.ids.max())}, but the text encoder has "
                          f"{model.cfg.vocab} embedding rows: the tokenizer is of another model (Wan's is "
                          "google/umt5-xxl/ beside models_t5_umt5-xxl-enc-bf16.pth)")
    device = device if device is not None else model.token_embedding.weight.device
    n = max(batch.lengths)
    ids, mask = batch.ids[:, :n].to(device), batch.mask[:, :n].to(device)  # (b, n)
    with torch.no_grad():
        out = model(ids, mask)  # (b, n, dim)
    return [row[:length] for row, length in zip(out, batch.lengths)]
