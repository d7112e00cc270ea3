"""The Wan diffusion transformer (Wan2.1 I2V-14B / FLF2V-14B / T2V, Wan2.2 TI2V-5B), written from primitives.

Paper: Wan Team 2025, "Wan: Open and Advanced Large-Scale Video Generative Models" (arXiv 2503.20314), Sec. 3.2.
Original code: Wan-Video/Wan2.1 ``wan/modules/model.py`` (WanModel, WanAttentionBlock, WanI2VCrossAttention,
MLPProj, rope_apply); Wan-Video/Wan2.2 ``wan/modules/model.py`` (per-token timesteps of TI2V-5B).

Data flow (b = batch, f h w = latent frames / rows / columns after the 1x2x2 patches, L = f h w tokens)::

    x (b, 16|48, F, H, W) [+ y (b, 20, F, H, W): 4 mask channels + the image's VAE latent, i2v/flf2v]
      -> patch_embedding: Conv3d kernel = stride = (1, 2, 2)        -> tokens (b, L, dim), (f, h, w) raster order
    t (b,) or (b, f) -> sinusoid(256) -> time_embedding (Linear-SiLU-Linear) = e (b, f|1, dim)
                     -> time_projection (SiLU-Linear) = e0 (b, f|1, 6, dim)          [float32, as the original]
    T5 output (b, <=512, 4096) zero-padded to 512 rows -> text_embedding (Linear-GELU(tanh)-Linear) (b, 512, dim)
    CLIP tokens (b, 257 | 514, 1280) [+ emb_pos, flf2v] -> img_emb (LN-Linear-GELU-Linear-LN) (b, 257|514, dim)
    blocks x num_layers, each with its own modulation (1, 6, dim) added to e0 and chunked into
        shift1, scale1, gate1, shift2, scale2, gate2:
          x = x + gate1 * SelfAttn(LN1(x) * (1 + scale1) + shift1)       q, k: RMSNorm over dim, then 3D RoPE
          x = x + CrossAttn(LN3(x), text, image)                         LN3 affine, not modulated; text and
                                                                          image attention summed before o
          x = x + gate2 * FFN(LN2(x) * (1 + scale2) + shift2)            Linear-GELU(tanh)-Linear
    head: (head.modulation + e) -> shift, scale; Linear(LN(x) * (1 + scale) + shift) -> (b, L, 1*2*2*out_dim)
    unpatchify 'b (f h w) (p q r c) -> b c (f p) (h q) (w r)'  (the original's einsum 'fhwpqrc->cfphqwr')

Facts (checked against the reference runs in ../shared/reference/wan*):
- RoPE on head width d: the d/2 rotation pairs split (d/2 - 2 floor(d/6), floor(d/6), floor(d/6)) between
  (f, h, w), integer positions, theta 10000, each axis with its own exponent base; angles in float64.
- norm1, norm2: LayerNorm eps 1e-6 without affine; norm3 affine; q/k RMSNorm eps 1e-6 over the full width.
- Cross-attention sees all 512 text rows (the zero padding included, no mask) and, for i2v/flf2v, the CLIP
  tokens through separate ``k_img``/``v_img`` (``norm_k_img``); the two outputs are summed before ``o``.
- TI2V-5B: latent frame 0 is the clean image, so its tokens get timestep 0 (``clean_first_frame=True``):
  e and e0 are per latent frame. The head uses e, not e0.
- Heads: the released files do not record them; every release has head width 128 (14B: 5120 / 40, 5B: 3072 /
  24, 1.3B: 1536 / 12), so ``num_heads = dim // 128`` unless a config.json beside the weights says otherwise.

Precision, as the original's autocast regions: the time embedding, modulation, norms and head compute in
float32 (their parameters stay float32 whatever ``dtype`` the rest is loaded in), the residual stream is
float32, the matmuls and attention run in the compute dtype (the patch embedding's dtype). Weights stored in
float8_e4m3fn can stay so (``keep_fp8=True``): each :class:`Linear` casts its weight up for its own matmul only.

Layouts in and out: see :meth:`WanDiT.forward`. Attribute names equal the original checkpoint's keys; the
diffusers ``WanTransformer3DModel`` names map through :data:`DIFFUSERS_RENAMES` (bottom of this file).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...errors import CheckpointError, ConfigError, InputError, NumericalError
from ...nn.attention import attention
from ...nn.embeddings import timestep_embedding
from ...nn.rope import apply_rope, rope_3d

HEAD_DIM = 128  # head width of every released Wan DiT
TEXT_LEN = 512  # T5 rows the cross-attention sees (the original's T5_CONTEXT_TOKEN_NUMBER)
CLIP_TOKENS = 257  # 1 class token + 16 x 16 patches of ViT-H/14 at 224 px


@dataclass
class WanDiTConfig:
    """Defaults are Wan2.1 I2V-14B. :meth:`from_state_dict` reads every field off the tensor shapes except
    ``num_heads`` (not recorded in the weights: ``dim // 128`` unless given)."""

    dim: int = 5120  # token width (14B: 5120, TI2V-5B: 3072, T2V-1.3B: 1536)
    ffn_dim: int = 13824  # hidden width of each block's feed-forward network
    num_heads: int = 40  # attention heads; head width dim / num_heads (128 in every release)
    num_layers: int = 40  # transformer blocks
    in_dim: int = 36  # channels in: 16 noisy latent + 20 conditioning (i2v, flf2v); 16 (t2v); 48 (ti2v, 2.2 VAE)
    out_dim: int = 16  # latent channels predicted (the velocity); 48 for TI2V
    text_dim: int = 4096  # umT5-XXL width
    freq_dim: int = 256  # width of the sinusoidal timestep embedding
    patch_size: tuple[int, int, int] = (1, 2, 2)  # latent frames, rows, columns per token
    image_dim: int | None = 1280  # CLIP ViT-H width of img_emb (the image cross-attention); None = no image branch
    first_last: bool = False  # FLF2V: img_emb.emb_pos, two CLIP images (first and last frame, 2 x 257 tokens)
    eps: float = 1e-6  # LayerNorm / RMSNorm epsilon of the blocks and head
    theta: float = 10000.0  # RoPE base

    @property
    def model_type(self) -> str:
        """The original's ``model_type``: flf2v, i2v (y concatenated; Wan2.1 also with the CLIP branch), ti2v
        (48 channels, Wan2.2 VAE), t2v."""
        if self.image_dim is not None:
            return "flf2v" if self.first_last else "i2v"
        return {48: "ti2v", 36: "i2v"}.get(self.in_dim, "t2v")  # 36 without CLIP: Wan2.2 I2V-A14B's experts

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @classmethod
    def from_state_dict(cls, shapes: dict[str, tuple], num_heads: int | None = None) -> "WanDiTConfig":
        """The config of a DiT state dict in the original key names, from its tensor shapes (key -> shape)."""
        need = ("patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight", "head.head.weight",
                "blocks.0.ffn.0.weight")
        missing = [k for k in need if k not in shapes]
        if missing:
            raise CheckpointError(f"not a Wan DiT state dict: no {', '.join(missing)} (found e.g. {sorted(shapes)[:3]})")
        dim, in_dim, *patch = shapes["patch_embedding.weight"]  # Conv3d weight (dim, in_dim, pt, ph, pw)
        layers = 0
        while f"blocks.{layers}.ffn.0.weight" in shapes:
            layers += 1
        heads = num_heads or dim // HEAD_DIM
        if heads < 1 or dim % heads or (dim // heads) % 2:
            raise CheckpointError(f"Wan DiT of width {dim}: cannot use {heads} heads (the width must split into an "
                                  f"even head width); pass num_heads= (released models: dim / 128)")
        image = shapes.get("img_emb.proj.0.weight")  # LayerNorm over the CLIP width
        return cls(dim=dim, ffn_dim=shapes["blocks.0.ffn.0.weight"][0], num_heads=heads, num_layers=layers,
                   in_dim=in_dim, out_dim=shapes["head.head.weight"][0] // math.prod(patch),
                   text_dim=shapes["text_embedding.0.weight"][1], freq_dim=shapes["time_embedding.0.weight"][1],
                   patch_size=tuple(patch), image_dim=image[0] if image else None,
                   first_last="img_emb.emb_pos" in shapes)


# ---------------------------------------------------------------------------------------------------- layers

class Linear(nn.Linear):
    """nn.Linear computing in its input's dtype. A weight stored in another dtype (float8_e4m3fn kept to halve
    memory, or bf16 weights fed float32 activations) is cast for this one matmul and dropped afterwards."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        if w.dtype != x.dtype:
            w, b = w.to(x.dtype), None if b is None else b.to(x.dtype)
        return F.linear(x, w, b)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (as the original's WanLayerNorm and autocast do), float32 out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019) over the last axis, in float32: x / sqrt(mean(x^2) + eps) * weight."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(F, "rms_norm"):  # torch >= 2.4: the same formula in one fused pass
            return F.rms_norm(x.float(), self.weight.shape, self.weight, self.eps)
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN (DiT, Peebles & Xie 2023): x * (1 + scale) + shift. x (b, f, n, d); shift, scale (b, f|1, 1, d)."""
    return torch.addcmul(shift, x, 1 + scale)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all L tokens with RMSNorm on q and k (over the full width) and 3D RoPE."""

    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, split=None) -> torch.Tensor:
        # x (b, L, dim) in the compute dtype; cos, sin (L, head_dim / 2). With sequence parallelism (``split``, an
        # i2v.nn.parallel.TokenSplit) L is this process's slice of the tokens and cos, sin their rows.
        q = rearrange(self.norm_q(self.q(x)), "b n (h d) -> b h n d", h=self.heads)
        k = rearrange(self.norm_k(self.k(x)), "b n (h d) -> b h n d", h=self.heads)
        v = rearrange(self.v(x), "b n (h d) -> b h n d", h=self.heads)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # q.k now depends on relative (f, h, w) only
        q, k = q.to(x.dtype), k.to(x.dtype)
        if split is None:
            out = attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, (b, h, L, d)
        else:  # Ulysses: all-to-all to (every token, heads / N), the same attention, and back
            out = split.attention(q, k, v)
        return self.o(rearrange(out, "b h n d -> b n (h d)"))


class CrossAttention(nn.Module):
    """Attention of the video tokens over the 512 text rows (no mask) and, with ``image=True`` (i2v, flf2v),
    over the CLIP tokens through their own k_img / v_img; the two results are summed before ``o``."""

    def __init__(self, dim: int, heads: int, eps: float, image: bool):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)
        if image:
            self.k_img, self.v_img = Linear(dim, dim), Linear(dim, dim)
            self.norm_k_img = RMSNorm(dim, eps)
        self.image = image

    def forward(self, x: torch.Tensor, text: torch.Tensor, image: torch.Tensor | None,
                text_bias: torch.Tensor | None = None) -> torch.Tensor:
        # x (b, L, dim); text (b, m <= 512, dim); image (b, 257|514, dim) -- all in the compute dtype;
        # text_bias (1, m): log multiplicity of each text row (see WanDiT.embed_text)
        dt = x.dtype
        q = self.norm_q(self.q(x)).to(dt)
        out = attention(q, self.norm_k(self.k(text)).to(dt), self.v(text), heads=self.heads, bias=text_bias)
        if self.image:
            out = out + attention(q, self.norm_k_img(self.k_img(image)).to(dt), self.v_img(image), heads=self.heads)
        return self.o(out)


class Block(nn.Module):
    """One Wan transformer block (WanAttentionBlock): modulated self-attention, cross-attention, modulated FFN."""

    def __init__(self, cfg: WanDiTConfig):
        super().__init__()
        d = cfg.dim
        self.norm1 = LayerNorm(d, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(d, cfg.num_heads, cfg.eps)
        self.norm3 = LayerNorm(d, eps=cfg.eps, elementwise_affine=True)  # before cross-attention, not modulated
        self.cross_attn = CrossAttention(d, cfg.num_heads, cfg.eps, image=cfg.image_dim is not None)
        self.norm2 = LayerNorm(d, eps=cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(Linear(d, cfg.ffn_dim), nn.GELU(approximate="tanh"), Linear(cfg.ffn_dim, d))
        self.modulation = nn.Parameter(torch.zeros(1, 6, d))  # this block's offset to the shared e0

    def forward(self, x, e0, cos, sin, text, image, text_bias=None, split=None):
        # x (b, f, n, dim) float32 residual stream, tokens grouped by latent frame; e0 (b, f|1, 6, dim) float32
        dt = text.dtype  # the compute dtype
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + e0).chunk(6, dim=2)  # (b, f|1, 1, dim)
        h = modulate(self.norm1(x), shift1, scale1).to(dt)
        y = self.self_attn(h.flatten(1, 2), cos, sin, split).view_as(h)  # (b, L, dim) -> (b, f, n, dim)
        x = torch.addcmul(x, y, gate1)  # x + gate1 * y, in float32
        y = self.cross_attn(self.norm3(x).to(dt).flatten(1, 2), text, image, text_bias).view_as(x)
        x = x + y
        y = self.feed_forward(modulate(self.norm2(x), shift2, scale2).to(dt))
        return torch.addcmul(x, y, gate2)

    def feed_forward(self, h: torch.Tensor) -> torch.Tensor:
        """ffn = Linear-GELU(tanh)-Linear. Its hidden layer (ffn_dim wide) is the largest activation of the model;
        at inference the GELU overwrites it in place, so it needs one buffer instead of two."""
        if torch.is_grad_enabled():  # autograd needs the GELU's input
            return self.ffn(h)
        fc1, act, fc2 = self.ffn
        return fc2(torch.ops.aten.gelu_(fc1(h), approximate=act.approximate))


class Head(nn.Module):
    """Output layer: adaLN with its own (1, 2, dim) modulation on e (not e0), then a Linear to the patch."""

    def __init__(self, cfg: WanDiTConfig):
        super().__init__()
        self.norm = LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.head = Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.zeros(1, 2, cfg.dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        # x (b, f, n, dim), e (b, f|1, dim), both float32 -> (b, f, n, p q r c)
        shift, scale = (self.modulation + e.unsqueeze(2)).chunk(2, dim=2)  # (b, f|1, 1, dim) each
        return self.head(modulate(self.norm(x), shift, scale))


class MLPProj(nn.Module):
    """img_emb: the CLIP tokens' projection to the model width, LN-Linear-GELU-Linear-LN (torch LayerNorm eps
    1e-5). FLF2V adds a learned position embedding ``emb_pos`` over the 2 x 257 tokens of first and last frame."""

    def __init__(self, image_dim: int, dim: int, first_last: bool):
        super().__init__()
        self.proj = nn.Sequential(LayerNorm(image_dim), Linear(image_dim, image_dim), nn.GELU(),
                                  Linear(image_dim, dim), LayerNorm(dim))
        if first_last:
            self.emb_pos = nn.Parameter(torch.zeros(1, 2 * CLIP_TOKENS, image_dim))

    def forward(self, clip: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if hasattr(self, "emb_pos"):
            clip = clip + self.emb_pos
        norm1, fc1, act, fc2, norm2 = self.proj
        return norm2(fc2(act(fc1(norm1(clip).to(dtype))))).to(dtype)


# ---------------------------------------------------------------------------------------------------- model

class WanDiT(nn.Module):
    Config = WanDiTConfig
    # None: one process. An i2v.nn.parallel.SequenceParallel (set by use_sequence_parallel): each process of the
    # torchrun group keeps a contiguous slice of the video tokens and self-attention exchanges heads for tokens.
    sequence_parallel = None

    def __init__(self, config: WanDiTConfig | None = None):
        super().__init__()
        self.config = cfg = config or WanDiTConfig()
        if cfg.dim % cfg.num_heads or cfg.head_dim % 2:
            raise ConfigError(f"Wan DiT: width {cfg.dim} does not split into {cfg.num_heads} heads of even width")
        d = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), Linear(d, d))
        self.time_embedding = nn.Sequential(Linear(cfg.freq_dim, d), nn.SiLU(), Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), Linear(d, 6 * d))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        if cfg.image_dim is not None:
            self.img_emb = MLPProj(cfg.image_dim, d, cfg.first_last)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of the matmuls and attention: the patch embedding's (never kept in float8)."""
        return self.patch_embedding.weight.dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, context: torch.Tensor, clip: torch.Tensor | None = None,
                y: torch.Tensor | None = None, clean_first_frame: bool = False) -> torch.Tensor:
        """The velocity v = eps - x0 at timestep t (the flow-matching target).

        - ``x``: (b, C, F, H, W) noisy latents (C = 16, or 48 for TI2V); H, W multiples of 2.
        - ``t``: (b,) timesteps in [0, 1000] (the original passes integers), or (b, F) one per latent frame.
        - ``context``: (b, <=512, text_dim) umT5 output, zero rows after the prompt (see :func:`pad_context`).
        - ``clip``: (b, 257, image_dim) CLIP ViT-H penultimate tokens (i2v); (b, 514, image_dim) = first then
          last frame's tokens (flf2v). Required iff the model has ``img_emb``.
        - ``y``: (b, in_dim - C, F, H, W) concatenated to x on the channel axis (i2v/flf2v: 4 mask + 16 latent).
        - ``clean_first_frame``: latent frame 0 is the clean image (TI2V): its tokens get timestep 0.

        Returns (b, out_dim, F, H, W) in float32, like the original.
        """
        cfg, dt = self.config, self.compute_dtype
        if y is not None:
            x = torch.cat([x, y.to(x.dtype)], dim=1)
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise InputError(f"Wan DiT ({cfg.model_type}) expects {cfg.in_dim} input channels (x + y) in a (b, c, F, H, W) "
                             f"tensor, got {tuple(x.shape)}" + (" (i2v/flf2v need y = mask + image latent)" if y is None
                                                               and cfg.image_dim is not None else ""))
        pt, ph, pw = cfg.patch_size
        b, _, F_, H, W = x.shape
        if F_ % pt or H % ph or W % pw:
            raise InputError(f"Wan DiT: latent frames, height and width must be multiples of {cfg.patch_size}, got "
                             f"{F_}x{H}x{W}")
        f, h, w = F_ // pt, H // ph, W // pw

        # patch embedding: a Conv3d whose stride equals its kernel is a Linear on non-overlapping patches
        patches = rearrange(x.to(dt), "b c (f p) (h q) (w r) -> b f (h w) (c p q r)", p=pt, q=ph, r=pw)
        tokens = F.linear(patches, self.patch_embedding.weight.flatten(1), self.patch_embedding.bias)
        x = tokens.float()  # (b, f, n, dim): the residual stream, float32

        e, e0 = self.time_embeddings(t, b, f, clean_first_frame)
        text, text_bias = self.embed_text(context)  # (b, m <= 512, dim), (1, m)
        image = None
        if cfg.image_dim is not None:
            if clip is None:
                raise InputError(f"Wan DiT ({cfg.model_type}) needs the CLIP image tokens (clip=...)")
            want = 2 * CLIP_TOKENS if cfg.first_last else CLIP_TOKENS
            if clip.ndim != 3 or clip.shape[1:] != (want, cfg.image_dim):
                raise InputError(f"Wan DiT ({cfg.model_type}): clip must be (b, {want}, {cfg.image_dim})"
                                 f"{' (first then last frame)' if cfg.first_last else ''}, got {tuple(clip.shape)}")
            image = self.img_emb(clip, dt)  # (b, 257|514, dim)

        cos, sin = (c.float() for c in rope_3d(f, h, w, cfg.head_dim, theta=cfg.theta, dtype=torch.float64,
                                               device=x.device))  # (L, head_dim / 2), once for all blocks
        split = None
        if self.sequence_parallel is not None:  # from here to the head, this process's slice of the L tokens
            split = self.sequence_parallel.split(f * h * w)
            x, e, e0, cos, sin = local_tokens(split, x, e, e0, cos, sin)
        for i, block in enumerate(self.blocks):
            x = block(x, e0, cos, sin, text, image, text_bias, split)
            if dt == torch.float16:  # fp16 overflows on bf16-trained weights: say where
                _check_finite(x, f"block {i}")
        out = self.head(x, e)  # (b, f, n, p q r c)
        if split is not None:  # every process's tokens again, in order
            out = split.gather(out.flatten(1, 2)).unflatten(1, (f, h * w))
        return rearrange(out.float(), "b f (h w) (p q r c) -> b c (f p) (h q) (w r)", h=h, p=pt, q=ph, r=pw)

    def embed_text(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """text_embedding of the T5 output zero-padded to 512 rows, the padding compressed exactly.

        The cross-attention attends to all 512 rows (the original masks nothing), but the rows after the prompt
        are zero, so they embed to one and the same key and value. n identical keys weigh in softmax like one
        key whose logit is raised by ln n: exp(q.k + ln n) = n exp(q.k). So only the rows up to the longest
        prompt of the batch plus one padding row are embedded, and ``bias`` (m,) adds ln(512 - n_text) to that
        row's logit (0 elsewhere; a shorter prompt's extra padding rows are explicit keys and count too).
        Returns (text (b, m, dim), bias (1, m) or None when nothing is padded)."""
        dt = self.compute_dtype
        context = pad_context(context, TEXT_LEN)  # (b, 512, text_dim)
        used = context.any(dim=-1)  # (b, 512): rows that are not padding
        n_text = int((used * torch.arange(1, TEXT_LEN + 1, device=used.device)).amax())  # longest prompt
        if n_text >= TEXT_LEN - 1:  # nothing (or a single row) to compress
            return self.text_embedding(context.to(dt)), None
        text = self.text_embedding(context[:, : n_text + 1].to(dt))  # row n_text: the padding's embedding
        bias = torch.zeros(1, n_text + 1, device=text.device, dtype=dt)  # broadcasts to (b, heads, L, m)
        bias[0, n_text] = math.log(TEXT_LEN - n_text)
        return text, bias

    def time_embeddings(self, t: torch.Tensor, b: int, f: int, clean_first_frame: bool):
        """e (b, f|1, dim) and e0 (b, f|1, 6, dim) in float32 from t (b,) or (b, f): one row per latent frame when
        the timesteps differ between frames (TI2V: frame 0 gets 0), else one row shared by every token."""
        t = torch.as_tensor(t, device=self.patch_embedding.weight.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.ndim == 1:
            t = t[:, None]  # (b, 1)
        if t.shape[0] != b or t.shape[1] not in (1, f):
            raise InputError(f"Wan DiT: t must be (b,) or (b, latent frames) = ({b},) or ({b}, {f}), got {tuple(t.shape)}")
        if clean_first_frame:
            t = t.expand(b, f).clone()
            t[:, 0] = 0  # the clean image latent: noise level 0
        sinusoid = timestep_embedding(t.flatten().double(), self.config.freq_dim).float()  # cos, sin; float64 args
        e = self.time_embedding(sinusoid.view(b, t.shape[1], -1))  # (b, f|1, dim)
        e0 = self.time_projection(e).unflatten(-1, (6, -1))  # (b, f|1, 6, dim)
        return e, e0

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype | None = None, device="cpu", keep_fp8: bool = False,
                        num_heads: int | None = None, fsdp: bool = False) -> "WanDiT":
        """Load a Wan DiT from any released layout:

        - a Wan-AI folder: ``diffusion_pytorch_model-0000N-of-0000M.safetensors`` + ``.index.json`` (or one
          ``diffusion_pytorch_model.safetensors``) + ``config.json``;
        - a single file (ComfyUI style: original keys, optionally under ``model.diffusion_model.``, stored in
          fp32 / fp16 / bf16 / float8_e4m3fn);
        - a diffusers ``WanTransformer3DModel`` (a ``transformer/`` folder, the pipeline folder above it, or one
          of its files): keys renamed by :data:`DIFFUSERS_RENAMES`.

        ``dtype`` (default float32) is the compute dtype; the float32 parts (time embedding, modulation, norms,
        head) stay float32. ``keep_fp8``: Linear weights stored in float8_e4m3fn stay float8 and are cast up per
        matmul (half the memory of bf16), otherwise they are cast at load. ``num_heads``: for files without a
        config.json whose head width is not 128 (released models: dim / 128). ``fsdp``: under torchrun, shard
        the weights over the processes (FSDP2, one unit per block), each reading the file block by block and
        keeping its rows only (:func:`i2v.nn.parallel.load_sharded`); ``device`` is then this process's device.
        """
        from ...checkpoints import StateDict, load_into, open_state_dict

        path = Path(path)
        if path.is_dir() and (path / "transformer").is_dir() and not any(path.glob("*.safetensors*")):
            path = path / "transformer"  # a diffusers pipeline folder
        sd = open_state_dict(path, names=WEIGHT_NAMES).strip_common_prefix()
        skip = {}
        if "scale_shift_table" in sd.info:  # diffusers WanTransformer3DModel
            sd = sd.rename(diffusers_to_original)
            skip = DIFFUSERS_SKIP
        heads = num_heads or _heads_from_config(path, sd.shapes)
        cfg = WanDiTConfig.from_state_dict(sd.shapes, num_heads=heads)
        with torch.device("meta"):
            model = cls(cfg)
        dtype = dtype or torch.float32
        if dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            raise ConfigError(f"Wan DiT: dtype is the compute dtype (float32, bfloat16 or float16), got {dtype}; "
                              "float8 files load with keep_fp8=True")
        float32 = float32_parameters(model)
        fp8_ok = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, Linear)} if keep_fp8 else set()

        def read(key):  # cast each tensor as it is read: one tensor in memory at a time
            t = sd[key]
            if key in float32:
                return t.float()
            if key in fp8_ok and t.dtype == torch.float8_e4m3fn:
                return t
            return t.to(dtype)

        load = load_into
        if fsdp:  # the same strict load, block by block, each process keeping its shard
            from ...nn.parallel import load_sharded as load
        load(model, StateDict(sd.source, sd.info, read, sd.metadata), source=sd.source, skip=skip,
             device=device, keep_dtype=True, hint="Is it a Wan DiT file, complete (every shard of the index present)?")
        return model.eval().requires_grad_(False)


