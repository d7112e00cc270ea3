"""The Wan2.1 causal 3D VAE, and the causal machinery it shares with the Wan2.2 VAE (:mod:`.vae22`).

Paper: Wan Team, "Wan: Open and Advanced Large-Scale Video Generative Models", 2025 (arXiv:2503.20314), section
3.1 (Wan-VAE). Original code: github.com/Wan-Video/Wan2.1, ``wan/modules/vae.py`` (``CausalConv3d``,
``RMS_norm``, ``Resample``, ``ResidualBlock``, ``AttentionBlock``, ``Encoder3d``, ``Decoder3d``, ``WanVAE_``,
``WanVAE``). Written from primitives after that code; attribute names equal the keys of the released
``Wan2.1_VAE.pth``, so loading is :func:`i2v.checkpoints.load_into` (the diffusers ``AutoencoderKLWan`` layout
is renamed by :data:`DIFFUSERS_RENAMES` below).

What a causal video VAE does. Every convolution that mixes frames looks only at the present and the past: its
time padding is all on the past side (2 zero frames before a 3-tap kernel), so latent frame j depends on pixel
frames <= 4j only. Frame 0 is therefore encoded on its own -- an image is a 1-frame video -- and each later latent
frame summarises the next 4 pixel frames::

    pixels  (b, 3, 1 + 4k, H, W)  in [-1, 1]                       (2.1: H, W multiples of 8)
      encode -> mu (b, 16, 1 + k, H/8, W/8) -> z = (mu - mean) / std     the 16 channel constants of the original
      decode -> pixels (b, 3, 1 + 4k, H, W)  (the original clamps to [-1, 1])

Time is downsampled twice by a stride-2 convolution that keeps frame 0 as it is (1 + 4k -> 1 + 2k -> 1 + k) and
upsampled twice by a convolution that makes two frames of each frame but frame 0 (1 + k -> 1 + 2k -> 1 + 4k).

The cache. Because nothing looks ahead, a clip can be processed in pieces with exactly the same numbers: the
original encodes chunks of 1, 4, 4, ... frames and decodes one latent frame at a time, and every causal layer
keeps the last 2 frames of its input (``CACHE_T``) to put in front of the next piece instead of zeros. Memory is
then that of one chunk whatever the clip length. Here the memory is a :class:`CausalCache` passed down through
``forward(x, cache)``: ``cache=None`` runs the whole clip in one pass, which the tests check gives the same
numbers. (The original's cache-free ``forward`` is *not* that one-shot pass: it skips the temporal resampling
convolutions altogether, so it is defined here by the causal rules above.)

Layouts: video (b, 3, T, H, W); latents (b, z, t, h, w); the 2D layers (resampling convs, attention) act on
each frame alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...checkpoints import load_into, open_state_dict
from ...errors import CheckpointError, ConfigError, InputError
from ...nn.attention import attention

CACHE_T = 2  # frames of the past a 3-tap causal convolution needs

# Per-channel statistics of mu over Wan's training videos; latents are z = (mu - mean) / std. From the original
# ``WanVAE.__init__`` (Wan2.1 wan/modules/vae.py); diffusers' AutoencoderKLWan config has the same
# ``latents_mean`` / ``latents_std``. Wan2.2's 48 are in :mod:`.vae22`.
WAN21_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
              0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
             3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


def _in_place() -> bool:
    """In-place activations save a full-size buffer per layer; they are used only when autograd records nothing
    (``encode`` / ``decode`` run under ``torch.no_grad``), so the layers stay differentiable when called directly."""
    return not torch.is_grad_enabled()


def silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x, inplace=_in_place())


def add(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y + x, written into y (a fresh intermediate) when autograd records nothing."""
    return y.add_(x) if _in_place() else y + x


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride=(1, 1, 1),
           padding=(0, 0, 0)) -> torch.Tensor:
    """F.conv3d, but on the CPU in float32 always through oneDNN (mkldnn). PyTorch's heuristic sends a batch-1
    input with N*C*T*H <= 20480 to its native "slow_conv3d" kernel -- every per-frame decode step of this VAE --
    which is 1.5-3.5x slower there. Same sums, another kernel; autograd keeps F.conv3d."""
    if (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and torch.backends.mkldnn.is_available()):
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, list(padding), list(stride), [1, 1, 1], 1)
    return F.conv3d(x, weight, bias, stride, padding)


# ----------------------------------------------------------------------------------------------- causal machinery

