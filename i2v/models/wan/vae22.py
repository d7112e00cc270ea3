"""The Wan2.2 VAE: 4x16x16 compression to 48 channels (the TI2V-5B model's VAE).

Paper: Wan Team, "Wan: Open and Advanced Large-Scale Video Generative Models" (arXiv:2503.20314) and the Wan2.2
release notes (a high-compression VAE, 4x16x16 at 48 channels). Original code: github.com/Wan-Video/Wan2.2,
``wan/modules/vae2_2.py`` (``patchify``, ``AvgDown3D``, ``DupUp3D``, ``Down_ResidualBlock``,
``Up_ResidualBlock``, ``Encoder3d``, ``Decoder3d``, ``WanVAE_``, ``Wan2_2_VAE``). Attribute names equal the keys
of the released ``Wan2.2_VAE.pth``.

What is new against Wan2.1 (:mod:`.vae`, whose causal convolution, cache, norm, residual, attention and
Resample layers are used here unchanged):

- a 2x2 pixel patchify before the encoder (3 -> 12 channels at H/2, W/2) and its inverse after the decoder, so the
  8x network gives 16x;
- each encoder stage is a ``Down_ResidualBlock``: its residual blocks and down-Resample, plus a parameter-free
  shortcut around the whole stage that averages groups of channels of space-to-channel folded pixels
  (``AvgDown3D``); each decoder stage likewise adds ``DupUp3D``, which duplicates channels and unfolds them into
  space (and time), to its residual blocks and up-Resample;
- the decoder's up-Resamples keep the width (2.1 halves it), and a separate decoder width (``dec_dim`` 256,
  encoder 160);
- 48 latent channels with their own mean/std.

Layouts: video (b, 3, 1 + 4k, H, W), H and W multiples of 16 -> latents (b, 48, 1 + k, H/16, W/16).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import nn

from ...errors import CheckpointError
from .vae import (add, CausalCache, CausalConv3d, CausalVideoVAE, Head, Resample, ResidualBlock, middle,
                  require_wan_vae, run_frame_by_frame)

# Per-channel mean / std of the 48 latent channels, from the original ``Wan2_2_VAE.__init__`` (Wan2.2
# wan/modules/vae2_2.py).
WAN22_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667)
WAN22_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744)

PATCH = 2  # the 2x2 pixel patchify of the original (its encoder's first conv takes 3 * 2 * 2 = 12 channels)


@dataclass(frozen=True)
class Wan22VAEConfig:
    dim: int = 160  # encoder base width (stage i: dim * dim_mult[i])
    dec_dim: int = 256  # decoder base width
    z_dim: int = 48  # latent channels
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)  # 3 spatial halvings (8x) after the 2x patchify: 16x
    num_res_blocks: int = 2  # per encoder stage; the decoder has one more
    temperal_downsample: tuple[bool, ...] = (False, True, True)  # which halvings also halve time (4x); sic

    @property
    def spatial_stride(self) -> int:  # of the network, after the patchify
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(self.temperal_downsample)

    @classmethod
    def from_state_dict(cls, shapes: dict[str, tuple]) -> "Wan22VAEConfig":
        """The config from tensor shapes (original ``Wan2.2_VAE.pth`` keys)."""
        require_wan_vae(shapes, "2.2")
        dim = shapes["encoder.conv1.weight"][0]
        stages = sorted({int(m.group(1)) for k in shapes
                         for m in [re.match(r"encoder\.downsamples\.(\d+)\.downsamples\.", k)] if m})
        blocks = {int(m.group(1)) for k in shapes
                  for m in [re.match(r"encoder\.downsamples\.0\.downsamples\.(\d+)\.residual\.", k)] if m}
        if not stages or not blocks:
            raise CheckpointError("Wan2.2 VAE: no encoder.downsamples.i.downsamples.j residual blocks")
        nrb = len(blocks)
        mult = tuple(shapes[f"encoder.downsamples.{i}.downsamples.0.residual.2.weight"][0] // dim for i in stages)
        temporal = tuple(f"encoder.downsamples.{i}.downsamples.{nrb}.time_conv.weight" in shapes for i in stages[:-1])
        return cls(dim=dim, dec_dim=shapes["decoder.head.0.gamma"][0] // mult[0], z_dim=shapes["conv2.weight"][0],
                   dim_mult=mult, num_res_blocks=nrb, temperal_downsample=temporal)


def patchify(x: torch.Tensor) -> torch.Tensor:
    """(b, 3, t, H, W) -> (b, 12, t, H/2, W/2): each 2x2 block of pixels into channels, in the original's order."""
    return rearrange(x, "b c t (h q) (w r) -> b (c r q) t h w", q=PATCH, r=PATCH)


