"""The SVD autoencoder: the KL-VAE encoder of Latent Diffusion and SVD's temporal video decoder.

Papers: Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models" (the KL autoencoder,
8x downsampling, 4 latent channels); Blattmann et al. 2023, "Stable Video Diffusion" (the decoder fine-tuned with
temporal layers so decoded frames do not flicker).
Original code: Stability-AI/generative-models, ``sgm/modules/diffusionmodules/model.py`` (``Encoder``,
``Decoder``, ``ResnetBlock``, ``AttnBlock``) and ``sgm/modules/autoencoding/temporal_ae.py`` (``VideoDecoder``,
``VideoResBlock``, ``AE3DConv``).

Layouts::

    encode:  image (b, 3, H, W) in [-1, 1]  ->  moments (b, 2*z, H/8, W/8)  ->  mode = mean = moments[:, :z]
    decode:  latents ((b t), z, h, w)       ->  frames ((b t), 3, 8h, 8w), frames folded into the batch;
             the temporal layers unfold them with ``timesteps`` = frames per clip (the decode chunk length).

Attribute names equal the checkpoint keys below ``first_stage_model.`` (single file) so loading is a strict
``load_into``; the diffusers layout is renamed in :mod:`i2v.models.svd.checkpoint`.

Normalisation (checked against the original): GroupNorm(32, eps=1e-6) in every spatial block of encoder and
decoder; GroupNorm(32, eps=1e-5) inside the decoder's temporal ``time_stack`` blocks. The original's autoencoder uses
torch's own ``nn.GroupNorm`` (its U-Net upcasts in ``GroupNorm32``), and so does this file: same kernel, same rounding.

Temporal mixing in the decoder (``VideoResBlock``): ``x = a * temporal + (1 - a) * spatial`` with
``a = sigmoid(mix_factor)`` -- the other way round from the U-Net's AlphaBlender.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...errors import CheckpointError
from ...nn.attention import attention
from ...nn.conv import TemporalConv


@dataclass
class SVDVAEConfig:
    ch: int = 128                        # base channel count; level i has ch * ch_mult[i] channels
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)  # len(ch_mult) levels, len - 1 down/upsamplings (8x for SVD)
    num_res_blocks: int = 2              # per encoder level; the decoder has one more per level
    in_channels: int = 3                 # RGB
    z_channels: int = 4                  # latent channels (the encoder outputs 2 * z: mean and log-variance)
    video_kernel_size: tuple[int, int, int] = (3, 1, 1)  # (t, h, w) kernel of the decoder's temporal convs
    encoder: bool = True                 # which parts the checkpoint holds
    decoder: bool = True
    quant_conv: bool = False             # 1x1 conv on the moments (LDM AutoencoderKL; absent in SVD's first stage)
    post_quant_conv: bool = False        # 1x1 conv before the decoder

    @classmethod
    def from_state_dict(cls, shapes: dict, where: str = "VAE") -> "SVDVAEConfig":
        """Infer the config from tensor shapes, key -> shape (keys in this module's names, e.g.
        ``encoder.conv_in.weight``)."""
        sd = shapes
        enc, dec = "encoder.conv_in.weight" in sd, "decoder.conv_in.weight" in sd
        if not (enc or dec):
            raise CheckpointError(f"{where}: no encoder.conv_in.weight or decoder.conv_in.weight: not a KL autoencoder")
        side = "encoder" if enc else "decoder"
        levels = sorted({int(m.group(1)) for k in sd for m in [re.match(rf"{side}\.(?:down|up)\.(\d+)\.", k)] if m})
        blocks = {int(m.group(1)) for k in sd for m in [re.match(rf"{side}\.(?:down|up)\.0\.block\.(\d+)\.", k)] if m}
        if not levels or not blocks:
            raise CheckpointError(f"{where}: found {side}.conv_in but no {side}.down/up.N.block.M tensors")
        if enc:
            ch, in_ch = sd["encoder.conv_in.weight"][:2]
            mult = tuple(sd[f"encoder.down.{i}.block.0.conv2.weight"][0] // ch for i in levels)
            z = sd["encoder.conv_out.weight"][0] // 2
            nrb = len(blocks)
        else:
            ch = sd["decoder.norm_out.weight"][0]
            in_ch = sd["decoder.conv_out.weight"][0]
            mult = tuple(sd[f"decoder.up.{i}.block.0.conv2.weight"][0] // ch for i in levels)
            z = sd["decoder.conv_in.weight"][1]
            nrb = len(blocks) - 1
        kernel = (3, 1, 1)
        if "decoder.conv_out.time_mix_conv.weight" in sd:
            kernel = tuple(sd["decoder.conv_out.time_mix_conv.weight"][2:])
        return cls(ch=int(ch), ch_mult=mult, num_res_blocks=nrb, in_channels=int(in_ch), z_channels=int(z),
                   video_kernel_size=kernel, encoder=enc, decoder=dec, quant_conv="quant_conv.weight" in sd,
                   post_quant_conv="post_quant_conv.weight" in sd)


class ResnetBlock(nn.Module):
    """LDM ResnetBlock without time embedding: x + conv2(silu(norm2(conv1(silu(norm1(x))))))."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(32, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))  # dropout = 0 at inference
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class TimeStack(nn.Module):
    """openaimodel ResBlock with dims=3 and no time embedding, on (b, c, t, h, w); names follow the checkpoint
    (``in_layers.{0,2}``, ``out_layers.{0,3}``; the missing indices are SiLU and Dropout)."""

    def __init__(self, c: int, kernel: tuple[int, int, int]):
        super().__init__()
        pad = tuple(k // 2 for k in kernel)
        self.in_layers = nn.Sequential(nn.GroupNorm(32, c, eps=1e-5), nn.SiLU(), TemporalConv(c, c, kernel, padding=pad))
        self.out_layers = nn.Sequential(nn.GroupNorm(32, c, eps=1e-5), nn.SiLU(), nn.Identity(),
                                        TemporalConv(c, c, kernel, padding=pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out_layers(self.in_layers(x))


class VideoResBlock(ResnetBlock):
    """Spatial ResnetBlock, then a temporal ResBlock over the frames, blended by a learned alpha:
    x = a * temporal(x_s) + (1 - a) * x_s,  a = sigmoid(mix_factor)   (sgm VideoResBlock, merge 'learned')."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int]):
        super().__init__(cin, cout)
        self.time_stack = TimeStack(cout, kernel)
        self.mix_factor = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, timesteps: int) -> torch.Tensor:
        x = super().forward(x)
        x = rearrange(x, "(b t) c h w -> b c t h w", t=timesteps)
        a = torch.sigmoid(self.mix_factor)
        x = a * self.time_stack(x) + (1 - a) * x
        return rearrange(x, "b c t h w -> (b t) c h w")


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions, 1x1 convs for q, k, v and the output."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.GroupNorm(32, c, eps=1e-6)
        self.q, self.k, self.v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (rearrange(f(hn), "b c h w -> b 1 (h w) c") for f in (self.q, self.k, self.v))
        out = attention(q, k, v)  # one head: softmax(q k^T / sqrt(c)) v
        out = rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one zero row/column at the bottom/right (LDM's asymmetric padding)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ``block`` (ResNet blocks) and an optional ``downsample`` / ``upsample``."""


class Mid(nn.Module):
    """Middle of encoder/decoder: block_1, attn_1, block_2."""


class Encoder(nn.Module):
    """LDM Encoder: conv_in, levels of ResNet blocks with stride-2 downsampling, mid (res-attn-res), norm, conv_out
    to 2*z channels (mean, log-variance)."""

    def __init__(self, cfg: SVDVAEConfig):
        super().__init__()
        ch, mult = cfg.ch, cfg.ch_mult
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = ch
        for i, m in enumerate(mult):
            level = Level()
            level.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(cin, ch * m))
                cin = ch * m
            if i != len(mult) - 1:
                level.downsample = Downsample(cin)
            self.down.append(level)
        self.mid = Mid()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = ResnetBlock(cin, cin), AttnBlock(cin), ResnetBlock(cin, cin)
        self.norm_out = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv_out = nn.Conv2d(cin, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (b, ch, H, W)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)  # (b, c, H/2, W/2)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))  # (b, 2z, H/8, W/8)


class AE3DConv(nn.Conv2d):
    """The decoder's last conv: a 3x3 Conv2d per frame, then ``time_mix_conv``, a Conv3d over (t, h, w)
    (no blending: its output is the output)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int]):
        super().__init__(cin, cout, 3, padding=1)
        self.time_mix_conv = TemporalConv(cout, cout, kernel, padding=tuple(k // 2 for k in kernel))

    def forward(self, x: torch.Tensor, timesteps: int) -> torch.Tensor:
        x = super().forward(x)
        x = rearrange(x, "(b t) c h w -> b c t h w", t=timesteps)
        return rearrange(self.time_mix_conv(x), "b c t h w -> (b t) c h w")


class VideoDecoder(nn.Module):
    """sgm VideoDecoder (time_mode 'conv-only'): LDM Decoder whose ResNet blocks are VideoResBlocks and whose
    conv_out is an AE3DConv; the attention block stays spatial."""

    def __init__(self, cfg: SVDVAEConfig):
        super().__init__()
        ch, mult, kernel = cfg.ch, cfg.ch_mult, cfg.video_kernel_size
        cin = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = Mid()
        self.mid.block_1 = VideoResBlock(cin, cin, kernel)
        self.mid.attn_1 = AttnBlock(cin)
        self.mid.block_2 = VideoResBlock(cin, cin, kernel)
        up = []
        for i in reversed(range(len(mult))):  # built deepest first, stored so that up[0] is the full resolution
            level = Level()
            level.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(VideoResBlock(cin, ch * mult[i], kernel))
                cin = ch * mult[i]
            if i != 0:
                level.upsample = Upsample(cin)
            up.insert(0, level)
        self.up = nn.ModuleList(up)
        self.norm_out = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv_out = AE3DConv(cin, cfg.in_channels, kernel)

    def forward(self, z: torch.Tensor, timesteps: int) -> torch.Tensor:
        h = self.conv_in(z)  # ((b t), c, h, w)
        h = self.mid.block_1(h, timesteps)
        h = self.mid.attn_1(h)
        h = self.mid.block_2(h, timesteps)
        for level in reversed(self.up):
            for block in level.block:
                h = block(h, timesteps)
            if hasattr(level, "upsample"):
                h = level.upsample(h)  # ((b t), c, 2h, 2w)
        return self.conv_out(F.silu(self.norm_out(h)), timesteps)  # ((b t), 3, H, W)


class SVDVAE(nn.Module):
    """Encoder (+ optional quant_conv) and temporal decoder (+ optional post_quant_conv); either may be absent
    (the conditioning copy in the single file is used for its encoder only)."""

    def __init__(self, cfg: SVDVAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg) if cfg.encoder else None
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1) if cfg.quant_conv else None
        self.decoder = VideoDecoder(cfg) if cfg.decoder else None
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1) if cfg.post_quant_conv else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) in [-1, 1] -> the posterior's mode (= mean), (b, z, H/8, W/8). Not scaled."""
        if self.encoder is None:
            raise CheckpointError("this autoencoder was loaded without its encoder")
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, _logvar = moments.chunk(2, dim=1)  # diagonal Gaussian: mode = mean
        return mean

    def decode(self, z: torch.Tensor, timesteps: int) -> torch.Tensor:
        """((b t), z, h, w) -> ((b t), 3, 8h, 8w), not clamped; ``timesteps`` = frames per clip in this call."""
        if self.decoder is None:
            raise CheckpointError("this autoencoder was loaded without its decoder")
        if z.shape[0] % timesteps:
            raise ValueError(f"batch of {z.shape[0]} latents is not a multiple of timesteps={timesteps}")
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z, timesteps)
