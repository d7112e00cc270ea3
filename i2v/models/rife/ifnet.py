"""RIFE 4.25: Real-time Intermediate Flow Estimation, the IFNet_HDv3 network of Practical-RIFE.

Paper: Huang, Zhang, Heng, Shi, Zhou, "Real-Time Intermediate Flow Estimation for Video Frame Interpolation",
ECCV 2022 (arXiv:2011.06294). Original code: github.com/hzwer/Practical-RIFE, ``train_log/IFNet_HDv3.py`` and
``train_log/RIFE_HDv3.py`` of the 4.25 release (weights: ``train_log/flownet.pkl``). This file is written from
primitives after the architecture described there; attribute names equal the released checkpoint's keys (after
the ``module.`` prefix that ``DataParallel`` added), so loading is a loop that checks names and shapes.

How it works. RIFE estimates the *intermediate* flows F_t->0 and F_t->1 directly (not the flow between the two
inputs), coarse to fine, with five ``IFBlock``s. Each block sees the two frames (warped by the current flow
estimate), their warped features, the timestep t as a constant image, the current mask logit and an 8-channel
feature passed from the previous block, all resized by 1/scale_i; it predicts a *residual* flow, a new mask
logit and new features, upsampled back to full size. The frame is

    I_t = M * warp(I_0, F_t->0) + (1 - M) * warp(I_1, F_t->1),     M = sigmoid(mask logit of the last block)

Tensor layouts (b = batch):
- in:  ``img0``, ``img1`` (b, 3, H, W) RGB in [0, 1], H and W multiples of ``Config.multiple / scale``
  (:func:`interpolate` pads and crops for you); ``timestep`` t in (0, 1) (float or (b,) tensor).
- out: ``frame`` (b, 3, H, W); ``flow`` (b, 4, H, W) = (F_t->0 xy, F_t->1 xy) in pixels, i2v's backward-warp
  convention (:mod:`i2v.motion.warp`); ``mask`` (b, 1, H, W), the weight of the warped img0.

Versions. RIFE's releases differ in their feature head and number of blocks; this file implements the 4.25
layout only and :func:`i2v.models.rife.detect.version` tells the others apart from their keys, so a wrong file gets a clear
message instead of a shape error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...checkpoints import load_model, open_state_dict
from ...errors import CheckpointError, InputError
from ...motion.warp import backward_warp
from .detect import V425_WIDTHS, version

SUPPORTED_VERSIONS = ("4.25",)


@dataclass(frozen=True)
class Config:
    head_channels: int = 4  # features per frame from the ``encode`` head (4.25: 4; 4.13-4.21: 8)
    block_channels: tuple[int, ...] = V425_WIDTHS  # width c of block0..block4, coarse to fine
    block_scales: tuple[float, ...] = (16.0, 8.0, 4.0, 2.0, 1.0)  # block i works at 1/scale_i (times 1/scale)
    feat_channels: int = 8  # features a block hands to the next (13 outputs = 4 flow + 1 mask + 8 feat)
    res_convs: int = 8  # ResConv layers per block
    multiple: int = 128  # pad H, W to this at scale 1, as Practical-RIFE does (the network itself needs 64: /16, /4)

    @property
    def block0_in(self) -> int:  # img0, img1 (3+3), f0, f1, t (1)
        return 6 + 2 * self.head_channels + 1

    @property
    def block_in(self) -> int:  # warped img0/img1 (6), warped f0/f1, t (1), mask (1), feat, flow (4)
        return 6 + 2 * self.head_channels + 1 + 1 + self.feat_channels + 4

    @classmethod
    def from_state_dict(cls, shapes: dict[str, tuple]) -> "Config":
        """Infer the config from tensor shapes (key -> shape); raise CheckpointError naming the version if the
        keys are not RIFE 4.25's (:func:`i2v.models.rife.detect.version`)."""
        if not any(k.startswith("block0.") for k in shapes):
            raise CheckpointError(f"not a RIFE IFNet checkpoint: no 'block0.*' keys (found e.g. {sorted(shapes)[:3]})")
        found = version(shapes)
        if found != "4.25":
            raise CheckpointError(
                f"this is not a RIFE 4.25 checkpoint: its keys look like RIFE {found}. i2v supports RIFE {', '.join(SUPPORTED_VERSIONS)} "
                f"(IFNet_HDv3 with a 4-channel feature head and five blocks). Download flownet.pkl of RIFE 4.25 "
                f"from the Practical-RIFE releases")
        blocks = sorted(int(k.split(".")[0][5:]) for k in shapes if k.startswith("block") and k.endswith("conv0.1.0.weight"))
        widths = tuple(int(shapes[f"block{i}.conv0.1.0.weight"][0]) for i in blocks)
        res = len({k.split(".")[2] for k in shapes if k.startswith("block0.convblock.")})
        lastconv_out = int(shapes["block0.lastconv.0.weight"][1])  # ConvTranspose2d weight: (in, out, k, k)
        return cls(head_channels=int(shapes["encode.cnn3.weight"][1]), block_channels=widths,
                   block_scales=cls.block_scales[-len(widths):], feat_channels=lastconv_out // 4 - 5, res_convs=res)


def conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv + LeakyReLU(0.2); keys ``.0.weight``/``.0.bias`` as in the original."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.LeakyReLU(0.2))


class Head(nn.Module):
    """Feature head ``encode``: (b, 3, H, W) -> (b, head_channels, H, W); down by 2 then a transposed conv up."""

    def __init__(self, c_out: int = 4):
        super().__init__()
        self.cnn0 = nn.Conv2d(3, 16, 3, 2, 1)
        self.cnn1 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(16, c_out, 4, 2, 1)

    def forward(self, x):
        x = F.leaky_relu(self.cnn0(x), 0.2)  # (b, 16, H/2, W/2)
        x = F.leaky_relu(self.cnn1(x), 0.2)
        x = F.leaky_relu(self.cnn2(x), 0.2)
        return self.cnn3(x)  # (b, c_out, H, W)


class ResConv(nn.Module):
    """y = LeakyReLU(conv(x) * beta + x), beta a learned per-channel gain."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x):
        return F.leaky_relu(self.conv(x) * self.beta + x, 0.2)


class IFBlock(nn.Module):
    """One coarse-to-fine step at resolution 1/scale: returns (flow (b,4,H,W) in pixels, mask logit, feat)."""

    def __init__(self, c_in: int, c: int, feat_channels: int = 8, res_convs: int = 8):
        super().__init__()
        self.conv0 = nn.Sequential(conv(c_in, c // 2, 2), conv(c // 2, c, 2))  # /4
        self.convblock = nn.Sequential(*[ResConv(c) for _ in range(res_convs)])
        # ConvTranspose (x2) to 4*(4+1+feat) channels, PixelShuffle(2) (x2): back to the block's input size
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * (5 + feat_channels), 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x, flow=None, scale: float = 1.0):
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:  # flow in pixels: resizing by 1/scale divides the displacements by scale too
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
            x = torch.cat([x, flow], 1)
        out = self.lastconv(self.convblock(self.conv0(x)))  # (b, 4 + 1 + feat, H/scale, W/scale)
        out = F.interpolate(out, scale_factor=scale, mode="bilinear", align_corners=False)
        return out[:, :4] * scale, out[:, 4:5], out[:, 5:]


class IFNet(nn.Module):
    """RIFE 4.25 flow network. ``forward(img0, img1, t, scale)`` -> dict(frame, flow, mask, flows, masks)."""

    def __init__(self, config: Config = Config()):
        super().__init__()
        self.config = config
        cfg = config
        self.encode = Head(cfg.head_channels)
        for i, c in enumerate(cfg.block_channels):
            c_in = cfg.block0_in if i == 0 else cfg.block_in
            setattr(self, f"block{i}", IFBlock(c_in, c, cfg.feat_channels, cfg.res_convs))

    @property
    def blocks(self) -> list[IFBlock]:
        return [getattr(self, f"block{i}") for i in range(len(self.config.block_channels))]

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, timestep=0.5, scale: float = 1.0) -> dict:
        """``img0``, ``img1``: (b, 3, H, W) in [0, 1], H, W multiples of multiple/scale. ``scale`` < 1 runs every
        block at a coarser resolution (for 4K: 0.5). Returns the final ``frame``, ``flow``, ``mask`` and the
        per-block ``flows`` / ``masks`` (sigmoid) / ``frames`` for teaching."""
        b, _, h, w = img0.shape
        t = torch.as_tensor(timestep, dtype=img0.dtype, device=img0.device).reshape(-1, 1, 1, 1)
        t = t.expand(b, 1, h, w)  # the timestep as a constant image (b, 1, H, W)
        f0, f1 = self.encode(img0), self.encode(img1)  # (b, head, H, W)
        flow = mask = feat = None
        flows, masks, frames = [], [], []
        for block, s in zip(self.blocks, self.config.block_scales):
            s = s / scale
            if flow is None:
                flow, mask, feat = block(torch.cat([img0, img1, f0, f1, t], 1), None, scale=s)
            else:
                wf0, wf1 = backward_warp(f0, flow[:, :2]), backward_warp(f1, flow[:, 2:4])
                x = torch.cat([warped0, warped1, wf0, wf1, t, mask, feat], 1)
                d_flow, mask, feat = block(x, flow, scale=s)
                flow = flow + d_flow  # each block refines the flow with a residual
            warped0 = backward_warp(img0, flow[:, :2])  # I_0(p + F_t->0(p))
            warped1 = backward_warp(img1, flow[:, 2:4])  # I_1(p + F_t->1(p))
            m = torch.sigmoid(mask)
            flows.append(flow)
            masks.append(m)
            frames.append(warped0 * m + warped1 * (1 - m))  # I_t = M I_0(warped) + (1 - M) I_1(warped)
        return {"frame": frames[-1], "flow": flow, "mask": masks[-1], "flows": flows, "masks": masks, "frames": frames}


def load(path: str | os.PathLike, device="cpu", dtype: torch.dtype = torch.float32) -> IFNet:
    """Load a released RIFE 4.25 ``flownet.pkl`` (torch pickle, read with weights_only=True; the ``module.``
    prefix DataParallel added is dropped). Strict: every tensor of the file is used (:func:`load_into`)."""
    sd = open_state_dict(path).strip_common_prefix(("module.",))
    try:
        cfg = Config.from_state_dict(sd.shapes)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    model = load_model(IFNet, cfg, sd, dtype=dtype, device=device,
              hint="Is this a training checkpoint (teacher/caltime) or another model?")
    return model.eval()


SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # the values Practical-RIFE offers; 0.5 for 4K, 2 for small inputs


def pad_multiple(model: IFNet, scale: float) -> int:
    """Inputs are padded to a multiple of this. Block 0 works at 1/(16/scale) of the input, then halves it twice
    and doubles it twice, so H * scale / 16 must be a multiple of 4: H a multiple of 64/scale. Practical-RIFE pads
    to max(128, 128/scale), more than needed below scale 1; we pad to max(128, 64/scale), which equals it at
    scale >= 1 and pads less (so differs from it only near the padded border) below."""
    return max(model.config.multiple, int(model.config.multiple / 2 / scale))


@torch.no_grad()
def interpolate(model: IFNet, img0: torch.Tensor, img1: torch.Tensor, t=0.5, scale: float = 1.0) -> dict:
    """Pad (b, 3, H, W) inputs in [0, 1] with zeros at the right/bottom to the model's multiple, run the network,
    crop back. Returns dict(frame, flow, mask) at the input size."""
    if img0.shape != img1.shape or img0.ndim != 4 or img0.shape[1] != 3:
        raise InputError(f"expected two (b, 3, H, W) images of the same shape, got {tuple(img0.shape)} and {tuple(img1.shape)}")
    if scale not in SCALES:
        raise InputError(f"RIFE scale must be one of {SCALES} (1.0 up to 1080p, 0.5 for 4K), got {scale}")
    h, w = img0.shape[-2:]
    m = pad_multiple(model, scale)
    ph, pw = -h % m, -w % m
    x0 = F.pad(img0, (0, pw, 0, ph))
    x1 = F.pad(img1, (0, pw, 0, ph))
    out = model(x0, x1, t, scale)
    return {k: out[k][..., :h, :w] for k in ("frame", "flow", "mask")}
