"""The CLIP ViT image tower, with both readouts the families use: SVD's pooled embedding, Wan's penultimate tokens.

Papers: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision" (CLIP);
Dosovitskiy et al. 2021 (ViT); Cherti et al. 2023 (OpenCLIP ViT-H/14 on LAION-2B); Chen et al. 2022 (AltCLIP /
the XLM-RoBERTa CLIP whose ViT-H/14 tower Wan uses). Original code: mlfoundations/open_clip ``transformer.py``
(``VisionTransformer``, ``ResidualAttentionBlock``); Stability-AI/generative-models ``sgm/modules/encoders/
modules.py`` (``FrozenOpenCLIPImageEmbedder``); Wan-Video/Wan2.1 ``wan/modules/clip.py`` (``VisionTransformer``,
``CLIPModel.visual``). The two ViT-H/14 towers are the same architecture (pre-norm blocks, GELU MLP 4x, class
token, learned positions); only the names in the files and what is read out differ.

Layouts::

    image (b, 3, H, W) in [-1, 1]  --preprocess-->  (b, 3, 224, 224) CLIP-normalised
      --conv1 (patch p, stride p)-->  (b, width, g, g)  ->  (b, g*g, width), prepend class token, + positions
      --ln_pre, L x [x + attn(ln_1 x); x + mlp(ln_2 x)]-->
        SVD  (:meth:`ClipVision.embed`):  ln_post(x[:, 0]) @ proj          -> (b, embed_dim)        pooled
        Wan  (:meth:`ClipVision.tokens`): x after block L-1 (no ln_post)   -> (b, 1 + g*g, width)   257 x 1280

Preprocessing differs too: SVD resizes with kornia's antialiased bicubic (:func:`svd_preprocess`), Wan with plain
bicubic, no antialias (:func:`wan_preprocess`); both then map [-1, 1] to [0, 1] and apply CLIP's mean/std.

Attribute names are OpenCLIP's (= SVD's single-file keys under ``conditioner.embedders.0.open_clip.model.visual.``).
Two rename tables bring the other layouts to them: :data:`WAN_RENAMES` (Wan's
``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``, whose ``textual.*`` XLM-RoBERTa tower and
``log_scale`` are skipped by the documented rule :data:`WAN_SKIPS`) and :data:`TRANSFORMERS_RENAMES`
(``CLIPVisionModel[WithProjection]``, SVD's diffusers ``image_encoder/``).

The head count is not visible in any tensor shape: ``heads = width // head_width``. ViT-H/14 uses head_width 80
(16 heads of 80); :data:`HEAD_WIDTH_BY_WIDTH` holds the released towers; other widths need ``head_width`` given
(a transformers config.json gives it; the CLI has ``--clip-head-width``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...checkpoints import load_model, open_state_dict
from ...errors import CheckpointError, InputError
from ...nn.attention import attention

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# width -> head width of the released OpenCLIP/OpenAI vision towers (ViT-B: 768/64, ViT-L: 1024/64,
# ViT-H: 1280/80, ViT-g: 1408/88, ViT-bigG: 1664/104).
HEAD_WIDTH_BY_WIDTH = {768: 64, 1024: 64, 1280: 80, 1408: 88, 1664: 104}


@dataclass
class ClipVisionConfig:
    image_size: int = 224     # input side after preprocessing
    patch_size: int = 14      # conv1 kernel = stride
    width: int = 1280         # transformer width
    layers: int = 32          # residual attention blocks
    heads: int = 16           # width // head_width (not inferable from shapes)
    mlp_width: int = 5120     # hidden width of the MLP (4 * width)
    embed_dim: int | None = 1024  # output of the projection (SVD's readout); None: a tower without one
    #                               (transformers CLIPVisionModel, Wan's diffusers image_encoder/: tokens only)
    act: str = "gelu"         # "gelu" (OpenCLIP ViT-H, Wan's ViT-H) or "quick_gelu" (OpenAI CLIP)

    @classmethod
    def from_state_dict(cls, shapes: dict, head_width: int | None = None, act: str = "gelu",
                        where: str = "CLIP vision tower") -> "ClipVisionConfig":
        """Config from the shapes (key -> shape, OpenCLIP names) of ``conv1.weight``, ``positional_embedding``,
        ``proj`` and the resblocks."""
        for k in ("conv1.weight", "positional_embedding", "class_embedding"):
            if k not in shapes:
                raise CheckpointError(f"{where}: missing tensor {k!r}: not a CLIP ViT image tower")
        width, _, p, _ = shapes["conv1.weight"]
        n_pos = shapes["positional_embedding"][0]
        grid = math.isqrt(n_pos - 1)
        if grid * grid != n_pos - 1:
            raise CheckpointError(f"{where}: positional_embedding has {n_pos} rows, expected 1 + a square number")
        layers = len({int(m.group(1)) for k in shapes for m in [re.match(r"transformer\.resblocks\.(\d+)\.", k)] if m})
        if head_width is None:
            head_width = HEAD_WIDTH_BY_WIDTH.get(int(width))
            if head_width is None:
                raise CheckpointError(
                    f"{where}: width {width} is not a released tower's, so the head count is unknown "
                    f"(known widths: {sorted(HEAD_WIDTH_BY_WIDTH)}); pass --clip-head-width (clip_head_width=...)")
        if width % head_width:
            raise CheckpointError(f"{where}: width {width} is not a multiple of head_width {head_width}")
        return cls(image_size=grid * p, patch_size=int(p), width=int(width), layers=layers,
                   heads=int(width) // head_width, mlp_width=int(shapes["transformer.resblocks.0.mlp.c_fc.weight"][0]),
                   embed_dim=int(shapes["proj"][1]) if "proj" in shapes else None, act=act)


class MultiheadAttention(nn.Module):
    """Self-attention with a packed input projection, named like ``torch.nn.MultiheadAttention``
    (``in_proj_weight`` (3w, w) = [W_q; W_k; W_v], ``in_proj_bias``, ``out_proj``)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)  # (b, n, w) each
        return self.out_proj(attention(q, k, v, heads=self.heads))  # softmax(q k^T / sqrt(d)) v


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, act: str):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = QuickGELU() if act == "quick_gelu" else nn.GELU()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1 x), then x + mlp(ln_2 x)."""

    def __init__(self, cfg: ClipVisionConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.width)
        self.attn = MultiheadAttention(cfg.width, cfg.heads)
        self.ln_2 = nn.LayerNorm(cfg.width)
        self.mlp = Mlp(cfg.width, cfg.mlp_width, cfg.act)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ClipVisionConfig):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(cfg) for _ in range(cfg.layers))


class ClipVision(nn.Module):
    """OpenCLIP ``VisionTransformer``. ``forward`` takes CLIP-normalised input at ``image_size``; :meth:`embed`
    (SVD) and :meth:`tokens` (Wan) take images in [-1, 1] of any size and preprocess them as their family does."""

    def __init__(self, cfg: ClipVisionConfig):
        super().__init__()
        self.config = cfg
        w, grid = cfg.width, cfg.image_size // cfg.patch_size
        self.conv1 = nn.Conv2d(3, w, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(w))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = Transformer(cfg)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.empty(w, cfg.embed_dim)) if cfg.embed_dim is not None else None

    def forward(self, x: torch.Tensor, blocks: int | None = None) -> torch.Tensor:
        """Tokens after the first ``blocks`` residual blocks (all when None): (b, 3, s, s) -> (b, 1 + g*g, width)."""
        x = rearrange(self.conv1(x), "b w gh gw -> b (gh gw) w")  # patches as tokens
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (b, 1 + g*g, w)
        x = self.ln_pre(x)
        for block in self.transformer.resblocks[:blocks]:
            x = block(x)
        return x

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP's image embedding of normalised input: ln_post(class token after all blocks) @ proj, (b, embed_dim)."""
        if self.proj is None:
            raise CheckpointError("this CLIP tower has no projection (a CLIPVisionModel without visual_projection): "
                                  "it gives tokens (Wan's readout), not SVD's pooled embedding")
        return self.ln_post(self(x)[:, 0]) @ self.proj

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """SVD's readout: (b, 3, H, W) in [-1, 1] -> (b, embed_dim), preprocessed as sgm does."""
        return self.pooled(svd_preprocess(image, self.config.image_size))

    def tokens(self, image: torch.Tensor) -> torch.Tensor:
        """Wan's readout: (b, 3, H, W) in [-1, 1] -> (b, 1 + g*g, width), the tokens after the penultimate block
        (``use_31_block=True`` in Wan's clip.py: 31 of ViT-H's 32 blocks), without ln_post."""
        return self(wan_preprocess(image, self.config.image_size), blocks=self.config.layers - 1)

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path, dtype=None, device="cpu", head_width: int | None = None) -> "ClipVision":
        """Load any of the three layouts: Wan's ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``
        (visual tower; the text tower skipped), a transformers ``CLIPVisionModel[WithProjection]`` folder or
        file (e.g. SVD's ``image_encoder/``), or an OpenCLIP visual state dict. ``dtype`` None keeps float32."""
        path = Path(path)
        act, skip = "gelu", None
        if path.is_dir() and (path / "config.json").is_file():
            head_width, act = _transformers_config(path, head_width)
            sd = open_state_dict(path, ("model.safetensors", "model.fp16.safetensors", "pytorch_model.bin"))
        else:
            sd = open_state_dict(path)
        source = sd.source
        if "visual.cls_embedding" in sd:
            sd, skip = wan_to_open_clip(sd), WAN_SKIPS
        elif "embeddings.patch_embedding.weight" in sd and "pre_layrnorm.weight" in sd:
            # transformers >= 5 writes CLIPVisionModel without the "vision_model." prefix
            sd = transformers_to_open_clip(sd.rename(lambda k: f"vision_model.{k}"), source)
        elif any(k.startswith("vision_model.") for k in sd):
            sd = transformers_to_open_clip(sd, source)
        cfg = ClipVisionConfig.from_state_dict(_shapes(sd), head_width=head_width, act=act, where=source)
        return load_model(cls, cfg, sd, source=source, skip=skip, dtype=dtype or torch.float32, device=device)