class CausalCache:
    """What each causal layer remembers of the frames before the current chunk; one per encode or decode call.

    ``prepend(layer, x, n)``: x with the last (up to) n frames this layer saw before it put in front, and the last
    n frames of that remembered for the next chunk (``remember``: the same, returning the past frames as a list).
    ``starts(layer)``: True on the layer's first chunk only (the resamplers treat frame 0 of the clip apart).
    Layers are the keys, so no call order has to be kept in sync.
    A 1-frame input is remembered by reference: no layer may change its input in place (none does)."""

    def __init__(self):
        self.tail: dict[nn.Module, list[torch.Tensor]] = {}  # layer -> its last input frames, (b, c, 1, h, w) each
        self.seen: set[nn.Module] = set()

    def remember(self, layer: nn.Module, x: torch.Tensor, n: int) -> list[torch.Tensor]:
        """The (up to n) frames ``layer`` saw before ``x``, oldest first; remembers the last n including x."""
        past = self.tail.get(layer, [])
        if x.shape[2] == 1 and x.untyped_storage().nbytes() == x.numel() * x.element_size():
            new = [x]  # a whole 1-frame tensor (frame-by-frame decoding) is kept as it is, not copied
        else:  # copies, so a view does not keep the whole chunk alive
            new = [f.clone() for f in x[:, :, -n:].split(1, dim=2)]
        self.tail[layer] = (past + new)[-n:]
        return past

    def prepend(self, layer: nn.Module, x: torch.Tensor, n: int) -> torch.Tensor:
        """x with the frames ``layer`` saw before it in front: (b, c, past + t, h, w)."""
        past = self.remember(layer, x, n)
        return torch.cat([*past, x], dim=2) if past else x

    def starts(self, layer: nn.Module) -> bool:
        first = layer not in self.seen
        self.seen.add(layer)
        return first


class CausalConv3d(nn.Conv3d):
    """A Conv3d whose time padding is all in the past: ``2 * padding_t`` zero frames in front, none behind, so
    output frame t sees input frames t - 2 .. t (3-tap kernel). With a cache the zeros are replaced by the
    previous chunk's last frames. Spatial padding is the usual zero padding. (b, c, t, h, w) in and out."""

    def __init__(self, c_in: int, c_out: int, kernel_size, stride=1, padding=0):
        super().__init__(c_in, c_out, kernel_size, stride, padding)
        self.past = 2 * self.padding[0]  # frames of past context the kernel needs
        self.padding = (0, *self.padding[1:])  # the time padding is done in forward

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        past = cache.remember(self, x, self.past) if self.past and cache is not None else []
        zeros = self.past - len(past)  # frames before the clip's start are zeros
        if x.shape[2] == 1 and self.stride[0] == 1:
            # one frame in (frame-by-frame decoding): y_t = sum_k W[:, :, k] * x_{t - past + k} over the taps that
            # have a frame (zero frames add nothing) -- the same sums without a concatenated copy of the frames
            y = None
            for k, frame in enumerate((*past, x), start=zeros):
                term = conv3d(frame, self.weight[:, :, k:k + 1], self.bias if y is None else None, self.stride,
                              self.padding)
                y = term if y is None else add(y, term)
                del term
            return y
        if zeros:
            past = [x.new_zeros(*x.shape[:2], zeros, *x.shape[3:]), *past]
        if past:
            x = torch.cat([*past, x], dim=2)  # (b, c, past + t, h, w)
        return conv3d(x, self.weight, self.bias, self.stride, self.padding)


class ChannelRMSNorm(nn.Module):
    """RMS norm over the channels at each position (the original's ``RMS_norm``; no mean subtraction, no eps
    beyond F.normalize's 1e-12)::

        y = gamma * x / sqrt(mean_c x_c^2)  =  gamma * sqrt(C) * x / ||x||_2

    ``gamma`` is (C, 1, 1, 1) for video tensors (b, C, t, h, w), (C, 1, 1) for frames (n, C, h, w)."""

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))
        self.scale = dim ** 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gamma * self.scale
        if x.device.type != "cpu":
            y = F.normalize(x, dim=1)
        else:  # ||x||^2 = ones(1, C) @ x^2 per position: on the CPU a GEMV is ~10x faster than vector_norm's reduction
            b, c = x.shape[:2]
            sq = x.square().reshape(b, c, -1)  # (b, C, positions)
            norm = (torch.ones(1, c, dtype=x.dtype) @ sq).sqrt_().clamp_min_(1e-12)  # (b, 1, positions)
            del sq
            y = x / norm.view(b, 1, *x.shape[2:])
        return y.mul_(g) if _in_place() else y * g


