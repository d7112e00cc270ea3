"""Depth Anything V2: monocular relative depth from a DINOv2 ViT encoder and a DPT head.

Papers: Yang, Kang, Huang, Zhao, Xu, Feng, Zhao, "Depth Anything V2", NeurIPS 2024 (arXiv:2406.09414);
Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", 2023 (the encoder);
Ranftl, Bochkovskiy, Koltun, "Vision Transformers for Dense Prediction", ICCV 2021 (DPT, the head).
Original code: github.com/DepthAnything/Depth-Anything-V2, ``depth_anything_v2/dpt.py`` (``DepthAnythingV2``,
``DPTHead``, ``infer_image``), ``depth_anything_v2/dinov2.py`` and ``dinov2_layers/`` (the ViT),
``util/blocks.py`` (fusion blocks) and ``util/transform.py`` (``Resize``). Released weights:
``depth_anything_v2_vits.pth`` (24.8 M parameters), ``_vitb.pth`` (97.5 M), ``_vitl.pth`` (335.3 M): plain float32
state dicts whose keys are this file's attribute names (``pretrained.*`` = the ViT, ``depth_head.*`` = DPT).

What it computes::

    image (h, w, 3) uint8 RGB
      --preprocess: /255, resize keeping the aspect so both sides >= input_size and are multiples of 14 (bicubic),
        ImageNet mean/std-->                                     x (1, 3, H, W),  H = 14 gh, W = 14 gw
      --patch_embed (14x14 conv, stride 14), prepend cls token, + pos_embed (bicubically resized 37x37 -> gh x gw)-->
                                                                 tokens (1, 1 + gh gw, C)
      --blocks: x = x + ls1 * attn(norm1 x);  x = x + ls2 * mlp(norm2 x)  (pre-norm ViT, LayerScale)-->
        the outputs of 4 blocks (Config.layers), each final-LayerNorm'd, cls token dropped
      --DPT: reassemble each to a map (1, C, gh, gw), 1x1 project, resample to 4x / 2x / 1x / 0.5x;
        fuse coarse to fine with residual conv units, x2 bilinear upsampling per stage-->  (1, F, 8 gh, 8 gw)
      --output convs, bilinear to (H, W), ReLU-->                 relative inverse depth (1, H, W)
      --bilinear (align_corners=True) back to (h, w)-->           (h, w) float32: larger = nearer

The output is *affine-invariant inverse depth* (disparity up to an unknown scale and shift: d ~ a / z + b), the
quantity the model was trained on; it is not metric. :func:`i2v.motion.depth.to_camera_depth` turns it into
the depth :mod:`i2v.motion.camera` uses, with a stated assumption about the unknown shift.

Facts not visible in any tensor shape (checked against the original code):
- heads: DINOv2 uses a head width of 64 in every size (vits 384/6, vitb 768/12, vitl 1024/16, vitg 1536/24), so
  ``heads = width // 64`` (:data:`HEAD_WIDTH`); another width needs ``heads=`` given.
- the 4 blocks that feed the head depend on the encoder, not a formula: vits/vitb [2, 5, 8, 11], vitl
  [4, 11, 17, 23], vitg [9, 19, 29, 39]; :func:`feature_layers` keys that table by block count (12 / 24 / 40).
- LayerNorm eps 1e-6; exact (erf) GELU; the positional embedding is interpolated bicubically with
  ``scale_factor = ((gh + 0.1) / 37, (gw + 0.1) / 37)`` (not ``size=``), no antialias, in float32, and not at all
  when the grid is the square 37x37 it was trained at. transformers' Dinov2 uses ``size=`` instead, which gives
  other numbers on every non-518x518 input.
- vitg uses a SwiGLU MLP (``mlp.w12``, ``mlp.w3``) instead of fc1/GELU/fc2; the metric-depth fine-tunes
  (``depth_anything_v2_metric_*.pth``) have the same keys as the relative models but end in a sigmoid times
  ``max_depth`` (20 m Hypersim, 80 m Virtual KITTI): their keys cannot tell them apart, so pass ``max_depth=``.

Entry points: :func:`estimate_depth` (i2v's RGB uint8 images), :meth:`DepthAnythingV2.infer_image` (BGR as
``cv2.imread`` gives it, like the original), :meth:`DepthAnythingV2.forward` (a preprocessed batch).

Two departures from the original's order of operations, both exact in arithmetic and marked where they happen:
each fusion block's 1x1 ``out_conv`` runs before its bilinear upsampling (they commute), and the head keeps the
token maps channels-last (a free view) and drops each pyramid level once fused. They make the head ~1.5x faster
and the peak memory ~0.7x of transformers' on CPU (benchmarks/depth.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...checkpoints import load_model, open_state_dict
from ...errors import CheckpointError, ConfigError, InputError
from ...nn.attention import attention

HEAD_WIDTH = 64  # DINOv2's attention head width in every released size (heads = width / 64)
ENCODER_WIDTHS = {384: "vits", 768: "vitb", 1024: "vitl", 1536: "vitg"}
# block count -> the blocks whose outputs feed the DPT head (the original's table, keyed by encoder name there)
INTERMEDIATE_LAYERS = {12: (2, 5, 8, 11), 24: (4, 11, 17, 23), 40: (9, 19, 29, 39)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64, "fp64": torch.float64}

REQUIRED = ("pretrained.patch_embed.proj.weight", "pretrained.cls_token", "pretrained.pos_embed",
            "pretrained.blocks.0.attn.qkv.weight", "depth_head.projects.0.weight",
            "depth_head.scratch.layer1_rn.weight")


def feature_layers(blocks: int) -> tuple[int, ...]:
    """The 4 blocks (0-based) whose outputs feed the DPT head. The released depths use the original's table
    (:data:`INTERMEDIATE_LAYERS`: 12 blocks [2, 5, 8, 11], 24 [4, 11, 17, 23], 40 [9, 19, 29, 39]); any other depth
    takes the last block of each quarter, k * blocks / 4 - 1 (the rule behind the 12- and 40-block rows; vitl's
    first layer, 4 rather than 5, is the one exception and stays in the table)."""
    if blocks in INTERMEDIATE_LAYERS:
        return INTERMEDIATE_LAYERS[blocks]
    if blocks < 4:
        raise CheckpointError(f"the ViT has {blocks} blocks; the DPT head needs the outputs of 4 different blocks")
    return tuple(k * blocks // 4 - 1 for k in range(1, 5))


@dataclass(frozen=True)
class Config:
    width: int = 384  # ViT embedding width C: vits 384, vitb 768, vitl 1024, vitg 1536
    blocks: int = 12  # transformer blocks: 12 / 12 / 24 / 40
    heads: int = 6  # width // HEAD_WIDTH; not visible in the shapes
    mlp_hidden: int = 1536  # hidden width of each block's MLP (4 C; vitg's SwiGLU: 4096)
    ffn: str = "mlp"  # "mlp" (fc1, exact GELU, fc2) or "swiglu" (vitg: w12 -> silu(a) * b -> w3)
    layerscale: bool = True  # ls1/ls2.gamma present: x + gamma * f(x) (DINOv2 trains with init 1.0 here)
    patch_size: int = 14  # the patch embedding's kernel = stride
    pos_grid: int = 37  # pos_embed holds 1 + 37 * 37 rows: trained at 518 x 518 = 37 x 37 patches
    layers: tuple[int, ...] = (2, 5, 8, 11)  # blocks feeding the head (feature_layers)
    features: int = 64  # DPT fusion width F: 64 / 128 / 256 (vitg 384)
    out_channels: tuple[int, ...] = (48, 96, 192, 384)  # reassemble widths of the 4 levels
    head_hidden: int = 32  # output_conv2's hidden width (fixed at 32 in the original)
    max_depth: float | None = None  # None: relative model (ReLU out); a number: metric head, sigmoid * max_depth
    eps: float = 1e-6  # every LayerNorm of DINOv2
    interpolate_offset: float = 0.1  # added to the patch grid when resizing pos_embed (DINOv2's work-around)

    @property
    def encoder(self) -> str:
        return ENCODER_WIDTHS.get(self.width, f"width {self.width}")

    @classmethod
    def from_state_dict(cls, shapes: dict[str, tuple], *, heads: int | None = None,
                        layers: tuple[int, ...] | None = None, max_depth: float | None = None) -> "Config":
        """The config of a Depth Anything V2 state dict from its tensor shapes (key -> shape). ``heads`` (default
        width // 64), ``layers`` (default :func:`feature_layers`) and ``max_depth`` (metric fine-tunes) are the
        facts the shapes do not hold."""
        missing = [k for k in REQUIRED if k not in shapes]
        if missing:
            raise CheckpointError(f"not a Depth Anything V2 state dict: no {', '.join(missing[:3])} "
                                  f"(found e.g. {', '.join(sorted(shapes)[:3])})")
        for extra, what in (("depth_head.readout_projects.", "use_clstoken=True"),
                            ("depth_head.scratch.refinenet1.resConfUnit1.bn1.", "use_bn=True")):
            if any(k.startswith(extra) for k in shapes):
                raise CheckpointError(f"this DPT head was built with {what} ({extra}* keys), which no released Depth "
                                      "Anything V2 file uses; i2v runs the released layout")
        width = int(shapes["pretrained.cls_token"][-1])
        if heads is None:
            if width % HEAD_WIDTH:
                raise CheckpointError(
                    f"a DINOv2 ViT of width {width} is not a released size (vits 384, vitb 768, vitl 1024, vitg "
                    f"1536) and not a multiple of DINOv2's head width {HEAD_WIDTH}, so its head count is unknown: "
                    "pass heads=N (it is not stored in the file)")
            heads = width // HEAD_WIDTH
        elif heads < 1 or width % heads:
            raise ConfigError(f"heads={heads} does not divide the ViT width {width}")
        blocks = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("pretrained.blocks."))
        layers = tuple(int(i) for i in (layers if layers is not None else feature_layers(blocks)))
        if len(layers) != 4 or not all(0 <= i < blocks for i in layers):
            raise ConfigError(f"layers={layers}: the DPT head takes 4 block indices in 0..{blocks - 1}")
        n_pos = int(shapes["pretrained.pos_embed"][1]) - 1
        grid = math.isqrt(n_pos)
        if grid * grid != n_pos:
            raise CheckpointError(f"pos_embed has {n_pos} patch rows, not a square grid")
        patch = shapes["pretrained.patch_embed.proj.weight"]
        swiglu = "pretrained.blocks.0.mlp.w12.weight" in shapes
        mlp_hidden = (shapes["pretrained.blocks.0.mlp.w3.weight"][1] if swiglu
                      else shapes["pretrained.blocks.0.mlp.fc1.weight"][0])
        out_channels = tuple(int(shapes[f"depth_head.projects.{i}.weight"][0]) for i in range(4))
        return cls(width=width, blocks=blocks, heads=heads, mlp_hidden=int(mlp_hidden),
                   ffn="swiglu" if swiglu else "mlp",
                   layerscale="pretrained.blocks.0.ls1.gamma" in shapes, patch_size=int(patch[-1]), pos_grid=grid,
                   layers=layers, features=int(shapes["depth_head.scratch.layer1_rn.weight"][0]),
                   out_channels=out_channels, head_hidden=int(shapes["depth_head.scratch.output_conv2.0.weight"][0]),
                   max_depth=max_depth)


# ---------------------------------------------------------------------------------------------------------------
# The DINOv2 encoder (attribute names = the checkpoint's keys below ``pretrained.``)
# ---------------------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(x), "b c h w -> b (h w) c")  # (b, 3, H, W) -> (b, gh gw, C)


class Attention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection (``qkv``: C -> 3C, laid out (3, heads, d))."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, (b, h, n, d)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Mlp(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_hidden)
        self.fc2 = nn.Linear(cfg.mlp_hidden, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class SwiGLUFFN(nn.Module):
    """vitg's MLP (Shazeer 2020): ``w3(silu(a) * b)`` with ``[a, b] = w12 x``."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.w12 = nn.Linear(cfg.width, 2 * cfg.mlp_hidden)
        self.w3 = nn.Linear(cfg.mlp_hidden, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch, ``gamma * f(x)`` (Touvron et al. 2021, CaiT)."""

    def __init__(self, width: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x = x + ls1(attn(norm1 x)); x = x + ls2(mlp(norm2 x))."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.attn = Attention(cfg)
        self.ls1 = LayerScale(cfg.width) if cfg.layerscale else nn.Identity()
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = SwiGLUFFN(cfg) if cfg.ffn == "swiglu" else Mlp(cfg)
        self.ls2 = LayerScale(cfg.width) if cfg.layerscale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2's ViT, the parts Depth Anything uses: tokens in, the LayerNorm'd outputs of chosen blocks out."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_grid ** 2, cfg.width))
        self.mask_token = nn.Parameter(torch.zeros(1, cfg.width))  # DINOv2's masked-token pretraining; unused here
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.blocks))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.eps)

    def interpolate_pos_encoding(self, gh: int, gw: int, H: int, W: int, dtype: torch.dtype) -> torch.Tensor:
        """pos_embed (1, 1 + g*g, C) for a gh x gw patch grid, exactly as DINOv2: bicubic (a = -0.75, no antialias)
        with scale factors s = ((gh + 0.1) / g, (gw + 0.1) / g), which sample the g x g grid at
        src = (dst + 0.5) / s - 0.5; the 0.1 only makes floor(g * s) = gh robust to float rounding, but as the
        scale it also shifts every sample a little, so it is part of the numbers. Skipped (the table as stored)
        when the grid is the trained one and the image square (the original's test: same count and H == W)."""
        g, n = self.cfg.pos_grid, self.pos_embed.shape[1] - 1
        if gh * gw == n and H == W:
            return self.pos_embed.to(dtype)
        pos = self.pos_embed.float()
        patch_pos = rearrange(pos[:, 1:], "1 (gh gw) c -> 1 c gh gw", gh=g)  # (1, C, g, g)
        off = self.cfg.interpolate_offset
        patch_pos = F.interpolate(patch_pos, scale_factor=((gh + off) / g, (gw + off) / g), mode="bicubic",
                                  antialias=False)  # (1, C, gh, gw)
        assert patch_pos.shape[-2:] == (gh, gw), (patch_pos.shape, gh, gw)
        patch_pos = rearrange(patch_pos, "1 c h w -> 1 (h w) c")
        return torch.cat([pos[:, :1], patch_pos], dim=1).to(dtype)  # (1, 1 + gh gw, C)

    def intermediate_layers(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """x (b, 3, H, W) -> for each block index in ``layers``: (patch tokens (b, gh gw, C), class token (b, C)),
        both after the final LayerNorm (``get_intermediate_layers(x, layers, return_class_token=True)``)."""
        H, W = x.shape[-2:]
        p = self.cfg.patch_size
        tokens = self.patch_embed(x)  # (b, gh gw, C)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(H // p, W // p, H, W, tokens.dtype)  # (b, 1 + gh gw, C)
        out = []
        for i, block in enumerate(self.blocks[:max(layers) + 1]):  # later blocks feed nothing
            tokens = block(tokens)
            if i in layers:
                normed = self.norm(tokens)
                out.append((normed[:, 1:], normed[:, 0]))
        return out


# ---------------------------------------------------------------------------------------------------------------
# The DPT head (attribute names = the checkpoint's keys below ``depth_head.``)
# ---------------------------------------------------------------------------------------------------------------


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: x + conv2(relu(conv1(relu(x)))), 3x3 convs."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)), inplace=True)) + x


class FeatureFusionBlock(nn.Module):
    """One refinenet: ``out_conv(up(rcu2(x + rcu1(skip))))``, ``up`` = bilinear (align_corners=True) to the next
    finer level's size, or x2 for the finest. The coarsest block has no skip input: its ``resConfUnit1`` is in
    the checkpoint but never runs (as in the original)."""

    def __init__(self, features: int):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        # The original upsamples, then applies the 1x1 out_conv. Both are linear and the bilinear weights of each
        # output pixel sum to 1, so up(W x + b) = W up(x) + b: the conv runs here at the lower resolution, on a
        # quarter of the pixels, with the same result (up to float rounding).
        x = self.out_conv(x)
        up = {"scale_factor": 2} if size is None else {"size": tuple(size)}
        return F.interpolate(x, **up, mode="bilinear", align_corners=True)


class Scratch(nn.Module):
    """The fusion part of DPT (the original's ``scratch`` module): per-level 3x3 convs to F channels, four
    refinenets coarse to fine, and the output convs."""

    def __init__(self, cfg: Config):
        super().__init__()
        f = cfg.features
        for i, c in enumerate(cfg.out_channels, 1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(c, f, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self, f"refinenet{i}", FeatureFusionBlock(f))
        self.output_conv1 = nn.Conv2d(f, f // 2, 3, padding=1)
        last = nn.ReLU(inplace=True) if cfg.max_depth is None else nn.Sigmoid()  # relative: ReLU; metric: sigmoid
        self.output_conv2 = nn.Sequential(nn.Conv2d(f // 2, cfg.head_hidden, 3, padding=1), nn.ReLU(inplace=True),
                                          nn.Conv2d(cfg.head_hidden, 1, 1), last)


class DPTHead(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        c = cfg.out_channels
        self.projects = nn.ModuleList(nn.Conv2d(cfg.width, ci, 1) for ci in c)
        # reassemble to 4x, 2x, 1x and 1/2 of the patch grid (DPT's four "stages" from one-scale ViT tokens)
        self.resize_layers = nn.ModuleList([nn.ConvTranspose2d(c[0], c[0], 4, stride=4),
                                            nn.ConvTranspose2d(c[1], c[1], 2, stride=2),
                                            nn.Identity(),
                                            nn.Conv2d(c[3], c[3], 3, stride=2, padding=1)])
        self.scratch = Scratch(cfg)

    def forward(self, features: list[tuple[torch.Tensor, torch.Tensor]], gh: int, gw: int) -> torch.Tensor:
        """4 x (tokens (b, gh gw, C), cls) -> (b, 1, 14 gh, 14 gw) after the output convs."""
        s = self.scratch
        # Reassemble: tokens -> a map (a view: (b, gh gw, C) tokens already are a channels-last (b, C, gh, gw)
        # map in memory, the layout in which CPU convolutions run fastest), project, resample, then to F channels.
        # The class token is not used (the released heads have use_clstoken=False).
        l1, l2, l3, l4 = (getattr(s, f"layer{i + 1}_rn")(self.resize_layers[i](self.projects[i](
            rearrange(tokens, "b (h w) c -> b c h w", h=gh, w=gw))))  # (b, F, 4gh | 2gh | gh | gh/2, ...)
            for i, (tokens, _cls) in enumerate(features))
        # Fuse coarse to fine; each level is dropped once used (the full-resolution end dominates peak memory).
        path = s.refinenet4(l4, size=l3.shape[2:])
        del l4
        path = s.refinenet3(path, l3, size=l2.shape[2:])
        del l3
        path = s.refinenet2(path, l2, size=l1.shape[2:])
        del l2
        path = s.refinenet1(path, l1)  # (b, F, 8 gh, 8 gw)
        del l1
        # channels-last before the upsampling (the copy is cheap at 8 gh x 8 gw): the full-resolution map comes out
        # channels-last, the layout in which the CPU's convolutions at H x W run about 1.5x faster
        out = s.output_conv1(path).contiguous(memory_format=torch.channels_last)  # (b, F/2, 8 gh, 8 gw)
        del path
        p = self.cfg.patch_size
        out = F.interpolate(out, (gh * p, gw * p), mode="bilinear", align_corners=True)  # (b, F/2, H, W)
        return s.output_conv2(out).contiguous()  # (b, 1, H, W)


class DepthAnythingV2(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.pretrained = DinoVisionTransformer(cfg)
        self.depth_head = DPTHead(cfg)

    def features(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The encoder outputs the head sees: per layer of ``cfg.layers``, (tokens (b, gh gw, C), cls (b, C))."""
        _check_batch(x, self.cfg.patch_size)
        return self.pretrained.intermediate_layers(x, self.cfg.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (b, 3, H, W) ImageNet-normalised RGB, H and W multiples of 14 -> (b, H, W): relative inverse depth
        (ReLU'd, >= 0, larger = nearer), or metres for a metric model (``cfg.max_depth``)."""
        p = self.cfg.patch_size
        depth = self.depth_head(self.features(x), x.shape[-2] // p, x.shape[-1] // p)  # (b, 1, H, W)
        depth = F.relu(depth) if self.cfg.max_depth is None else depth * self.cfg.max_depth
        return depth.squeeze(1)

    @torch.inference_mode()
    def infer_image(self, raw_image_bgr: np.ndarray, input_size: int = 518) -> np.ndarray:
        """The original's ``infer_image``: an image as ``cv2.imread`` returns it (h, w, 3) uint8 **BGR** ->
        (h, w) float32 relative inverse depth. i2v's own images are RGB: use :func:`estimate_depth`."""
        return estimate_depth(self, _as_rgb(raw_image_bgr, bgr=True), input_size)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype=None, device="cpu", *, heads: int | None = None,
                        layers: tuple[int, ...] | None = None, max_depth: float | None = None) -> "DepthAnythingV2":
        """Load a released ``depth_anything_v2_{vits,vitb,vitl}.pth`` (or any file of that layout: the config comes
        from its shapes). Strict: every tensor used. ``dtype`` a torch dtype or name ("bf16"; default float32,
        half-stored files upcast); ``heads`` / ``layers`` / ``max_depth``: see :meth:`Config.from_state_dict`."""
        sd = open_state_dict(path).strip_common_prefix(("module.",))
        if not all(k in sd.shapes for k in REQUIRED):
            raise CheckpointError(f"{path}: not a Depth Anything V2 file ({_what_it_is(sd)}); expected the keys of "
                                  "depth_anything_v2_vits/vitb/vitl.pth (pretrained.*, depth_head.*)")
        try:
            cfg = Config.from_state_dict(sd.shapes, heads=heads, layers=layers, max_depth=max_depth)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
            dtype = DTYPES[dtype]
        model = load_model(cls, cfg, sd, dtype=dtype or torch.float32, device=device,
                  hint="Depth Anything V2 files hold pretrained.* (DINOv2) and depth_head.* (DPT) only")
        return model.eval().requires_grad_(False)


def _what_it_is(sd) -> str:
    """A few words on what a non-DAv2 file holds, from the registry's detectors (torch-free)."""
    from ...checkpoints.files import TensorInfo
    from ...registry import identify

    match = identify({k: TensorInfo(v.dtype, tuple(v.shape)) for k, v in sd.info.items()}, sd.metadata)
    if match is not None:
        return f"it is {match.description}"
    return f"{len(sd.info)} tensors such as {', '.join(sorted(sd.info)[:3])}"


def _check_batch(x: torch.Tensor, patch: int) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"expected a preprocessed batch (b, 3, H, W), got shape {tuple(x.shape)}; for an image "
                         "use estimate_depth(model, image_rgb_uint8)")
    H, W = x.shape[-2:]
    if H < patch or W < patch or H % patch or W % patch:
        raise InputError(f"the input is {W}x{H}; both sides must be positive multiples of the {patch}-pixel patch "
                         f"(preprocess() resizes to that)")


# ---------------------------------------------------------------------------------------------------------------
# Images in and depth out
# ---------------------------------------------------------------------------------------------------------------


def _as_rgb(image: np.ndarray, bgr: bool = False) -> np.ndarray:
    """(h, w, 3) uint8 RGB from an image array. Converted, the way :func:`i2v.video.load_image` reads files:
    grey (h, w) or (h, w, 1) is replicated to 3 channels; a 4th channel is alpha, composited over white.
    Refused: other channel counts and non-uint8 pixels (the model's /255 scaling assumes 8-bit)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InputError(f"expected 8-bit pixels (uint8, as image files hold them), got {arr.dtype}; convert with "
                         "(x * 255).round().clip(0, 255).astype(np.uint8) for floats in [0, 1]")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"expected an image (h, w, 3) (or grey (h, w), or with alpha (h, w, 4)), "
                         f"got shape {arr.shape}")
    if bgr:
        arr = arr[..., [2, 1, 0, 3][:arr.shape[2]]]
    if arr.shape[2] == 4:
        from PIL import Image

        rgba = Image.fromarray(np.ascontiguousarray(arr), "RGBA")
        arr = np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB"))
    return np.ascontiguousarray(arr)


def resize_size(h: int, w: int, input_size: int = 518, multiple: int = 14) -> tuple[int, int]:
    """The network input size for an h x w image: the original's ``Resize(keep_aspect_ratio=True,
    ensure_multiple_of=14, resize_method='lower_bound')``. One scale s = max(input_size / h, input_size / w) for
    both sides (so both end up >= input_size), then each side s * n rounded to the nearest multiple of 14 (numpy's
    round half to even), rounded up instead if that falls below input_size."""
    s = max(input_size / h, input_size / w)

    def side(x: float) -> int:
        y = int(np.round(x / multiple) * multiple)
        return int(np.ceil(x / multiple) * multiple) if y < input_size else y

    return side(s * h), side(s * w)


def preprocess(image_rgb: np.ndarray, input_size: int = 518) -> torch.Tensor:
    """(h, w, 3) uint8 RGB -> (1, 3, H, W) float32 network input, as the original's ``image2tensor``: /255 (in
    float64), bicubic resize to :func:`resize_size` (``cv2.INTER_CUBIC``), (x - mean) / std with ImageNet's
    statistics, then float32."""
    import cv2

    if not isinstance(input_size, int) or input_size < 14:
        raise ConfigError(f"input_size must be an integer >= 14 (one patch); got {input_size!r} (the original: 518)")
    rgb = _as_rgb(image_rgb)
    h, w = rgb.shape[:2]
    if h < 14 or w < 14:
        raise InputError(f"the image is {w}x{h} pixels, smaller than one 14x14 patch of the ViT; give an image at "
                         "least 14 pixels on each side")
    H, W = resize_size(h, w, input_size)
    x = cv2.resize(rgb / 255.0, (W, H), interpolation=cv2.INTER_CUBIC)  # float64 (H, W, 3), as the original
    x = (x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)).astype(np.float32))[None]  # (1, 3, H, W)


@torch.inference_mode()
def estimate_depth(model: DepthAnythingV2, image_rgb: np.ndarray, input_size: int = 518) -> np.ndarray:
    """Relative inverse depth of one image: (h, w, 3) uint8 **RGB** (i2v's convention, what
    :func:`i2v.video.load_image` returns; grey and RGBA arrays are converted as it does) -> (h, w) float32, >= 0,
    larger = nearer, up to an unknown scale and shift (a metric model gives metres). ``input_size``: the short
    side the network sees (518 as trained; larger keeps finer detail, costs ~quadratically more). Runs on the
    model's device and dtype; the result is resized back bilinearly (align_corners=True) in float32."""
    rgb = _as_rgb(image_rgb)
    h, w = rgb.shape[:2]
    p = next(model.parameters())
    x = preprocess(rgb, input_size).to(p.device, p.dtype)
    depth = model(x)[:, None].float()  # (1, 1, H, W)
    depth = F.interpolate(depth, (h, w), mode="bilinear", align_corners=True)[0, 0]  # (h, w)
    return depth.cpu().numpy()
