"""A small factorised 3D U-Net for image-to-video: the built-in model's first backbone.

Design after the video U-Nets of VDM (Ho et al. 2022, "Video Diffusion Models") and SVD (Blattmann et al.
2023, `sgm/modules/diffusionmodules/video_model.py` in Stability-AI/generative-models): every 2D layer
works on frames independently, and each block adds a *temporal* layer that mixes frames at the same pixel.
Temporal layers end in a zero-initialised projection, so at initialisation the network is an image U-Net
applied frame by frame (the lucidrains/VDM identity trick).

Pixels are folded 4x4 into channels first (a fixed, lossless ``pixel_unshuffle``; no learned autoencoder), so
a 64x64 clip is a 16x16 grid of 96 channels (48 noisy + 48 conditioning).

Layouts::

    x (b, 3, t, H, W) + first frame (b, 3, H, W)      H = W = 64
      -> (b t) 6 H W -> pixel_unshuffle(p) -> (b t) 6p^2 H/p W/p
      -> levels [c0 @ H/p, c1 @ H/2p, c2 @ H/4p]: ResBlock(+temporal conv) [+ spatial attn] + temporal attn
      -> conv_out(cat[features, unshuffled input]) -> pixel_shuffle(p) -> (b, 3, t, H, W)
      [warp_head: + WarpHead(first frame; affine from the conditioning, flow from a second zero-init conv)]
      [warp_mask: + a third conv's mask; returns Proposal(F, moved first frame, mask) for the Denoiser to blend]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...errors import ConfigError, InputError
from ...nn.attention import attention
from ...nn.embeddings import timestep_embedding
from .heads import MASK_INIT, NULL_MOTION, ConditionEmbedding, WarpHead, build, require

HEAD_DIM = 32  # attention head width; fixed (heads = channels // 32) because head counts leave no trace in shapes


@dataclass
class UNet3DConfig:
    channels: tuple[int, ...] = (64, 96, 128)  # width per level; each level halves the resolution
    spatial_attention: tuple[bool, ...] = (False, True, True)  # self-attention over h*w (costly at level 0)
    patch: int = 4  # pixel_unshuffle factor: 64x64 frames become a 16x16 grid
    emb_dim: int = 128  # conditioning vector (noise level + motion + speed + frame index)
    num_motions: int = NULL_MOTION + 1  # motion classes + the null label for guidance
    warp_head: bool = False  # add backbone.WarpHead: the output also moves the first frame's pixels
    warp_mask: bool = False  # (with warp_head) blend the moved frame into D by a predicted per-pixel mask

    @classmethod
    def from_state_dict(cls, shapes: dict) -> "UNet3DConfig":
        """Read the config off tensor shapes, key -> shape (the stable-diffusion.cpp way)."""
        what = "UNet3D"
        conv_in = require(shapes, "conv_in.weight", what)  # (c0, 6 p^2, 3, 3)
        patch = int(round((conv_in[1] / 6) ** 0.5))
        channels = []
        while f"down.{len(channels)}.res.conv1.weight" in shapes:
            channels.append(shapes[f"down.{len(channels)}.res.conv1.weight"][0])
        if not channels:
            require(shapes, "down.0.res.conv1.weight", what)
        spatial = tuple(f"down.{i}.spatial.qkv.weight" in shapes for i in range(len(channels)))
        emb = require(shapes, "embed.motion_embed.weight", what)  # (num_motions, emb_dim)
        return cls(channels=tuple(channels), spatial_attention=spatial, patch=patch, emb_dim=emb[1],
                   num_motions=emb[0], warp_head="warp.affine.weight" in shapes, warp_mask="mask_out.weight" in shapes)


def group_norm(c: int) -> nn.GroupNorm:
    """torch's GroupNorm with min(32, c/4) groups (at least 4 channels per group on the narrow levels); the shipped
    weights were trained with this exact kernel, so their documented training reproduces bit for bit."""
    return nn.GroupNorm(min(32, c // 4), c)


class ResBlock(nn.Module):
    """Spatial residual block with the conditioning as scale/shift (FiLM), then a temporal residual conv::

        h = conv(SiLU(GN(x))); h = GN(h) * (1 + scale) + shift; h = conv(SiLU(h)); x = skip(x) + h
        x = x + conv1d_t(SiLU(GN(x)))          (zero-initialised: identity at init)
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.time_norm = group_norm(c_out)
        self.time_conv = nn.Conv1d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.time_conv.weight)
        nn.init.zeros_(self.time_conv.bias)

    def forward(self, x, emb, t: int):
        # x: (b t) c h w, emb: (b t) d
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        x = self.skip(x) + h
        b, hh, ww = x.shape[0] // t, x.shape[2], x.shape[3]
        z = rearrange(F.silu(self.time_norm(x)), "(b t) c h w -> (b h w) c t", t=t)
        z = self.time_conv(z)
        return x + rearrange(z, "(b h w) c t -> (b t) c h w", b=b, h=hh, w=ww)


class Attention(nn.Module):
    """Multi-head self-attention over the last-but-one axis of (n, seq, c); output projection zero-initialised."""

    def __init__(self, c: int):
        super().__init__()
        self.heads = max(1, c // HEAD_DIM)
        self.norm = nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x, pos=None):
        h = self.norm(x) if pos is None else self.norm(x) + pos
        q, k, v = self.qkv(h).chunk(3, dim=-1)  # (n, s, c) each
        return x + self.proj(attention(q, k, v, heads=self.heads))  # softmax(q k^T / sqrt(d)) v