def frame_conv(conv: nn.Conv2d, x: torch.Tensor, pad: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """A Conv2d applied to every frame of (b, c, t, h, w), run as a (1, k, k) Conv3d with the same weights so the
    frames need not be folded into the batch and back (two copies of the tensor). ``pad``: an explicit
    (left, right, top, bottom) zero padding before it, as ``nn.ZeroPad2d``."""
    if pad is not None:
        x = F.pad(x, pad)
    return conv3d(x, conv.weight.unsqueeze(2), conv.bias, (1, *conv.stride), (0, *conv.padding))


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """(b, c, t, h, w) -> (b, c, t, 2h, 2w), each pixel repeated 2x2: nearest-exact interpolation at scale 2
    (source index floor((i + 1/2) / 2) = floor(i / 2)), as one broadcast copy."""
    b, c, t, h, w = x.shape
    return x[:, :, :, :, None, :, None].expand(b, c, t, h, 2, w, 2).reshape(b, c, t, 2 * h, 2 * w)


class Resample(nn.Module):
    """Spatial (and temporal) 2x down- or upsampling; ``mode`` as the original:

    - ``downsample2d``: zero-pad right/bottom by 1, 3x3 conv with stride 2 on each frame (H, W -> H/2, W/2);
    - ``downsample3d``: the same, then ``time_conv`` (3-tap, stride 2, no padding) over time: frame 0 is kept as
      it is and the windows (0, 1, 2), (2, 3, 4), ... make the others: 1 + 2k frames -> 1 + k;
    - ``upsample2d``: nearest 2x, 3x3 conv (to ``out_dim`` channels: Wan2.1 halves them, Wan2.2 keeps them);
    - ``upsample3d``: first ``time_conv`` (causal 3-tap, dim -> 2 dim channels = two frames) on every frame but
      frame 0, which is kept as it is: 1 + k frames -> 1 + 2k; then as upsample2d.

    ``resample.1`` is the Conv2d (index 0 is the parameter-free pad / upsample layer of the original)."""

    def __init__(self, dim: int, mode: str, out_dim: int | None = None):
        super().__init__()
        self.mode = mode
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          nn.Conv2d(dim, out_dim or dim, 3, padding=1))
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        else:
            raise ConfigError(f"Resample mode {mode!r}: expected upsample2d, upsample3d, downsample2d or downsample3d")
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0))
        if mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        conv = self.resample[1]
        if self.mode.startswith("down"):
            x = frame_conv(conv, x, pad=(0, 1, 0, 1))  # (b, c, t, h/2, w/2)
            return self._time_down(x, cache) if self.mode == "downsample3d" else x
        if self.mode == "upsample3d":
            x = self._time_up(x, cache)
        return frame_conv(conv, upsample2x(x))  # (b, out_dim, t', 2h, 2w)

    def _time_down(self, x: torch.Tensor, cache: CausalCache | None) -> torch.Tensor:
        t = x.shape[2]
        if cache is not None:
            x = cache.prepend(self, x, 1)  # the previous chunk's last frame, the left end of the first window
        if x.shape[2] > t:
            return self.time_conv(x)  # (b, c, t/2, h, w)
        # the clip starts here: frame 0 has no past and is kept as it is, then windows (0, 1, 2), (2, 3, 4), ...
        rest = self.time_conv(x) if t >= 3 else x[:, :, :0]
        return torch.cat([x[:, :, :1], rest], dim=2)  # (b, c, 1 + (t - 1)/2, h, w)

    def _time_up(self, x: torch.Tensor, cache: CausalCache | None) -> torch.Tensor:
        first = None
        if cache is None or cache.starts(self):  # frame 0 of the clip becomes one frame, not two
            first, x = x[:, :, :1], x[:, :, 1:]
        if x.shape[2]:
            x = self.time_conv(x, cache)  # (b, 2c, t, h, w), causal over the frames after frame 0
            x = rearrange(x, "b (two c) t h w -> b c (t two) h w", two=2)  # frame i -> frames 2i, 2i+1
            return x if first is None else torch.cat([first, x], dim=2)
        return first