def local_tokens(split, x, e, e0, cos, sin):
    """Sequence parallelism: this process's contiguous slice of the L = f n tokens (i2v.nn.parallel.TokenSplit).
    x (b, f, n, dim) -> (b, 1, l, dim), cos/sin (L, d/2) -> their rows (the tokens' global positions). With one
    timestep row per latent frame (TI2V) a slice cuts frames, so e and e0 become per token, as the original's
    per-token timesteps: x (b, l, 1, dim), e (b, l, dim), e0 (b, l, 6, dim) (the modulation broadcasts the same)."""
    b, f, n, _ = x.shape
    tokens = split.local(x.flatten(1, 2))  # (b, l, dim), zero-padded on the last process
    cos, sin = split.local(cos, 0), split.local(sin, 0)
    if e0.shape[1] == 1:  # one timestep for every token
        return tokens[:, None], e, e0, cos, sin
    frame = split.local(torch.arange(f * n, device=x.device) // n, 0)  # latent frame of each local token
    return tokens[:, :, None], e[:, frame], e0[:, frame], cos, sin


def pad_context(context: torch.Tensor, length: int = TEXT_LEN) -> torch.Tensor:
    """(b, L, c) or (L, c) T5 output -> (b, length, c) with zero rows after the prompt (the original pads every
    prompt to 512 rows before text_embedding; the padding is not masked later). Lets cond and uncond batch."""
    if context.ndim == 2:
        context = context[None]
    if context.shape[1] > length:
        raise InputError(f"Wan DiT: the text context has {context.shape[1]} rows, more than the model's {length}")
    return context if context.shape[1] == length else F.pad(context, (0, 0, 0, length - context.shape[1]))


def float32_parameters(model: WanDiT) -> set[str]:
    """The parameters the original computes with in float32 (its ``autocast(dtype=float32)`` regions and
    WanLayerNorm): time embedding and projection, every modulation, the head, all norms, FLF2V's emb_pos."""
    names = set()
    for name, m in model.named_modules():
        if isinstance(m, (nn.LayerNorm, RMSNorm)) or name in ("time_embedding", "time_projection", "head"):
            names |= {f"{name}.{p}" for p, _ in m.named_parameters()}
    return names | {n for n, _ in model.named_parameters() if n.endswith(("modulation", "emb_pos"))}


def _check_finite(x: torch.Tensor, stage: str) -> None:
    if not torch.isfinite(x).all():
        raise NumericalError(f"Wan DiT: NaN/inf after {stage} in float16 (the weights were trained in bf16 and "
                             "overflow fp16's range): load with dtype=torch.bfloat16 or float32")


def _heads_from_config(path: Path, shapes) -> int | None:
    """num_heads from a config.json beside the weights (original: num_heads; diffusers: num_attention_heads),
    when it describes a model of the same width; else None (the dim // 128 rule)."""
    folder = path if path.is_dir() else path.parent
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    dim = shapes.get("patch_embedding.weight", (None,))[0]
    if "num_attention_heads" in cfg and cfg.get("num_attention_heads", 0) * cfg.get("attention_head_dim", 0) == dim:
        return int(cfg["num_attention_heads"])
    if "num_heads" in cfg and cfg.get("dim") == dim:
        return int(cfg["num_heads"])
    return None


# files a folder may hold, in the order tried (the Wan-AI sharded index first)
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.safetensors")

# diffusers WanTransformer3DModel -> original WanModel key fragments, applied in order. diffusers swaps the
# names of norm2 and norm3: its affine cross-attention norm is "norm2" (ours norm3); our unmodulated FFN norm2
# has no weights, so only one direction appears in the files.
DIFFUSERS_RENAMES = (
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.image_embedder.norm1.", "img_emb.proj.0."),
    ("condition_embedder.image_embedder.ff.net.0.proj.", "img_emb.proj.1."),
    ("condition_embedder.image_embedder.ff.net.2.", "img_emb.proj.3."),
    ("condition_embedder.image_embedder.norm2.", "img_emb.proj.4."),
    ("condition_embedder.image_embedder.pos_embed", "img_emb.emb_pos"),
    (".attn1.", ".self_attn."), (".attn2.", ".cross_attn."),
    (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."), (".to_out.0.", ".o."),
    (".add_k_proj.", ".k_img."), (".add_v_proj.", ".v_img."), (".norm_added_k.", ".norm_k_img."),
    (".norm2.", ".norm3."),
    (".ffn.net.0.proj.", ".ffn.0."), (".ffn.net.2.", ".ffn.2."),
    (".scale_shift_table", ".modulation"),  # blocks.N.scale_shift_table
    ("proj_out.", "head.head."),
)
DIFFUSERS_SKIP = {"diffusers' unused q-norm of the image branch (diffusers skips it too)": lambda k: "norm_added_q" in k}


def diffusers_to_original(key: str) -> str:
    """A diffusers WanTransformer3DModel key in the original WanModel's name."""
    if key == "scale_shift_table":  # the head's (1, 2, dim) modulation
        return "head.modulation"
    for old, new in DIFFUSERS_RENAMES:
        key = key.replace(old, new)
    return key