def unpatchify(x: torch.Tensor) -> torch.Tensor:
    return rearrange(x, "b (c r q) t h w -> b c t (h q) (w r)", q=PATCH, r=PATCH)


class AvgDown3D(nn.Module):
    """The parameter-free shortcut of a down stage: fold ``factor_t`` x ``factor_s`` x ``factor_s`` neighbours
    into channels (time padded in front with zeros to a multiple of factor_t), then average groups of
    c_in * factor / c_out consecutive channels: (b, c_in, t, h, w) -> (b, c_out, t/ft, h/fs, w/fs)."""

    def __init__(self, c_in: int, c_out: int, factor_t: int, factor_s: int = 1):
        super().__init__()
        self.c_out, self.ft, self.fs = c_out, factor_t, factor_s
        assert c_in * factor_t * factor_s ** 2 % c_out == 0

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        pad_t = -x.shape[2] % self.ft
        if pad_t:  # frame 0 of the clip (a 1-frame first chunk) is paired with a zero frame before it
            x = F.pad(x, (0, 0, 0, 0, pad_t, 0))
        x = rearrange(x, "b c (t ft) (h fh) (w fw) -> b (c ft fh fw) t h w", ft=self.ft, fh=self.fs, fw=self.fs)
        return reduce(x, "b (c g) t h w -> b c t h w", "mean", c=self.c_out)


class DupUp3D(nn.Module):
    """The parameter-free shortcut of an up stage, the transpose of AvgDown3D: repeat each channel
    c_out * factor / c_in times, unfold into factor_t x factor_s x factor_s neighbours; on the clip's first
    chunk drop the first factor_t - 1 frames (frame 0 becomes one frame, as in the main path)."""

    def __init__(self, c_in: int, c_out: int, factor_t: int, factor_s: int = 1):
        super().__init__()
        self.c_out, self.ft, self.fs = c_out, factor_t, factor_s
        self.repeats = c_out * factor_t * factor_s ** 2 // c_in

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = repeat(x, "b c t h w -> b (c r) t h w", r=self.repeats)
        x = rearrange(x, "b (c ft fh fw) t h w -> b c (t ft) (h fh) (w fw)", ft=self.ft, fh=self.fs, fw=self.fs)
        if cache is None or cache.starts(self):
            x = x[:, :, self.ft - 1:]
        return x