def _shapes(sd) -> dict:
    return sd.shapes if hasattr(sd, "shapes") else {k: tuple(v.shape) for k, v in sd.items()}


# ----------------------------------------------------------------------------------------------- rename tables

# Wan's clip.py VisionTransformer -> OpenCLIP names (regex, replacement); embeddings lose their leading 1-axes.
WAN_RENAMES = [
    (r"^visual\.patch_embedding\.weight$", "conv1.weight"),
    (r"^visual\.cls_embedding$", "class_embedding"),             # (1, 1, w) -> (w,)
    (r"^visual\.pos_embedding$", "positional_embedding"),        # (1, 1 + g*g, w) -> (1 + g*g, w)
    (r"^visual\.pre_norm\.", "ln_pre."),
    (r"^visual\.post_norm\.", "ln_post."),
    (r"^visual\.head$", "proj"),
    (r"^visual\.transformer\.(\d+)\.norm1\.", r"transformer.resblocks.\1.ln_1."),
    (r"^visual\.transformer\.(\d+)\.norm2\.", r"transformer.resblocks.\1.ln_2."),
    (r"^visual\.transformer\.(\d+)\.attn\.to_qkv\.weight$", r"transformer.resblocks.\1.attn.in_proj_weight"),
    (r"^visual\.transformer\.(\d+)\.attn\.to_qkv\.bias$", r"transformer.resblocks.\1.attn.in_proj_bias"),
    (r"^visual\.transformer\.(\d+)\.attn\.proj\.", r"transformer.resblocks.\1.attn.out_proj."),
    (r"^visual\.transformer\.(\d+)\.mlp\.0\.", r"transformer.resblocks.\1.mlp.c_fc."),
    (r"^visual\.transformer\.(\d+)\.mlp\.2\.", r"transformer.resblocks.\1.mlp.c_proj."),
]
# What Wan's CLIP file holds that the image tower does not use: image-to-video reads CLIPModel.visual only.
WAN_SKIPS = {
    "XLM-RoBERTa text tower of the CLIP model (Wan's I2V/FLF2V encode images only)": "textual.",
    "CLIP's contrastive temperature (used only to train the two towers together)": "log_scale",
}