def frame_positions(t: int, c: int, device, dtype) -> torch.Tensor:
    """(t, c) sinusoidal frame-index encoding added to the temporal attention's input."""
    return timestep_embedding(torch.arange(t, device=device, dtype=torch.float32), c).to(dtype)


class Level(nn.Module):
    """One U-Net stage: ResBlock, optional spatial attention, temporal attention (identity at init)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, spatial: bool):
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim)
        self.spatial = Attention(c_out) if spatial else None
        self.temporal = Attention(c_out)

    def forward(self, x, emb, t: int):
        x = self.res(x, emb, t)
        bt, c, h, w = x.shape
        if self.spatial is not None:
            x = rearrange(self.spatial(rearrange(x, "n c h w -> n (h w) c")), "n (h w) c -> n c h w", h=h)
        z = rearrange(x, "(b t) c h w -> (b h w) t c", t=t)
        z = self.temporal(z, pos=frame_positions(t, c, x.device, x.dtype))
        return rearrange(z, "(b h w) t c -> (b t) c h w", h=h, w=w)


class UNet3D(nn.Module):
    Config = UNet3DConfig

    def __init__(self, config: UNet3DConfig | None = None):
        super().__init__()
        self.config = cfg = config or UNet3DConfig()
        ch = cfg.channels
        self.embed = ConditionEmbedding(cfg.emb_dim, cfg.num_motions)
        self.conv_in = nn.Conv2d(6 * cfg.patch**2, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        for i, c in enumerate(ch):
            self.down.append(Level(ch[max(i - 1, 0)], c, cfg.emb_dim, cfg.spatial_attention[i]))
        self.up = nn.ModuleList()  # coarsest first; input = previous level output (upsampled) + skip
        for i in reversed(range(len(ch))):
            c_prev = ch[min(i + 1, len(ch) - 1)]  # the coarsest level gets its own down output
            self.up.append(Level(c_prev + ch[i], ch[i], cfg.emb_dim, cfg.spatial_attention[i]))
        self.norm_out = group_norm(ch[0])
        # the output conv also sees the unshuffled input itself: 48 noisy values per cell cannot squeeze through
        # c0 = 64 features, and low-noise denoising needs every one of them (a long skip connection)
        self.conv_out = nn.Conv2d(ch[0] + 6 * cfg.patch**2, 3 * cfg.patch**2, 3, padding=1)
        zero = [self.conv_out]
        if cfg.warp_head:
            self.warp = WarpHead(cfg.emb_dim, mask=cfg.warp_mask)
            self.flow_out = nn.Conv2d(ch[0] + 6 * cfg.patch**2, 2 * cfg.patch**2, 3, padding=1)  # residual flow
            zero.append(self.flow_out)
        if cfg.warp_mask:
            if not cfg.warp_head:
                raise ConfigError("unet.warp_mask needs unet.warp_head = true (the mask blends the head's moved frame)")
            self.mask_out = nn.Conv2d(ch[0] + 6 * cfg.patch**2, cfg.patch**2, 3, padding=1)  # mask logit per pixel
        for m in zero:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        if cfg.warp_mask:
            nn.init.zeros_(self.mask_out.weight)
            nn.init.constant_(self.mask_out.bias, MASK_INIT)

    @property
    def multiple(self) -> int:
        """Frame sides must be multiples of this: patch * 2^(levels - 1), the pixels per cell of the coarsest grid
        (16 for the shipped weights). Any such height and width works, square or not."""
        return self.config.patch * 2 ** (len(self.config.channels) - 1)

    def forward(self, x, c_noise, *, first_frame, motion, speed):
        b, _, t, H, W = x.shape
        p, k = self.config.patch, self.multiple
        if H % k or W % k:
            raise InputError(f"UNet3D needs height and width divisible by {k}, got {H}x{W}")
        emb = self.embed(c_noise, motion, speed, t)  # (b t) d
        cond = first_frame[:, :, None].expand(-1, -1, t, -1, -1)  # (b, 3, h, w) -> (b, 3, t, h, w)
        h = rearrange(torch.cat([x, cond.to(x.dtype)], dim=1), "b c t h w -> (b t) c h w")
        h_in = F.pixel_unshuffle(h, p)  # (b t) 6 H W -> (b t) 6p^2 H/p W/p
        h = self.conv_in(h_in)  # -> (b t) c0 H/p W/p
        skips = []
        for i, level in enumerate(self.down):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            h = level(h, emb, t)
            skips.append(h)
        for j, level in enumerate(self.up):
            if j > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = level(torch.cat([h, skips.pop()], dim=1), emb, t)
        h = torch.cat([F.silu(self.norm_out(h)), h_in], dim=1)  # (b t) c0+6p^2 H/p W/p
        out = F.pixel_shuffle(self.conv_out(h), p)  # (b t) 3p^2 H/p W/p -> (b t) 3 H W
        if self.config.warp_head:
            mask_logit = F.pixel_shuffle(self.mask_out(h), p) if self.config.warp_mask else None
            return self.warp.output(out, first_frame, emb, F.pixel_shuffle(self.flow_out(h), p), mask_logit, t)
        return rearrange(out, "(b t) c h w -> b c t h w", t=t)

    @classmethod
    def from_state_dict(cls, sd, source: str | None = None) -> "UNet3D":
        """Build the model the tensors describe (on the meta device) and load them strictly, in float32."""
        return build(cls, UNet3DConfig, sd, source)