class ResidualBlock(nn.Module):
    """x + F(x), F = norm, SiLU, causal 3x3x3 conv, norm, SiLU, (dropout), causal 3x3x3 conv; a 1x1x1 conv on the
    shortcut when the width changes. ``residual.{0,2,3,6}`` are the original's Sequential indices (1, 4: SiLU;
    5: dropout, 0 in the release)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.residual = nn.Sequential(
            ChannelRMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            ChannelRMSNorm(out_dim), nn.SiLU(), nn.Dropout(0.0), CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        norm1, _, conv1, norm2, _, _, conv2 = self.residual
        h = self.shortcut(x)
        y = conv1(silu(norm1(x)), cache)
        y = silu(norm2(y))  # one statement per step, so each intermediate is freed as soon as it is used
        y = conv2(y, cache)
        return add(y, h)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the h*w positions of each frame (frames do not see each other), with a
    residual: x + proj(attention(q, k, v)), q, k, v = to_qkv(norm(x)) (1x1 convs)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = ChannelRMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(rearrange(x, "b c t h w -> (b t) c h w"))
        q, k, v = rearrange(self.to_qkv(y), "n (three c) h w -> three n 1 (h w) c", three=3)
        y = attention(q, k, v)  # (b t, 1, h w, c), scale 1/sqrt(c)
        y = self.proj(rearrange(y, "n 1 (h w) c -> n c h w", h=h))
        y = rearrange(y, "(b t) c h w -> b c t h w", t=t)
        return add(y, x)


class Head(nn.Sequential):
    """norm, SiLU, causal 3x3x3 conv to ``c_out`` channels (keys ``head.0``, ``head.2``)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(ChannelRMSNorm(c_in), nn.SiLU(), CausalConv3d(c_in, c_out, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        return self[2](silu(self[0](x)), cache)


def run_frame_by_frame(layers, x: torch.Tensor, cache: CausalCache | None) -> torch.Tensor:
    """Apply ``layers`` in turn (the decoder). With a cache, once the piece holds several frames (after a temporal
    upsampling) the remaining layers take them one at a time: exact, since every layer is causal and the cache
    carries the past, and the working memory of the full-resolution stages is then that of one frame."""
    for i, layer in enumerate(layers):
        if cache is not None and x.shape[2] > 1:
            frames = [f.clone() for f in x.split(1, dim=2)]  # copies: each is freed once it has been used
            del x
            return torch.cat([run_frame_by_frame(layers[i:], frames.pop(0), cache) for _ in range(len(frames))], 2)
        x = layer(x, cache)
    return x


def middle(dim: int) -> nn.Sequential:
    """The bottleneck of encoder and decoder: residual, attention, residual (keys ``middle.0-2``)."""
    return nn.Sequential(ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim))


# ----------------------------------------------------------------------------------------------- Wan2.1

@dataclass(frozen=True)
class Wan21VAEConfig:
    dim: int = 96  # base width; stage i of the encoder is dim * dim_mult[i] wide (the decoder mirrors it)
    z_dim: int = 16  # latent channels (the encoder makes 2 * z_dim: mean and log-variance)
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)  # len - 1 = 3 spatial halvings: 8x
    num_res_blocks: int = 2  # per encoder stage; the decoder has one more per stage
    attn_scales: tuple[float, ...] = ()  # resolutions (1, 1/2, ...) with attention after each res block (none released)
    temperal_downsample: tuple[bool, ...] = (False, True, True)  # halvings that also halve time (4x); sic, original

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(self.temperal_downsample)

    @classmethod
    def from_state_dict(cls, shapes: dict[str, tuple]) -> "Wan21VAEConfig":
        """The config from tensor shapes (original ``Wan2.1_VAE.pth`` keys): the encoder's flat ``downsamples``
        list is read as stages split at its Resample layers."""
        require_wan_vae(shapes, "2.1")
        dim, z_dim = shapes["encoder.conv1.weight"][0], shapes["conv2.weight"][0]
        layers = sorted({int(m.group(1)) for k in shapes for m in [re.match(r"encoder\.downsamples\.(\d+)\.", k)] if m})
        stages, temporal, attn = [[]], [], set()
        for i in layers:
            p = f"encoder.downsamples.{i}."
            if p + "residual.2.weight" in shapes:
                stages[-1].append(shapes[p + "residual.2.weight"][0])
            elif p + "to_qkv.weight" in shapes:
                attn.add(1.0 / 2 ** (len(stages) - 1))
            elif p + "resample.1.weight" in shapes:
                temporal.append(p + "time_conv.weight" in shapes)
                stages.append([])
        if not stages[0] or any(len(s) != len(stages[0]) for s in stages):
            raise CheckpointError(f"Wan2.1 VAE: cannot read the encoder stages from encoder.downsamples.* "
                                  f"(residual blocks per stage: {[len(s) for s in stages]})")
        return cls(dim=dim, z_dim=z_dim, dim_mult=tuple(s[0] // dim for s in stages), num_res_blocks=len(stages[0]),
                   attn_scales=tuple(sorted(attn, reverse=True)), temperal_downsample=tuple(temporal))


class Encoder3d(nn.Module):
    """(b, 3, 1 + 4k, H, W) -> (b, 2 z, 1 + k, H/8, W/8): conv1, stages of residual blocks each followed by a
    down-Resample (the last stage has none), middle, head."""

    def __init__(self, cfg: Wan21VAEConfig):
        super().__init__()
        dims = [cfg.dim * m for m in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        layers, scale = [], 1.0
        for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResidualBlock(c_in, c_out))
                if scale in cfg.attn_scales:
                    layers.append(AttentionBlock(c_out))
                c_in = c_out
            if i != len(cfg.dim_mult) - 1:
                layers.append(Resample(c_out, "downsample3d" if cfg.temperal_downsample[i] else "downsample2d"))
                scale /= 2.0
        self.downsamples = nn.Sequential(*layers)
        self.middle = middle(dims[-1])
        self.head = Head(dims[-1], 2 * cfg.z_dim)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.conv1(x, cache)
        for layer in (*self.downsamples, *self.middle):
            x = layer(x, cache)
        return self.head(x, cache)


class Decoder3d(nn.Module):
    """(b, z, 1 + k, h, w) -> (b, 3, 1 + 4k, 8h, 8w): conv1, middle, stages of num_res_blocks + 1 residual blocks
    each followed by an up-Resample that halves the width (the last stage has none), head."""

    def __init__(self, cfg: Wan21VAEConfig):
        super().__init__()
        dims = [cfg.dim * m for m in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
        temporal_up = cfg.temperal_downsample[::-1]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = middle(dims[0])
        layers, scale = [], 1.0 / 2 ** (len(cfg.dim_mult) - 2)
        for i, (c_in, c_out) in enumerate(zip(dims[:-1], dims[1:])):
            if i in (1, 2, 3):  # the previous stage's Resample halved the width (the original lists i = 1, 2, 3)
                c_in //= 2
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResidualBlock(c_in, c_out))
                if scale in cfg.attn_scales:
                    layers.append(AttentionBlock(c_out))
                c_in = c_out
            if i != len(cfg.dim_mult) - 1:
                layers.append(Resample(c_out, "upsample3d" if temporal_up[i] else "upsample2d", out_dim=c_out // 2))
                scale *= 2.0
        self.upsamples = nn.Sequential(*layers)
        self.head = Head(dims[-1], 3)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        return run_frame_by_frame((self.conv1, *self.middle, *self.upsamples, self.head), x, cache)


# ----------------------------------------------------------------------------------------------- the shared API

class CausalVideoVAE(nn.Module):
    """What the Wan2.1 and Wan2.2 VAEs share: the normalised-latent API, chunked encode, frame-by-frame decode,
    tiled decode and loading. Subclasses define ``encoder``, ``decoder``, ``conv1`` (the 1x1x1 conv on the
    moments), ``conv2`` (the 1x1x1 conv before the decoder), ``config``, ``version``, ``patch_size`` and the
    latent ``MEAN`` / ``STD``."""

    version: str
    patch_size: int = 1  # pixels folded into channels before the encoder (Wan2.2: 2x2)
    MEAN: tuple[float, ...]
    STD: tuple[float, ...]
    Config: type

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def temporal_stride(self) -> int:
        return self.config.temporal_stride

    @property
    def spatial_stride(self) -> int:
        return self.config.spatial_stride * self.patch_size

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _stats(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent mean and std as (1, z, 1, 1, 1) float32 tensors (the original keeps them in float32)."""
        shape = (1, -1, 1, 1, 1)
        return (torch.tensor(self.MEAN, device=device).view(shape), torch.tensor(self.STD, device=device).view(shape))

    def _dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    # ------------------------------------------------------------------ encode
    def frame_counts(self, n: int = 4) -> str:
        s = self.temporal_stride
        return ", ".join(str(1 + s * k) for k in range(n)) + ", ..."

    def check_video(self, video: torch.Tensor) -> None:
        """InputError unless ``video`` is (b, 3, 1 + 4k, H, W) with H, W multiples of the spatial stride."""
        s, st = self.spatial_stride, self.temporal_stride
        if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
            shape = list(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise InputError(f"Wan{self.version} VAE encode: expected a video (b, 3, T, H, W), found {shape}"
                             + (" (add the batch axis: video[None])" if isinstance(video, torch.Tensor)
                                and video.ndim == 4 and video.shape[0] == 3 else ""))
        b, _, t, h, w = video.shape
        if (t - 1) % st:
            lo = 1 + (t - 1) // st * st
            raise InputError(f"Wan{self.version} VAE encode: {t} frames; a causal VAE takes 1 + {st}k frames "
                             f"({self.frame_counts()}): drop {t - lo} frame(s) to {lo} or add {lo + st - t} to "
                             f"{lo + st} (e.g. repeat the last)")
        if h % s or w % s:
            raise InputError(f"Wan{self.version} VAE encode: frames of {h}x{w}; height and width must be multiples "
                             f"of {s}: crop or resize to {h // s * s}x{w // s * s}")
        lo, hi = video.min().item(), video.max().item()
        if lo < -2 or hi > 2:
            raise InputError(f"Wan{self.version} VAE encode: values in [{lo:.3g}, {hi:.3g}]; expected pixels in "
                             f"[-1, 1] (x / 127.5 - 1 for 8-bit frames)")

    @torch.no_grad()
    def encode(self, video: torch.Tensor, *, chunked: bool = True, progress: bool = False) -> torch.Tensor:
        """Video (b, 3, 1 + 4k, H, W) in [-1, 1] -> normalised latents (b, z, 1 + k, H/s, W/s), s = 8 (2.1) or 16
        (2.2): z = (mu - mean) / std, mu the posterior mean (the original's encode; log-variance dropped).

        ``chunked`` (default): chunks of 1, 4, 4, ... frames through the causal cache, as the original -- memory of
        one chunk; False: the whole clip in one pass (same numbers, memory grows with the clip)."""
        self.check_video(video)
        x = self.patchify(video.to(self._dtype()))
        st = self.temporal_stride
        chunks = [x[:, :, :1], *x[:, :, 1:].split(st, dim=2)] if chunked and x.shape[2] > 1 else [x]
        cache = CausalCache() if chunked else None
        out = [self.encoder(c, cache) for c in _bar(chunks, progress, f"Wan{self.version} VAE encode", "chunk")]
        mu = self.conv1(torch.cat(out, dim=2))[:, :self.z_dim]  # (b, z, 1 + k, h, w); [:, z:] is the log-variance
        mean, std = self._stats(mu.device)
        return (mu.float() - mean) / std  # float32, as the original returns it

    # ------------------------------------------------------------------ decode
    def check_latents(self, z: torch.Tensor) -> None:
        """InputError unless ``z`` is (b, z_dim, t, h, w)."""
        if isinstance(z, torch.Tensor) and z.ndim == 5 and z.shape[1] == self.z_dim:
            return
        if not isinstance(z, torch.Tensor):
            raise InputError(f"Wan{self.version} VAE decode: expected a latent tensor, found {type(z).__name__}")
        hint = ""
        if z.ndim == 5 and z.shape[1] in (16, 48):
            other = {16: "Wan2.1", 48: "Wan2.2"}[z.shape[1]]
            hint = f": these look like {other} latents; decode them with the {other} VAE"
        elif z.ndim == 4 and z.shape[0] == self.z_dim:
            hint = " (add the batch axis: latents[None])"
        raise InputError(f"Wan{self.version} VAE decode: expected latents (b, {self.z_dim}, t, h, w), found "
                         f"{list(z.shape)}{hint}")

    @torch.no_grad()
    def decode_frames(self, latents: torch.Tensor, *, clamp: bool = True, chunked: bool = True,
                      progress: bool = False) -> Iterator[torch.Tensor]:
        """Decode latent frame by latent frame: yields (b, 3, n, H, W) pieces, n = 1 for latent frame 0 and 4 for
        each later one (the whole clip at once if not ``chunked``). Write them out as they come and memory stays
        that of one latent frame, whatever the clip length."""
        self.check_latents(latents)
        mean, std = self._stats(latents.device)
        x = self.conv2((latents.float() * std + mean).to(self._dtype()))  # undo z = (mu - mean) / std; (b, z, t, h, w)
        cache = CausalCache() if chunked else None
        pieces = x.split(1, dim=2) if chunked else [x]
        for piece in _bar(pieces, progress, f"Wan{self.version} VAE decode", "latent frame"):
            frames = self.unpatchify(self.decoder(piece, cache)).float()  # (b, 3, n, H, W), float32 as the original
            yield frames.clamp_(-1, 1) if clamp else frames

    def _output(self, z: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = z.shape
        s = self.spatial_stride
        return torch.zeros(b, 3, 1 + self.temporal_stride * (t - 1), h * s, w * s, device=z.device)  # float32

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, clamp: bool = True, chunked: bool = True, tile: int | None = None,
               tile_overlap: int | None = None, progress: bool = False) -> torch.Tensor:
        """Normalised latents (b, z, 1 + k, h, w) -> video (b, 3, 1 + 4k, h s, w s), clamped to [-1, 1] as the
        original's ``WanVAE.decode`` (``clamp=False``: the raw decoder output, ``WanVAE_.decode``).

        ``tile`` (opt-in; latent pixels, e.g. 32 = 256 output pixels for 2.1): decode overlapping spatial tiles
        one after the other and blend them linearly over ``tile_overlap`` latent pixels (default tile // 4).
        Memory is then that of one tile; the result differs slightly from the untiled one (docs/wan-vae.md gives
        the measured seam error)."""
        self.check_latents(latents)
        if tile is not None:
            return self._decode_tiled(latents, tile, tile // 4 if tile_overlap is None else tile_overlap, clamp,
                                      chunked, progress)
        out, t = self._output(latents), 0
        for frames in self.decode_frames(latents, clamp=clamp, chunked=chunked, progress=progress):
            out[:, :, t:t + frames.shape[2]] = frames
            t += frames.shape[2]
        return out

    def _decode_tiled(self, z, tile, overlap, clamp, chunked, progress) -> torch.Tensor:
        if tile < 1 or not 0 <= overlap < tile:
            raise ConfigError(f"tiled decode: tile {tile} and overlap {overlap} latent pixels; expected tile >= 1 and "
                              f"0 <= overlap < tile")
        s, (h, w) = self.spatial_stride, z.shape[3:]
        out = self._output(z)
        weight = torch.zeros(out.shape[3:], dtype=out.dtype, device=out.device)  # (H, W): sum of tile weights
        tiles = [(y, x) for y in tile_starts(h, tile, overlap) for x in tile_starts(w, tile, overlap)]
        for y, x in _bar(tiles, progress, f"Wan{self.version} VAE tiled decode", "tile"):
            zt = z[:, :, :, y:y + tile, x:x + tile]
            ramp = blend_weights(s * zt.shape[3], s * zt.shape[4], s * overlap,
                                 (y > 0, y + tile < h, x > 0, x + tile < w)).to(out)
            rows, cols = slice(s * y, s * (y + zt.shape[3])), slice(s * x, s * (x + zt.shape[4]))
            t = 0
            for frames in self.decode_frames(zt, clamp=False, chunked=chunked):
                out[:, :, t:t + frames.shape[2], rows, cols] += frames * ramp
                t += frames.shape[2]
            weight[rows, cols] += ramp
        out /= weight
        return out.clamp_(-1, 1) if clamp else out

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path, dtype: torch.dtype | None = None, device="cpu") -> "CausalVideoVAE":
        """Load a released ``Wan2.x_VAE.pth`` (or a file with its keys, e.g. ComfyUI's ``wan_2.1_vae.safetensors``),
        or a diffusers ``AutoencoderKLWan`` folder (``vae/`` of a pipeline folder, or the pipeline folder itself)
        or its ``diffusion_pytorch_model.safetensors``. ``dtype``: default float32 (bf16 files are upcast)."""
        return cls.from_state_dict(open_wan_vae(path), dtype=dtype, device=device)

    @classmethod
    def from_state_dict(cls, sd, dtype: torch.dtype | None = None, device="cpu") -> "CausalVideoVAE":
        """Build from a (lazy) state dict in the original keys: config from its shapes, built on the meta device,
        filled strictly by :func:`i2v.checkpoints.load_into`."""
        source = getattr(sd, "source", "the state dict")
        shapes = sd.shapes if hasattr(sd, "shapes") else {k: tuple(v.shape) for k, v in sd.items()}
        found = require_wan_vae(shapes, None, source=source)
        if found != cls.version:
            raise CheckpointError(f"{source}: this is a Wan{found} VAE ({shapes['conv2.weight'][0]} latent "
                                  f"channels), not Wan{cls.version}'s; load it with "
                                  f"{'Wan21VAE' if found == '2.1' else 'Wan22VAE'}.from_pretrained or "
                                  f"i2v.models.wan.vae.load_vae (which picks the version)")
        with torch.device("meta"):
            model = cls(cls.Config.from_state_dict(shapes))
        load_into(model, sd, source=source, dtype=dtype, device=device,
                  hint=f"the file's keys look like a Wan{found} VAE but its shapes do not agree with each other: "
                       "is it truncated or edited?")
        return model.eval().requires_grad_(False)


class Wan21VAE(CausalVideoVAE):
    """The Wan2.1 VAE (``Wan2.1_VAE.pth``, 127 M parameters): 4x8x8 compression to 16 channels. Used by every
    Wan2.1 model and by Wan2.2's 14B models."""

    version = "2.1"
    MEAN, STD = WAN21_MEAN, WAN21_STD
    Config = Wan21VAEConfig

    def __init__(self, config: Wan21VAEConfig = Wan21VAEConfig()):
        super().__init__()
        self.config = config
        z = config.z_dim
        self.encoder = Encoder3d(config)
        self.conv1 = CausalConv3d(2 * z, 2 * z, 1)
        self.conv2 = CausalConv3d(z, z, 1)
        self.decoder = Decoder3d(config)


# ----------------------------------------------------------------------------------------------- files

def wan_vae_version(shapes) -> str | None:
    """"2.1" / "2.2" for a state dict with the original Wan VAE keys (told apart by structure: 2.2's encoder stages
    are nested ``downsamples.i.downsamples.j`` and its first conv takes 2x2-patchified 12 channels), else None."""
    if not all(k in shapes for k in ("encoder.conv1.weight", "conv1.weight", "conv2.weight")):
        return None
    nested = any(k.startswith("encoder.downsamples.0.downsamples.") for k in shapes)
    return "2.2" if nested or shapes["encoder.conv1.weight"][1] == 12 else "2.1"


def require_wan_vae(shapes, version: str | None, source: str = "the state dict") -> str:
    """The Wan VAE version of ``shapes``, or a CheckpointError naming what the file is instead."""
    found = wan_vae_version(shapes)
    if found is None:
        raise CheckpointError(f"{source}: not a Wan VAE (no encoder.conv1 / conv1 / conv2 tensors): "
                              f"{_what_it_is(shapes)}. "
                              "Expected Wan2.1_VAE.pth, Wan2.2_VAE.pth or a diffusers AutoencoderKLWan vae/ folder")
    if version is not None and found != version:
        raise CheckpointError(f"{source}: a Wan{found} VAE, not Wan{version}'s")
    return found


def _what_it_is(shapes) -> str:
    """What another family's file is, in words (via the registry's torch-free detectors)."""
    from ...checkpoints.files import TensorInfo
    from ...registry import identify

    match = identify({k: TensorInfo("float32", tuple(v)) for k, v in shapes.items()})
    if match is None:
        return f"no known model matches its {len(shapes)} tensors (e.g. {', '.join(sorted(shapes)[:3])})"
    return f"it looks like {match.description} (family {match.family!r})"


# diffusers AutoencoderKLWan -> original keys, applied in order to each key; then :func:`diffusers_to_original`
# places the stage blocks (``down_blocks`` / ``up_blocks``), whose numbering depends on the version.
DIFFUSERS_RENAMES = (
    # inside residual blocks (always right after a block index): residual.{0,2,3,6} and shortcut of the original
    (r"(\.\d+)\.norm1\.", r"\1.residual.0."),
    (r"(\.\d+)\.conv1\.", r"\1.residual.2."),
    (r"(\.\d+)\.norm2\.", r"\1.residual.3."),
    (r"(\.\d+)\.conv2\.", r"\1.residual.6."),
    (r"(\.\d+)\.conv_shortcut\.", r"\1.shortcut."),
    # the ends of encoder and decoder, and the 1x1x1 convs around the latent
    (r"^(encoder|decoder)\.conv_in\.", r"\1.conv1."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.head.0."),
    (r"^(encoder|decoder)\.conv_out\.", r"\1.head.2."),
    (r"^quant_conv\.", "conv1."),
    (r"^post_quant_conv\.", "conv2."),
    # the bottleneck: resnet, attention, resnet
    (r"\.mid_block\.resnets\.0\.", ".middle.0."),
    (r"\.mid_block\.attentions\.0\.", ".middle.1."),
    (r"\.mid_block\.resnets\.1\.", ".middle.2."),
)
_STAGE = re.compile(r"(encoder|decoder)\.(?:down|up)_blocks\.(\d+)\."
                    r"(?:resnets\.(\d+)|downsampler|upsampler|upsamplers\.0)\.(.*)")


def diffusers_to_original(key: str, res_blocks: int, residual: bool) -> str:
    """One diffusers ``AutoencoderKLWan`` key in the original's names. ``res_blocks``: the encoder's residual
    blocks per stage (the decoder has one more); ``residual``: Wan2.2's nested stages (``is_residual``).

    Stage blocks: Wan2.2 ``down_blocks.i.resnets.j`` / ``.downsampler`` = ``downsamples.i.downsamples.j`` / ``.R``
    and ``up_blocks.i.resnets.j`` / ``.upsampler`` = ``upsamples.i.upsamples.j`` / ``.R+1``; Wan2.1's encoder list
    is flat in both layouts (``down_blocks.n`` = ``downsamples.n``), its decoder's is flattened: stage i holds R + 1
    residual blocks then the Resample (``upsamplers.0``), at ``upsamples.{i (R + 2) + j}``."""
    for pattern, repl in DIFFUSERS_RENAMES:
        key = re.sub(pattern, repl, key)
    m = _STAGE.match(key)
    if m is None:
        return re.sub(r"^encoder\.down_blocks\.", "encoder.downsamples.", key)
    side, i, j, rest = m.group(1), int(m.group(2)), m.group(3), m.group(4)
    j = int(j) if j is not None else res_blocks + (side == "decoder")  # the resampler comes after the resnets
    if residual:
        inner = "downsamples" if side == "encoder" else "upsamples"
        return f"{side}.{inner}.{i}.{inner}.{j}.{rest}"
    return f"decoder.upsamples.{i * (res_blocks + 2) + j}.{rest}"


def diffusers_renamer(shapes):
    """The rename (a function key -> key) of a diffusers ``AutoencoderKLWan`` state dict, or None for other
    layouts. Its ``is_residual`` (Wan2.2) and number of residual blocks are read off the keys."""
    if not all(k in shapes for k in ("encoder.conv_in.weight", "post_quant_conv.weight", "decoder.norm_out.gamma")):
        return None
    residual = any(k.startswith("encoder.down_blocks.0.resnets.") for k in shapes)
    res_blocks = len({k.split(".")[4] for k in shapes if k.startswith("decoder.up_blocks.0.resnets.")}) - 1
    return lambda key: diffusers_to_original(key, res_blocks, residual)


def open_wan_vae(path):
    """The lazy StateDict of a Wan VAE file or folder, in the original keys (diffusers layouts renamed)."""
    p = Path(path)
    if p.is_dir() and (p / "vae").is_dir():  # a diffusers pipeline folder
        p = p / "vae"
    sd = open_state_dict(p, names=("Wan2.1_VAE.pth", "Wan2.2_VAE.pth", "diffusion_pytorch_model.safetensors"))
    sd = sd.strip_common_prefix(("module.", "vae.", "first_stage_model."))
    rename = diffusers_renamer(sd.shapes)
    return sd if rename is None else sd.rename(rename)


def load_vae(path, dtype: torch.dtype | None = None, device="cpu") -> CausalVideoVAE:
    """Load a Wan2.1 or Wan2.2 VAE, whichever the file is (told from its shapes)."""
    sd = open_wan_vae(path)
    if require_wan_vae(sd.shapes, None, source=sd.source) == "2.2":
        from .vae22 import Wan22VAE

        return Wan22VAE.from_state_dict(sd, dtype=dtype, device=device)
    return Wan21VAE.from_state_dict(sd, dtype=dtype, device=device)


# ----------------------------------------------------------------------------------------------- tiles

def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start indices of tiles of ``tile`` covering 0..n with at least ``overlap`` shared; the last ends at n."""
    if n <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, n - tile, stride))
    return starts + [n - tile]


def blend_weights(h: int, w: int, ramp: int, inner: tuple[bool, bool, bool, bool]) -> torch.Tensor:
    """(h, w) weights of one decoded tile: 1 inside, rising linearly as (d + 1/2) / ramp over the ``ramp`` pixels
    next to each side that has a neighbour (``inner`` = top, bottom, left, right; d = distance to that side).
    The ramps of two tiles overlapping by ``ramp`` pixels sum to 1; the decoder divides by the sum anyway."""

    def axis(n: int, lo: bool, hi: bool) -> torch.Tensor:
        d = torch.arange(n, dtype=torch.float32)
        weight = torch.ones(n)
        if ramp and lo:
            weight = torch.minimum(weight, (d + 0.5) / ramp)
        if ramp and hi:
            weight = torch.minimum(weight, (n - d - 0.5) / ramp)
        return weight

    return axis(h, *inner[:2])[:, None] * axis(w, *inner[2:])[None, :]


def _bar(items, progress: bool, desc: str, unit: str):
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, leave=False)