def _renamed(table, key: str) -> str | None:
    for pat, rep in table:
        if re.match(pat, key):
            return re.sub(pat, rep, key)
    return None


def wan_to_open_clip(sd) -> dict:
    """Wan's XLM-R CLIP state dict -> OpenCLIP names: the visual tensors renamed (embeddings reshaped, views of the
    file's tensors), every other key kept as it is for the skip rule to account for."""
    out = {}
    for k in sd:
        new = _renamed(WAN_RENAMES, k)
        if new is None:
            out[k] = sd[k]  # textual.*, log_scale: named by WAN_SKIPS (anything else is an unexpected key)
            continue
        t = sd[k]
        out[new] = t.reshape(t.shape[-1]) if new == "class_embedding" else t[0] if new == "positional_embedding" else t
    return out


# transformers CLIPVisionModelWithProjection -> OpenCLIP names; q/k/v projections are packed into in_proj after.
TRANSFORMERS_RENAMES = [
    (r"^vision_model\.embeddings\.class_embedding$", "class_embedding"),
    (r"^vision_model\.embeddings\.patch_embedding\.weight$", "conv1.weight"),
    (r"^vision_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
    (r"^vision_model\.pre_layrnorm\.", "ln_pre."),
    (r"^vision_model\.post_layernorm\.", "ln_post."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"transformer.resblocks.\1.attn.out_proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.", r"transformer.resblocks.\1.attn.\2_proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"transformer.resblocks.\1.ln_1."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"transformer.resblocks.\1.ln_2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.", r"transformer.resblocks.\1.mlp.c_fc."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.", r"transformer.resblocks.\1.mlp.c_proj."),
    (r"^visual_projection\.weight$", "proj"),
]


def transformers_to_open_clip(sd, source: str) -> dict:
    """A CLIPVisionModelWithProjection state dict -> OpenCLIP names: q/k/v packed into ``in_proj_weight`` /
    ``in_proj_bias``, the projection transposed (Linear (out, in) -> matrix (in, out))."""
    out, unknown = {}, []
    for k in sd:
        if k == "vision_model.embeddings.position_ids":
            continue  # a constant arange buffer older files carry
        new = _renamed(TRANSFORMERS_RENAMES, k)
        if new is None:
            unknown.append(k)
        else:
            out[new] = sd[k]
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} tensors are not part of a CLIPVisionModelWithProjection, "
                              f"e.g. {unknown[0]}")
    if "proj" in out:
        out["proj"] = out["proj"].t().contiguous()
    for layer in sorted({m.group(1) for k in out for m in [re.match(r"transformer\.resblocks\.(\d+)\.attn\.q_proj", k)] if m}):
        p = f"transformer.resblocks.{layer}.attn."
        for kind, new in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
            try:
                out[p + new] = torch.cat([out.pop(f"{p}{x}_proj.{kind}") for x in "qkv"])
            except KeyError:
                raise CheckpointError(f"{source}: layer {layer} lacks one of its q/k/v projection {kind}s") from None
    return out


