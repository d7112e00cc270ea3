"""RAFT: Recurrent All-Pairs Field Transforms for optical flow -- the large model and raft-small.

Paper: Teed & Deng, "RAFT: Recurrent All-Pairs Field Transforms for Optical Flow", ECCV 2020 (arXiv:2003.12039).
Original code: github.com/princeton-vl/RAFT, ``core/raft.py`` (the model), ``core/extractor.py`` (encoders),
``core/corr.py`` (``CorrBlock``, ``AlternateCorrBlock``), ``core/update.py`` (GRUs, motion encoder, heads),
``core/utils/utils.py`` (``bilinear_sampler``, ``coords_grid``, ``upflow8``, ``InputPadder``). Written here from
primitives after that code; attribute names equal the released checkpoints' keys (after DataParallel's ``module.``
prefix), so the released raft-things/-sintel/-kitti/-chairs.pth and raft-small.pth load by name and shape.

How it works (Section 3 of the paper):

1. Features. A feature encoder g (instance norm) maps each frame to D-channel features at 1/8 resolution:
   F1 = g(I1), F2 = g(I2), (b, D, h, w) with h = H/8, w = W/8. A context encoder (batch norm in eval mode; the
   small model has no norm) maps I1 to the GRU's initial hidden state h_0 = tanh(.) and its input x = relu(.).
2. All-pairs correlation. C(i, j, k, l) = <F1(i, j), F2(k, l)> / sqrt(D), a (h w) x (h w) volume, and a pyramid
   C^m (m = 0..3) made by 2x2 average pooling over the *second frame's* two dimensions (k, l).
3. Lookup. With the current estimate the pixel p = (x, y) of frame 1 sits at p' = p + f(p) in frame 2. From every
   level m the (2r+1)^2 values C^m(p, p'/2^m + d), integer offsets d in [-r, r]^2, are read by bilinear
   interpolation (zero outside): 4 (2r+1)^2 correlation features per pixel (r = 4: 324; small, r = 3: 196).
4. Update. A motion encoder turns (correlation features, f) into motion features; a convolutional GRU
       z = sigmoid(conv([h, x])),  r = sigmoid(conv([h, x])),  q = tanh(conv([r * h, x])),
       h <- (1 - z) * h + z * q
   (large: twice, with 1x5 then 5x1 kernels, "SepConvGRU"; small: once with 3x3) updates h, and the flow head
   predicts a residual: f_{k+1} = f_k + Delta f(h), from f_0 = 0 or a warm start. Iterations: 12 by default (the
   original ``RAFT.forward``'s default and training unroll); its demo.py runs 20, evaluate.py 32 (Sintel) and 24
   (KITTI, Chairs).
5. Upsampling to full resolution. Large: *convex upsampling* -- a mask head predicts, for each full-resolution
   pixel of an 8x8 block, weights over the 3x3 coarse neighbours (softmax over 9); the flow there is
   sum_k w_k * 8 f(neighbour k). The mask logits are scaled by 0.25 (the original "balances gradients").
   Small: bilinear x8 (``upflow8``, align_corners=True) of 8 f.

Tensor layouts (b = batch):
- :meth:`RAFT.forward`: ``image1``, ``image2`` (b, 3, H, W) RGB float in 0..255 (what the original demo feeds;
  normalised inside to 2 I / 255 - 1), H and W multiples of 8 (:func:`pad` does the original's replicate padding).
  Returns ``flow_low`` (b, 2, H/8, W/8) in 1/8-resolution pixels and ``flow_up`` (b, 2, H, W) in pixels.
- :func:`estimate`: two (h, w, 3) uint8 RGB images -> (h, w, 2) float32 flow F with image1(p) ~ image2(p + F(p)),
  i2v's convention (:mod:`i2v.motion.flow`, :mod:`i2v.motion.warp`); RAFT's flow is exactly that.

Memory: the all-pairs volume holds (h w)^2 float32 numbers, (H W / 64)^2 * 4 bytes -- 198 MB at Sintel's
1024x436, 4.2 GB at 1920x1080. ``alternate_corr=True`` computes the same lookup on demand from the features
(the original's ``AlternateCorrBlock``, there a CUDA kernel; here PyTorch, in chunks of pixels).

Precision: ``from_pretrained(dtype=...)`` sets the networks' dtype (float32 by default; bfloat16 runs fast on
CPUs, float16 wants a GPU); as in the original's mixed precision, the correlation, the coordinates and the
upsampling stay in float32.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ...checkpoints import load_model, open_state_dict
from ... import runtime
from ...errors import CheckpointError, ConfigError, InputError

# BatchNorm's training counter: the context encoder's batch norm runs in eval mode only (FrozenBatchNorm2d keeps
# no counter), so the counter is skipped when a file has it; older saves of the released files lack it.
SKIP = {"num_batches_tracked: BatchNorm's training-step counter, unused in eval mode (released files may lack it)":
        lambda k: k.endswith(".num_batches_tracked")}

# Iterations in the original: RAFT.forward's default and the training unroll (train.py --iters) are 12; demo.py
# runs 20; evaluate.py 32 on Sintel and 24 on KITTI / Chairs. More iterations: slower, a little more accurate.
DEFAULT_ITERS = 12
DEMO_ITERS = 20
LEVELS = 4  # correlation pyramid levels; fixed in the original (args.corr_levels = 4 for both models)
DOWN = 8  # the encoders' total stride: flow is estimated at 1/8 resolution
# smallest padded side: the coarsest correlation level (1/64 of the image) needs 2 cells, because the original's
# bilinear lookup normalises coordinates by (size - 1); images from MIN_SIDE - 7 = 121 px pad up to it
MIN_SIDE = DOWN * 2 ** (LEVELS - 1) * 2  # 128


@dataclass(frozen=True)
class Config:
    """What differs between RAFT files. Defaults: the large model (raft-things.pth); :meth:`small_model` gives
    raft-small.pth's. :meth:`from_state_dict` reads every field off a file's shapes."""

    # raft-small: bottleneck blocks, no context norm, ConvGRU, bilinear x8 upsampling (large: residual blocks,
    # batch norm, SepConvGRU, convex upsampling)
    small: bool = False
    encoder_widths: tuple[int, ...] = (64, 64, 96, 128)  # stem conv, layer1, layer2 (stride 2), layer3 (stride 2)
    feature_dim: int = 256  # D: feature encoder output channels, correlated pairwise
    hidden_dim: int = 128  # GRU hidden state h (tanh of the context encoder's first channels)
    context_dim: int = 128  # GRU context input x (relu of the remaining channels)
    corr_radius: int = 4  # lookup window (2r+1)^2 per level (small: 3)
    corr_widths: tuple[int, ...] = (256, 192)  # motion encoder convs on the correlation features (small: 96)
    flow_widths: tuple[int, int] = (128, 64)  # motion encoder convs on the flow (7x7, 3x3; small: 64, 32)
    motion_dim: int = 128  # motion features incl. the 2 flow channels passed through (small: 82)
    flow_head_dim: int = 256  # flow head's hidden width (small: 128)
    mask_dim: int = 256  # convex-upsampling mask head's hidden width (large only)

    @classmethod
    def small_model(cls) -> "Config":
        return cls(small=True, encoder_widths=(32, 32, 64, 96), feature_dim=128, hidden_dim=96, context_dim=64,
                   corr_radius=3, corr_widths=(96,), flow_widths=(64, 32), motion_dim=82, flow_head_dim=128,
                   mask_dim=0)

    @property
    def corr_planes(self) -> int:
        return LEVELS * (2 * self.corr_radius + 1) ** 2

    @classmethod
    def from_state_dict(cls, shapes) -> "Config":
        """Every field from tensor shapes (key -> shape, without the ``module.`` prefix). CheckpointError when
        the keys are not RAFT's."""
        need = ("fnet.conv1.weight", "fnet.conv2.weight", "cnet.conv2.weight", "update_block.encoder.convc1.weight",
                "update_block.encoder.convf2.weight", "update_block.encoder.conv.weight",
                "update_block.flow_head.conv1.weight")
        missing = [k for k in need if k not in shapes]
        if missing:
            keys = sorted(shapes)
            other = (" It looks like a Depth Anything file (pretrained.*, depth_head.*): use it as a depth model."
                     if any(k.startswith("depth_head.") for k in keys) else "")
            raise CheckpointError(
                f"not a RAFT checkpoint: {len(missing)} of RAFT's keys are absent (e.g. {missing[0]}); the file has "
                f"{len(keys)} tensors like {', '.join(keys[:3]) or 'nothing'}.{other} RAFT files are raft-things.pth, "
                f"raft-sintel.pth, raft-kitti.pth, raft-chairs.pth and raft-small.pth (princeton-vl/RAFT)")
        small = "update_block.mask.0.weight" not in shapes  # raft-small has no convex-upsampling head
        gru = "update_block.gru.convz.weight" if small else "update_block.gru.convz1.weight"
        if gru not in shapes:
            raise CheckpointError(f"a RAFT-like file without {gru}: "
                                  + ("a small model (no mask head) needs a ConvGRU" if small else
                                     "a large model (mask head) needs a SepConvGRU") + "; is it a modified RAFT?")
        block_out = "conv3" if small else "conv2"  # last conv of a bottleneck / residual block
        stages = [f"fnet.layer{i}.0.{block_out}.weight" for i in (1, 2, 3)]
        if any(k not in shapes for k in stages):
            raise CheckpointError(f"a RAFT-like file without {next(k for k in stages if k not in shapes)}: the "
                                  f"{'small' if small else 'large'} model's feature encoder has three stages of "
                                  f"{'bottleneck' if small else 'residual'} blocks; is it a modified RAFT?")
        widths = (shapes["fnet.conv1.weight"][0], *(shapes[k][0] for k in stages))
        hidden = shapes[gru][0]
        planes = shapes["update_block.encoder.convc1.weight"][1]
        radius = (math.isqrt(planes // LEVELS) - 1) // 2
        if LEVELS * (2 * radius + 1) ** 2 != planes:
            raise CheckpointError(f"RAFT's motion encoder takes {planes} correlation channels, not {LEVELS} levels x "
                                  f"(2r+1)^2 for any radius r: a modified RAFT i2v does not know")
        corr_widths = tuple(shapes[k][0] for k in ("update_block.encoder.convc1.weight",
                                                    "update_block.encoder.convc2.weight") if k in shapes)
        return cls(small=small, encoder_widths=tuple(int(w) for w in widths),
                   feature_dim=int(shapes["fnet.conv2.weight"][0]), hidden_dim=int(hidden),
                   context_dim=int(shapes["cnet.conv2.weight"][0] - hidden), corr_radius=int(radius),
                   corr_widths=tuple(int(w) for w in corr_widths),
                   flow_widths=(int(shapes["update_block.encoder.convf1.weight"][0]),
                                int(shapes["update_block.encoder.convf2.weight"][0])),
                   motion_dim=int(shapes["update_block.encoder.conv.weight"][0] + 2),
                   flow_head_dim=int(shapes["update_block.flow_head.conv1.weight"][0]),
                   mask_dim=0 if small else int(shapes["update_block.mask.0.weight"][0]))


# --------------------------------------------------------------------------------------------------- encoders
class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d in eval mode: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias. The context
    encoder's statistics are frozen (the original calls ``freeze_bn()``); no training counter is kept."""

    def __init__(self, c: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def make_norm(kind: str, c: int) -> nn.Module:
    """'instance' (feature encoder: per image and channel, no affine, no statistics), 'batch' (large context
    encoder) or 'none' (small context encoder)."""
    return {"instance": lambda: nn.InstanceNorm2d(c), "batch": lambda: FrozenBatchNorm2d(c),
            "none": nn.Identity}[kind]()


class ResidualBlock(nn.Module):
    """Two 3x3 convs with norm + ReLU; a 1x1 strided conv + norm on the skip path when stride > 1."""

    def __init__(self, c_in: int, c: int, norm: str, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.norm1, self.norm2 = make_norm(norm, c), make_norm(norm, c)
        self.downsample = None
        if stride != 1:
            # The original registers this norm twice, as norm3 and as downsample.1, so a file has both keys (equal
            # values); loading assigns norm3 first, then downsample.1 -- the same order as the original.
            self.norm3 = make_norm(norm, c)
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c, 1, stride=stride), self.norm3)

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        return F.relu((x if self.downsample is None else self.downsample(x)) + y)


class BottleneckBlock(nn.Module):
    """raft-small's block: 1x1 down to c/4, 3x3 (strided), 1x1 up to c, each with norm + ReLU; skip as above."""

    def __init__(self, c_in: int, c: int, norm: str, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c // 4, 1)
        self.conv2 = nn.Conv2d(c // 4, c // 4, 3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(c // 4, c, 1)
        self.norm1, self.norm2, self.norm3 = make_norm(norm, c // 4), make_norm(norm, c // 4), make_norm(norm, c)
        self.downsample = None
        if stride != 1:
            self.norm4 = make_norm(norm, c)  # registered twice as in the original: norm4 and downsample.1
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c, 1, stride=stride), self.norm4)

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = F.relu(self.norm3(self.conv3(y)))
        return F.relu((x if self.downsample is None else self.downsample(x)) + y)


class Encoder(nn.Module):
    """(b, 3, H, W) -> (b, out_dim, H/8, W/8): 7x7 stride-2 stem, three stages of two blocks (strides 1, 2, 2),
    1x1 output conv. ``BasicEncoder`` (residual blocks) of the large model, ``SmallEncoder`` (bottleneck) of the
    small one."""

    def __init__(self, widths: tuple[int, ...], out_dim: int, norm: str, bottleneck: bool):
        super().__init__()
        block = BottleneckBlock if bottleneck else ResidualBlock
        stem, *stages = widths
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3)
        self.norm1 = make_norm(norm, stem)
        c_in = stem
        for i, (c, stride) in enumerate(zip(stages, (1, 2, 2)), start=1):
            setattr(self, f"layer{i}", nn.Sequential(block(c_in, c, norm, stride), block(c, c, norm, 1)))
            c_in = c
        self.conv2 = nn.Conv2d(c_in, out_dim, 1)

    def forward(self, x):
        x = F.relu(self.norm1(self.conv1(x)))  # (b, stem, H/2, W/2)
        x = self.layer3(self.layer2(self.layer1(x)))  # (b, c3, H/8, W/8)
        return self.conv2(x)


# ------------------------------------------------------------------------------------------------ correlation
def window_grid(coords: torch.Tensor, level: int, radius: int, size: tuple[int, int]) -> torch.Tensor:
    """The lookup points of one pyramid level, normalised for ``grid_sample(align_corners=True)`` exactly as the
    original's ``bilinear_sampler`` does (x' = 2 x / (W_m - 1) - 1 on the level's own size W_m).

    ``coords`` (b, 2, h, w): where each pixel of frame 1 sits in frame 2, (x, y) in 1/8-resolution pixels.
    Returns (b h w, 2r+1, 2r+1, 2). The window offsets keep the original's order: it stacks meshgrid(dy, dx) and
    adds that to (x, y), so the FIRST window axis shifts x and the second shifts y; the trained motion encoder's
    weights depend on this channel order."""
    h_m, w_m = size
    d = torch.arange(-radius, radius + 1, device=coords.device, dtype=coords.dtype)
    offsets = torch.stack(torch.meshgrid(d, d, indexing="ij"), -1)  # (2r+1, 2r+1, 2): [..., 0] = row index
    centre = rearrange(coords, "b c h w -> (b h w) 1 1 c") / 2**level
    pts = centre + offsets  # (bhw, 2r+1, 2r+1, 2): x + offset_i, y + offset_j
    x, y = pts.split(1, dim=-1)
    return torch.cat([2 * x / (w_m - 1) - 1, 2 * y / (h_m - 1) - 1], dim=-1)


class CorrPyramid:
    """All-pairs correlation (the original's ``CorrBlock``): C = F1^T F2 / sqrt(D), pooled 3 times over frame 2's
    dimensions; ``__call__(coords)`` -> (b, 4 (2r+1)^2, h, w) correlation features."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, radius: int):
        b, d, h, w = fmap1.shape
        self.radius = radius
        # C(i,j,k,l) = <F1(i,j), F2(k,l)> / sqrt(D); the in-place division keeps one copy of the volume
        corr = torch.matmul(rearrange(fmap1, "b d h w -> b (h w) d"), rearrange(fmap2, "b d h w -> b d (h w)"))
        corr = corr.div_(math.sqrt(d)).reshape(b * h * w, 1, h, w)  # (b h1 w1, 1, h2, w2)
        self.pyramid = [corr]
        for _ in range(LEVELS - 1):
            self.pyramid.append(F.avg_pool2d(self.pyramid[-1], 2, stride=2))  # C^{m+1}: 2x2 mean over (k, l)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        b, _, h, w = coords.shape
        out = []
        for m, corr in enumerate(self.pyramid):
            grid = window_grid(coords, m, self.radius, corr.shape[-2:])
            sampled = F.grid_sample(corr, grid, align_corners=True)  # (bhw, 1, 2r+1, 2r+1), zeros outside
            out.append(rearrange(sampled, "(b h w) 1 i j -> b (i j) h w", b=b, h=h, w=w))
        return torch.cat(out, dim=1)  # (b, 4 (2r+1)^2, h, w), levels fine to coarse


class OnDemandCorr:
    """The same lookup without the volume (the original's ``AlternateCorrBlock`` and its CUDA kernel, here in
    PyTorch). Pooling and bilinear interpolation are linear, so C^m(p, q) = <F1(p), F2^m(q)> / sqrt(D) with F2^m
    frame 2's features pooled m times. All (2r+1)^2 window points of a pixel share one fractional part
    (fx, fy), so the window is a bilinear blend of the correlations at the (2r+2)^2 integer points around it:

        C(x + i, y + j) = (1-fx)(1-fy) S[i, j] + fx (1-fy) S[i+1, j] + (1-fx) fy S[i, j+1] + fx fy S[i+1, j+1]

    for i, j in -r..r, with S[i, j] = <F1(p), F2^m(floor(x) + i, floor(y) + j)> / sqrt(D), i, j in -r..r+1 (zero
    outside the frame). Memory O(b D h w)
    instead of O(b (h w)^2); pixels are processed in chunks of at most ``chunk_bytes`` of gathered features
    (default: 2 MiB on the CPU, where a cache-sized chunk ran 2x faster than 64 MiB; 256 MiB on a GPU)."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, radius: int, chunk_bytes: int | None = None):
        self.radius = radius
        self.chunk_bytes = chunk_bytes or (2 if fmap1.device.type == "cpu" else 256) * 2**20
        self.fmap1 = rearrange(fmap1, "b d h w -> b (h w) d")
        self.pyramid = [fmap2]
        for _ in range(LEVELS - 1):
            self.pyramid.append(F.avg_pool2d(self.pyramid[-1], 2, stride=2))

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        b, n, d = self.fmap1.shape
        r, side = self.radius, 2 * self.radius + 2  # integer points per axis around a window
        step = max(1, self.chunk_bytes // (b * side * side * d * self.fmap1.element_size()))  # pixels per chunk
        out = []
        for m, f2 in enumerate(self.pyramid):
            h2, w2 = f2.shape[-2:]
            f2 = rearrange(f2, "b d h w -> (b h w) d")
            x, y = rearrange(coords / 2**m, "b c h w -> c b (h w)")  # (b, n) each, level-m pixels
            x0, y0 = x.floor(), y.floor()
            fx, fy = (x - x0)[..., None, None], (y - y0)[..., None, None]  # (b, n, 1, 1)
            i = torch.arange(side, device=coords.device) - r
            xi = x0.long()[..., :, None] + i  # (b, n, side): columns floor(x) - r .. floor(x) + r + 1
            yi = y0.long()[..., :, None] + i
            inside = ((xi >= 0) & (xi < w2))[..., :, None] & ((yi >= 0) & (yi < h2))[..., None, :]  # (b, n, i, j)
            index = (yi.clamp(0, h2 - 1)[..., None, :] * w2 + xi.clamp(0, w2 - 1)[..., :, None]
                     + (torch.arange(b, device=coords.device) * h2 * w2)[:, None, None, None])  # (b, n, i, j)
            s = []
            for c in range(0, n, step):
                idx = index[:, c:c + step]  # (b, n_c, i, j)
                gathered = f2.index_select(0, idx.flatten()).view(b, -1, side * side, d)  # F2^m at the points
                s.append(torch.einsum("bnkd,bnd->bnk", gathered, self.fmap1[:, c:c + step]))
            s = torch.cat(s, dim=1)  # (b, n, side*side)
            s = rearrange(s, "b n (i j) -> b n i j", i=side) * inside / math.sqrt(d)  # S[i, j], zero outside
            window = ((1 - fx) * (1 - fy) * s[:, :, :-1, :-1] + fx * (1 - fy) * s[:, :, 1:, :-1]
                      + (1 - fx) * fy * s[:, :, :-1, 1:] + fx * fy * s[:, :, 1:, 1:])  # (b, n, 2r+1, 2r+1)
            out.append(rearrange(window, "b n i j -> b (i j) n"))  # x offset first, as the all-pairs lookup
        return rearrange(torch.cat(out, dim=1), "b c (h w) -> b c h w", h=coords.shape[2])


# ------------------------------------------------------------------------------------------------ update block
def gru_step(convz: nn.Conv2d, convr: nn.Conv2d, convq: nn.Conv2d, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One convolutional GRU step: z, r gates; candidate q; h <- (1 - z) h + z q."""
    hx = torch.cat([h, x], dim=1)
    z = torch.sigmoid(convz(hx))  # update gate
    r = torch.sigmoid(convr(hx))  # reset gate
    q = torch.tanh(convq(torch.cat([r * h, x], dim=1)))  # candidate state
    return (1 - z) * h + z * q


class ConvGRU(nn.Module):
    """raft-small's GRU: 3x3 convolutions."""

    def __init__(self, hidden: int, inp: int):
        super().__init__()
        self.convz, self.convr, self.convq = (nn.Conv2d(hidden + inp, hidden, 3, padding=1) for _ in range(3))

    def forward(self, h, x):
        return gru_step(self.convz, self.convr, self.convq, h, x)


class SepConvGRU(nn.Module):
    """The large model's GRU: a horizontal (1x5) step, then a vertical (5x1) step -- a 5x5 receptive field."""

    def __init__(self, hidden: int, inp: int):
        super().__init__()
        c = hidden + inp
        self.convz1, self.convr1, self.convq1 = (nn.Conv2d(c, hidden, (1, 5), padding=(0, 2)) for _ in range(3))
        self.convz2, self.convr2, self.convq2 = (nn.Conv2d(c, hidden, (5, 1), padding=(2, 0)) for _ in range(3))

    def forward(self, h, x):
        h = gru_step(self.convz1, self.convr1, self.convq1, h, x)  # horizontal
        return gru_step(self.convz2, self.convr2, self.convq2, h, x)  # vertical


class MotionEncoder(nn.Module):
    """(flow (b, 2, h, w), corr (b, 4 (2r+1)^2, h, w)) -> (b, motion_dim, h, w): convs on each, fused, with the
    flow itself appended as the last two channels."""

    def __init__(self, cfg: Config):
        super().__init__()
        c1 = cfg.corr_widths[0]
        self.convc1 = nn.Conv2d(cfg.corr_planes, c1, 1)
        self.convc2 = nn.Conv2d(c1, cfg.corr_widths[1], 3, padding=1) if len(cfg.corr_widths) > 1 else None
        self.convf1 = nn.Conv2d(2, cfg.flow_widths[0], 7, padding=3)
        self.convf2 = nn.Conv2d(cfg.flow_widths[0], cfg.flow_widths[1], 3, padding=1)
        self.conv = nn.Conv2d(cfg.corr_widths[-1] + cfg.flow_widths[1], cfg.motion_dim - 2, 3, padding=1)

    def forward(self, flow, corr):
        cor = F.relu(self.convc1(corr))
        if self.convc2 is not None:
            cor = F.relu(self.convc2(cor))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([cor, flo], dim=1)))
        return torch.cat([out, flow], dim=1)


class FlowHead(nn.Module):
    """h -> Delta f: 3x3 conv, ReLU, 3x3 conv to 2 channels."""

    def __init__(self, c_in: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 2, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    """One RAFT iteration's learned part: motion features, GRU, flow head (and the large model's mask head).
    Returns (h, Delta f, mask logits (b, 9*64, h, w) or None)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.encoder = MotionEncoder(cfg)
        gru = ConvGRU if cfg.small else SepConvGRU
        self.gru = gru(cfg.hidden_dim, cfg.context_dim + cfg.motion_dim)
        self.flow_head = FlowHead(cfg.hidden_dim, cfg.flow_head_dim)
        self.mask = None
        if not cfg.small:  # keys mask.0 / mask.2 (mask.1 is the ReLU)
            self.mask = nn.Sequential(nn.Conv2d(cfg.hidden_dim, cfg.mask_dim, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(cfg.mask_dim, 9 * DOWN * DOWN, 1))

    def forward(self, h, x, corr, flow):
        x = torch.cat([x, self.encoder(flow, corr)], dim=1)  # GRU input: context + motion features
        h = self.gru(h, x)
        delta = self.flow_head(h)
        mask = None if self.mask is None else 0.25 * self.mask(h)  # the original's 0.25 scale
        return h, delta, mask


# --------------------------------------------------------------------------------------------------- the model
def convex_upsample(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(b, 2, h, w) flow, (b, 9*64, h, w) mask logits -> (b, 2, 8h, 8w): each full-resolution pixel of an 8x8
    block is sum_k softmax(mask)_k * 8 f(k) over the 3x3 coarse neighbours k (zero flow beyond the border)."""
    b, _, h, w = flow.shape
    weights = torch.softmax(rearrange(mask, "b (k a c) h w -> b 1 k a c h w", k=9, a=DOWN), dim=2)
    neighbours = F.unfold(DOWN * flow, [3, 3], padding=1)  # (b, 2*9, h*w)
    neighbours = rearrange(neighbours, "b (two k) (h w) -> b two k 1 1 h w", two=2, h=h)
    up = (weights * neighbours).sum(dim=2)  # (b, 2, 8 (a: rows), 8 (c: columns), h, w)
    return rearrange(up, "b two a c h w -> b two (h a) (w c)")


def upflow8(flow: torch.Tensor) -> torch.Tensor:
    """raft-small's upsampling: 8 * bilinear resize (align_corners=True) of the 1/8 flow."""
    return DOWN * F.interpolate(flow, size=(DOWN * flow.shape[2], DOWN * flow.shape[3]), mode="bilinear",
                                align_corners=True)


def coords_grid(b: int, h: int, w: int, device) -> torch.Tensor:
    """(b, 2, h, w) pixel coordinates: channel 0 = x (column), channel 1 = y (row), float32."""
    y, x = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([x, y]).float()[None].expand(b, 2, h, w)


class RAFT(nn.Module):
    """RAFT large (raft-things.pth layout) or small (raft-small.pth), chosen by ``Config.small``."""

    def __init__(self, config: Config = Config()):
        super().__init__()
        self.config = cfg = config
        widths, bottleneck = cfg.encoder_widths, cfg.small
        self.fnet = Encoder(widths, cfg.feature_dim, "instance", bottleneck)
        self.cnet = Encoder(widths, cfg.hidden_dim + cfg.context_dim, "none" if cfg.small else "batch", bottleneck)
        self.update_block = UpdateBlock(cfg)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype=None, device="cpu") -> "RAFT":
        """Load a released RAFT file (raft-things/-sintel/-kitti/-chairs.pth or raft-small.pth; any layout with
        the same key names): the ``module.`` prefix is dropped, the config read from the shapes, the model built
        on the meta device and filled strictly. float16-stored files are upcast to ``dtype`` (default float32);
        ``num_batches_tracked`` is skipped when present."""
        sd = open_state_dict(path).strip_common_prefix()
        try:
            cfg = Config.from_state_dict(sd.shapes)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None
        model = load_model(cls, cfg, sd, source=str(path), skip=SKIP, dtype=runtime.dtype(dtype) or torch.float32, device=device,
                  hint="Is it a RAFT file of another variant, or truncated?")
        return model.eval()

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iters: int = DEFAULT_ITERS,
                flow_init: torch.Tensor | None = None, alternate_corr: bool = False,
                return_all: bool = False) -> dict:
        """``image1``, ``image2``: (b, 3, H, W) RGB float 0..255, H and W multiples of 8 (>= 128). ``flow_init``:
        (b, 2, H/8, W/8) starting flow in 1/8-resolution pixels (warm start). ``alternate_corr``: on-demand
        correlation (same result, no (HW/64)^2 volume). Returns dict(flow_low (b, 2, H/8, W/8), flow_up (b, 2, H,
        W)) and, with ``return_all``, ``flow_predictions``: the upsampled flow after each iteration (the
        original's training output)."""
        _check_iters(iters)
        b, _, H, W = image1.shape
        if image1.shape != image2.shape or image1.ndim != 4 or image1.shape[1] != 3:
            raise InputError(f"RAFT expects two (b, 3, H, W) RGB tensors of one shape, got {tuple(image1.shape)} and "
                             f"{tuple(image2.shape)}")
        if H % DOWN or W % DOWN or min(H, W) < MIN_SIDE:
            raise InputError(f"RAFT.forward needs H and W multiples of {DOWN} and at least {MIN_SIDE}, got {H}x{W}; "
                             f"pad with raft.pad() (or use raft.estimate(), which pads)")
        dtype = self.fnet.conv1.weight.dtype
        x1 = (2 * (image1 / 255.0) - 1.0).to(dtype)  # [0, 255] -> [-1, 1]
        x2 = (2 * (image2 / 255.0) - 1.0).to(dtype)
        fmap1, fmap2 = self.fnet(torch.cat([x1, x2])).float().chunk(2)  # (b, D, h, w) each; correlation in float32
        corr_fn = (OnDemandCorr if alternate_corr else CorrPyramid)(fmap1, fmap2, self.config.corr_radius)
        hidden, context = self.cnet(x1).split([self.config.hidden_dim, self.config.context_dim], dim=1)
        h, x = torch.tanh(hidden), torch.relu(context)  # GRU state h_0 and its per-iteration input x

        coords0 = coords_grid(b, H // DOWN, W // DOWN, image1.device)  # p
        if flow_init is not None and tuple(flow_init.shape) != (b, 2, H // DOWN, W // DOWN):
            raise InputError(f"flow_init must be (b, 2, H/8, W/8) = {(b, 2, H // DOWN, W // DOWN)} in 1/8-resolution "
                             f"pixels, got {tuple(flow_init.shape)} (raft.estimate() takes a full-size flow)")
        coords1 = coords0 if flow_init is None else coords0 + flow_init.float()  # p + f_0(p)
        predictions = []
        for _ in range(iters):
            corr = corr_fn(coords1)  # (b, 4 (2r+1)^2, h, w): C^m(p, (p + f)/2^m + d)
            flow = coords1 - coords0
            h, delta, mask = self.update_block(h, x, corr.to(dtype), flow.to(dtype))
            coords1 = coords1 + delta.float()  # f_{k+1} = f_k + Delta f
            if return_all:
                predictions.append(self.upsample(coords1 - coords0, mask))
        flow_low = coords1 - coords0
        out = {"flow_low": flow_low, "flow_up": predictions[-1] if return_all else self.upsample(flow_low, mask)}
        if return_all:
            out["flow_predictions"] = predictions
        return out

    def upsample(self, flow: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """1/8 flow -> full resolution: convex (large) or bilinear x8 (small); in float32."""
        return upflow8(flow) if mask is None else convex_upsample(flow, mask.float())


# ----------------------------------------------------------------------------------------- padding, user entry
def padding(h: int, w: int, mode: str = "sintel") -> tuple[int, int, int, int]:
    """The original ``InputPadder``'s (left, right, top, bottom), F.pad's order, to reach multiples of 8.
    'sintel' (demo.py and the Sintel evaluation): centred, the odd pixel at the right/bottom; 'kitti': all rows at
    the bottom."""
    ph, pw = -h % DOWN, -w % DOWN
    if mode == "sintel":
        return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2
    if mode == "kitti":
        return pw // 2, pw - pw // 2, 0, ph
    raise ConfigError(f"unknown RAFT padding mode {mode!r}; valid: sintel (centred, the demo's), kitti (bottom)")


def pad(x: torch.Tensor, mode: str = "sintel") -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Replicate-pad (b, c, h, w) to multiples of 8 as the original; returns (padded, (left, right, top, bottom))."""
    p = padding(*x.shape[-2:], mode=mode)
    return F.pad(x, p, mode="replicate"), p


def unpad(x: torch.Tensor, p: tuple[int, int, int, int]) -> torch.Tensor:
    """Crop what :func:`pad` added."""
    left, right, top, bottom = p
    return x[..., top:x.shape[-2] - bottom, left:x.shape[-1] - right]


def _image(img, name: str) -> torch.Tensor:
    """(h, w, 3) uint8 RGB (0..255) or float RGB in [0, 1], numpy or tensor -> (1, 3, h, w) float32 in 0..255."""
    t = img if isinstance(img, torch.Tensor) else torch.tensor(np.ascontiguousarray(img))
    if t.ndim == 2 or (t.ndim == 3 and t.shape[-1] == 1):
        raise InputError(f"{name} is a grey image {tuple(t.shape)}; RAFT needs (h, w, 3) RGB: repeat the channel "
                         f"(np.repeat(img[..., None], 3, -1) or PIL's .convert('RGB'))")
    if t.ndim == 3 and t.shape[-1] == 4:
        raise InputError(f"{name} has 4 channels (RGBA); RAFT needs (h, w, 3) RGB: drop the alpha (img[..., :3])")
    if t.ndim != 3 or t.shape[-1] != 3:
        raise InputError(f"{name} must be an (h, w, 3) RGB image, got shape {tuple(t.shape)}"
                         + (" (channels first? use img.permute(1, 2, 0))" if t.ndim == 3 and t.shape[0] == 3 else ""))
    if t.dtype == torch.uint8:
        t = t.float()
    elif t.is_floating_point():
        if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
            raise InputError(f"{name} is float with values in [{float(t.min()):.3g}, {float(t.max()):.3g}]; float "
                             f"images must be in [0, 1] (pass uint8 for 0..255)")
        t = t.float() * 255
    else:
        raise InputError(f"{name} has dtype {t.dtype}; pass uint8 (0..255) or float in [0, 1]")
    return rearrange(t, "h w c -> 1 c h w")


@torch.no_grad()
def estimate(model: RAFT, image1, image2, iters: int = DEFAULT_ITERS, flow_init=None, *, alternate_corr: bool = False,
             pad_mode: str = "sintel") -> np.ndarray:
    """Flow from ``image1`` to ``image2``: (h, w, 2) float32 (u, v) pixels with image1(p) ~ image2(p + F(p)).

    ``image1``, ``image2``: (h, w, 3) RGB, uint8 (0..255) or float in [0, 1], numpy arrays or tensors, the same
    size, at least 121 px on each side. ``iters``: GRU iterations (12, RAFT.forward's default in the original;
    its demo.py runs 20, evaluate.py 24-32: slower, slightly more accurate). ``flow_init``: an (h, w, 2) flow in
    pixels to start from (warm start for video: the previous pair's flow under constant motion); it is padded
    like the images and averaged over 8x8 blocks to the 1/8 grid. ``alternate_corr``: on-demand correlation for
    large frames (same flow, less memory, slower). The images are replicate-padded to multiples of 8
    (``pad_mode`` 'sintel': centred, as demo.py) and the flow cropped back."""
    a, b = _image(image1, "image1"), _image(image2, "image2")
    if a.shape != b.shape:
        raise InputError(f"RAFT needs two images of one size, got {a.shape[-1]}x{a.shape[-2]} and "
                         f"{b.shape[-1]}x{b.shape[-2]} (WxH); resize the second to the first")
    h, w = a.shape[-2:]
    smallest = MIN_SIDE - DOWN + 1
    if min(h, w) < smallest:
        raise InputError(f"RAFT needs images of at least {smallest}x{smallest} pixels (padded to {MIN_SIDE}, the "
                         f"coarsest correlation level is 2 cells), got {w}x{h} (WxH); upscale both images first")
    _check_iters(iters)
    device = model.fnet.conv1.weight.device
    (a, p), (b, _) = pad(a.to(device), pad_mode), pad(b.to(device), pad_mode)
    init = None
    if flow_init is not None:
        f = flow_init if isinstance(flow_init, torch.Tensor) else torch.tensor(np.array(flow_init, np.float32))
        f = f.float()
        if tuple(f.shape) != (h, w, 2):
            raise InputError(f"flow_init must be ({h}, {w}, 2) pixels like the images, got {tuple(f.shape)}")
        f, _ = pad(rearrange(f.to(device), "h w c -> 1 c h w"), pad_mode)
        init = F.avg_pool2d(f, DOWN) / DOWN  # full-resolution pixels -> 1/8 grid, 1/8-resolution pixels
    out = model(a, b, iters=iters, flow_init=init, alternate_corr=alternate_corr)
    flow = unpad(out["flow_up"], p)[0]  # (2, h, w)
    return rearrange(flow, "c h w -> h w c").float().cpu().numpy()


def _check_iters(iters) -> None:
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ConfigError(f"RAFT iterations must be an integer >= 1, got {iters!r} (the original's default "
                          f"is 12, its demo 20, its evaluations 24-32)")
