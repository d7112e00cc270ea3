"""The OpenCLIP ViT image tower SVD conditions on (ViT-H/14 in the released files), with its exact preprocessing.

Papers: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision" (CLIP);
Dosovitskiy et al. 2021 (ViT); Cherti et al. 2023 (OpenCLIP ViT-H/14 on LAION-2B).
Original code: mlfoundations/open_clip ``transformer.py`` (``VisionTransformer``, ``ResidualAttentionBlock``) and
Stability-AI/generative-models ``sgm/modules/encoders/modules.py`` (``FrozenOpenCLIPImageEmbedder.preprocess``).

Layouts::

    image (b, 3, H, W) in [-1, 1]  --preprocess-->  (b, 3, 224, 224) CLIP-normalised
      --conv1 (patch p, stride p)-->  (b, width, g, g)  ->  (b, g*g, width), prepend class token, + positions
      --ln_pre, L x [x + attn(ln_1 x); x + mlp(ln_2 x)]-->  ln_post(x[:, 0])  @ proj  ->  (b, embed_dim)

Attribute names equal the single-file keys below ``conditioner.embedders.0.open_clip.model.visual.``;
the transformers ``CLIPVisionModelWithProjection`` layout is renamed in :mod:`i2v.pipelines.svd`.

The head count is not visible in any tensor shape: ``heads = width // head_width``. OpenCLIP's ViT-H/14 uses
head_width 80 (16 heads of 80); :data:`HEAD_WIDTH_BY_WIDTH` holds the released towers; other widths need
``head_width`` given explicitly (e.g. from a diffusers ``config.json`` or a test case's description).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..errors import CheckpointError

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
    embed_dim: int = 1024     # output of the projection
    act: str = "gelu"         # "gelu" (OpenCLIP ViT-H) or "quick_gelu" (OpenAI CLIP)

    @classmethod
    def from_state_dict(cls, sd: dict, head_width: int | None = None, act: str = "gelu",
                        where: str = "CLIP vision tower") -> "ClipVisionConfig":
        """Config from the shapes of ``conv1.weight``, ``positional_embedding``, ``proj`` and the resblocks."""
        for k in ("conv1.weight", "positional_embedding", "proj", "class_embedding"):
            if k not in sd:
                raise CheckpointError(f"{where}: missing tensor {k!r}: not an OpenCLIP ViT image tower")
        width, _, p, _ = sd["conv1.weight"].shape
        n_pos = sd["positional_embedding"].shape[0]
        grid = math.isqrt(n_pos - 1)
        if grid * grid != n_pos - 1:
            raise CheckpointError(f"{where}: positional_embedding has {n_pos} rows, expected 1 + a square number")
        layers = len({int(m.group(1)) for k in sd for m in [re.match(r"transformer\.resblocks\.(\d+)\.", k)] if m})
        if head_width is None:
            head_width = HEAD_WIDTH_BY_WIDTH.get(int(width))
            if head_width is None:
                raise CheckpointError(
                    f"{where}: width {width} is not a released tower's, so the head count is unknown "
                    f"(known widths: {sorted(HEAD_WIDTH_BY_WIDTH)}); pass clip_head_width=...")
        if width % head_width:
            raise CheckpointError(f"{where}: width {width} is not a multiple of head_width {head_width}")
        return cls(image_size=grid * p, patch_size=int(p), width=int(width), layers=layers,
                   heads=int(width) // head_width, mlp_width=int(sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
                   embed_dim=int(sd["proj"].shape[1]), act=act)


class MultiheadAttention(nn.Module):
    """Self-attention with a packed input projection, named like ``torch.nn.MultiheadAttention``
    (``in_proj_weight`` (3w, w), ``in_proj_bias``, ``out_proj``)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (b, n, 3w)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return self.out_proj(rearrange(out, "b h n d -> b n (h d)"))


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

    def forward(self, x):
        for block in self.resblocks:
            x = block(x)
        return x


class ClipVision(nn.Module):
    """OpenCLIP ``VisionTransformer`` (class-token pooling) + projection. ``forward`` takes CLIP-normalised
    224x224 input; :meth:`embed` takes images in [-1, 1] of any size and preprocesses them first."""

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
        self.proj = nn.Parameter(torch.empty(w, cfg.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(self.conv1(x), "b w gh gw -> b (gh gw) w")  # patches as tokens
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)  # (b, 1 + g*g, w)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj  # class token -> (b, embed_dim)

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) in [-1, 1] -> (b, embed_dim), with SVD's preprocessing."""
        return self(preprocess(image, self.config.image_size))


# ----------------------------------------------------------------------------------------------- preprocessing

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


def preprocess(image: torch.Tensor, size: int = 224) -> torch.Tensor:
    """SVD's image-embedder input: squash-resize to size x size (no crop), map [-1, 1] -> [0, 1], then
    CLIP mean/std. (b, 3, H, W) -> (b, 3, size, size)."""
    x = antialiased_resize(image, (size, size))
    x = (x + 1) / 2
    # The original keeps mean/std in float32 buffers (``torch.Tensor([...])``); round them the same way.
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).to(x.device, x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).to(x.device, x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