def _transformers_config(folder: Path, head_width: int | None) -> tuple[int | None, str]:
    """(head width, activation) from a transformers CLIPVisionConfig config.json."""
    p = folder / "config.json"
    try:
        cfg = json.loads(p.read_text())
    except ValueError as e:
        raise CheckpointError(f"{p}: not valid JSON ({e})") from None
    cfg = cfg.get("vision_config", cfg)  # a whole CLIPConfig nests it
    heads, width = cfg.get("num_attention_heads"), cfg.get("hidden_size")
    if not heads or not width:
        raise CheckpointError(f"{p}: expected hidden_size and num_attention_heads (a CLIP vision config)")
    act = cfg.get("hidden_act", "gelu")
    if act not in ("gelu", "quick_gelu"):
        raise CheckpointError(f"{p}: hidden_act {act!r} is not supported (gelu or quick_gelu)")
    eps = cfg.get("layer_norm_eps", 1e-5)
    if abs(eps - 1e-5) > 1e-12:
        raise CheckpointError(f"{p}: layer_norm_eps {eps} differs from OpenCLIP's 1e-5")
    return head_width or width // heads, act


# ----------------------------------------------------------------------------------------------- preprocessing

def _normalise(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] -> CLIP mean/std. The originals keep mean/std as float32 tensors; round them the same way."""
    x = (x + 1) / 2
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).to(x.device, x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).to(x.device, x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def _check_image(image: torch.Tensor) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise InputError(f"CLIP input: expected images (b, 3, H, W) in [-1, 1], got shape {tuple(image.shape)}")


def gaussian_kernel1d(size: int, sigma: float, dtype, device) -> torch.Tensor:
    """Normalised Gaussian taps at x = -(size//2) .. size//2 (kornia ``get_gaussian_kernel1d``)."""
    x = torch.arange(size, dtype=dtype, device=device) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def antialiased_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """kornia ``resize(x, size, 'bicubic', align_corners=True, antialias=True)``, written out:

    sigma_i = max((in_i / out_i - 1) / 2, 0.001);  kernel_i = int(max(4 sigma_i, 3)), made odd;
    separable Gaussian blur with reflect padding, then bicubic interpolation with align_corners=True.
    """
    h, w = x.shape[-2:]
    sig = [max((h / size[0] - 1) / 2, 0.001), max((w / size[1] - 1) / 2, 0.001)]
    ks = [int(max(4 * s, 3)) for s in sig]
    ks = [k + 1 if k % 2 == 0 else k for k in ks]
    kh = gaussian_kernel1d(ks[0], sig[0], x.dtype, x.device)
    kw = gaussian_kernel1d(ks[1], sig[1], x.dtype, x.device)
    c = x.shape[1]
    # (b, c, H, W): reflect-pad by k//2 on each side, then depthwise 1-D convolutions along H and W.
    x = F.pad(x, (ks[1] // 2, ks[1] // 2, ks[0] // 2, ks[0] // 2), mode="reflect")
    x = F.conv2d(x, kh.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    x = F.conv2d(x, kw.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=True)


def svd_preprocess(image: torch.Tensor, size: int = 224) -> torch.Tensor:
    """SVD's image-embedder input (sgm FrozenOpenCLIPImageEmbedder): squash-resize to size x size with kornia's
    antialiased bicubic (no crop), then CLIP-normalise. (b, 3, H, W) in [-1, 1] -> (b, 3, size, size)."""
    _check_image(image)
    return _normalise(antialiased_resize(image, (size, size)))


def wan_preprocess(image: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Wan's (clip.py CLIPModel.visual): bicubic resize to size x size without antialias (align_corners=False,
    squashing the aspect ratio), ``* 0.5 + 0.5``, CLIP mean/std. (b, 3, H, W) in [-1, 1] -> (b, 3, size, size)."""
    _check_image(image)
    return _normalise(F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False))


preprocess = svd_preprocess  # the name SVD's code and tutorial use