class Down_ResidualBlock(nn.Module):
    """An encoder stage: residual blocks, then a down-Resample (all stages but the last), plus AvgDown3D of the
    stage's input. Keys ``downsamples.j`` as the original."""

    def __init__(self, c_in: int, c_out: int, blocks: int, temporal: bool, down: bool):
        super().__init__()
        self.avg_shortcut = AvgDown3D(c_in, c_out, factor_t=2 if temporal else 1, factor_s=2 if down else 1)
        layers = []
        for _ in range(blocks):
            layers.append(ResidualBlock(c_in, c_out))
            c_in = c_out
        if down:
            layers.append(Resample(c_out, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        shortcut = self.avg_shortcut(x)
        for layer in self.downsamples:
            x = layer(x, cache)
        return add(x, shortcut)


class Up_ResidualBlock(nn.Module):
    """A decoder stage: residual blocks, then an up-Resample that keeps the width (all stages but the last),
    plus DupUp3D of the stage's input on the stages that upsample. Keys ``upsamples.j`` as the original."""

    def __init__(self, c_in: int, c_out: int, blocks: int, temporal: bool, up: bool):
        super().__init__()
        self.avg_shortcut = DupUp3D(c_in, c_out, factor_t=2 if temporal else 1, factor_s=2) if up else None
        layers = []
        for _ in range(blocks):
            layers.append(ResidualBlock(c_in, c_out))
            c_in = c_out
        if up:
            layers.append(Resample(c_out, "upsample3d" if temporal else "upsample2d", out_dim=c_out))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        y = x
        for layer in self.upsamples:
            y = layer(y, cache)
        if self.avg_shortcut is None:
            return y
        shortcut = self.avg_shortcut(x, cache)  # after the main path: the upsampled copy is not held meanwhile
        return add(y, shortcut)


class Encoder3d(nn.Module):
    """(b, 12, 1 + 4k, H/2, W/2) -> (b, 2 z, 1 + k, H/16, W/16)."""

    def __init__(self, cfg: Wan22VAEConfig):
        super().__init__()
        dims = [cfg.dim * m for m in (1, *cfg.dim_mult)]
        last = len(cfg.dim_mult) - 1
        self.conv1 = CausalConv3d(3 * PATCH * PATCH, dims[0], 3, padding=1)
        self.downsamples = nn.Sequential(*(
            Down_ResidualBlock(c_in, c_out, cfg.num_res_blocks, temporal=i < last and cfg.temperal_downsample[i],
                               down=i != last)
            for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:]))))
        self.middle = middle(dims[-1])
        self.head = Head(dims[-1], 2 * cfg.z_dim)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.conv1(x, cache)
        for layer in (*self.downsamples, *self.middle):
            x = layer(x, cache)
        return self.head(x, cache)


class Decoder3d(nn.Module):
    """(b, z, 1 + k, h, w) -> (b, 12, 1 + 4k, 8h, 8w) (unpatchified to (b, 3, 1 + 4k, 16h, 16w) by the VAE)."""

    def __init__(self, cfg: Wan22VAEConfig):
        super().__init__()
        dims = [cfg.dec_dim * m for m in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
        temporal_up = cfg.temperal_downsample[::-1]
        last = len(cfg.dim_mult) - 1
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = middle(dims[0])
        self.upsamples = nn.Sequential(*(
            Up_ResidualBlock(c_in, c_out, cfg.num_res_blocks + 1, temporal=i < last and temporal_up[i], up=i != last)
            for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:]))))
        self.head = Head(dims[-1], 3 * PATCH * PATCH)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        return run_frame_by_frame((self.conv1, *self.middle, *self.upsamples, self.head), x, cache)


class Wan22VAE(CausalVideoVAE):
    """The Wan2.2 VAE (``Wan2.2_VAE.pth``, 705 M parameters): 4x16x16 compression to 48 channels, used by
    Wan2.2 TI2V-5B. Same API as :class:`~i2v.models.wan.vae.Wan21VAE`."""

    version = "2.2"
    patch_size = PATCH
    MEAN, STD = WAN22_MEAN, WAN22_STD
    Config = Wan22VAEConfig

    def __init__(self, config: Wan22VAEConfig = Wan22VAEConfig()):
        super().__init__()
        self.config = config
        z = config.z_dim
        self.encoder = Encoder3d(config)
        self.conv1 = CausalConv3d(2 * z, 2 * z, 1)
        self.conv2 = CausalConv3d(z, z, 1)
        self.decoder = Decoder3d(config)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        return patchify(x)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        return unpatchify(x)
