"""The Stable Video Diffusion 3D U-Net ("VideoUNet"), written from primitives.

Paper: Blattmann et al. 2023, "Stable Video Diffusion: Scaling Latent Video Diffusion Models to Large Datasets"
(architecture from Blattmann et al. 2023, "Align your Latents"). Original code: Stability-AI/generative-models,
``sgm/modules/diffusionmodules/video_model.py`` (VideoUNet, VideoResBlock), ``sgm/modules/video_attention.py``
(SpatialVideoTransformer, VideoTransformerBlock), ``sgm/modules/attention.py`` (BasicTransformerBlock),
``sgm/modules/diffusionmodules/util.py`` (AlphaBlender).

It is the Stable Diffusion 2 U-Net with a temporal layer after every spatial one::

    input_blocks:  conv_in, then per level: num_res_blocks x [VideoResBlock (+ SpatialVideoTransformer)], Downsample
    middle_block:  VideoResBlock, SpatialVideoTransformer, VideoResBlock
    output_blocks: per level (reversed): (num_res_blocks+1) x [VideoResBlock on cat(h, skip) (+ transformer)], Upsample
    out:           GroupNorm, SiLU, conv -> out_channels

    VideoResBlock:           h_s = ResBlock2d(x, emb);  h_t = ResBlock3d(h_s, emb) with (3,1,1) kernels (over time)
                             out = a * h_s + (1 - a) * h_t,   a = sigmoid(mix_factor)   (AlphaBlender)
    SpatialVideoTransformer: per depth: x = BasicTransformerBlock(x, context)      (attention over pixels)
                                        x_t = VideoTransformerBlock(x + pos(t))   (attention over frames)
                                        x = a * x + (1 - a) * x_t

Layouts: frames are folded into the batch, ``x`` is ``(b t) c h w`` (t = num_video_frames), ``timesteps`` and
``y`` (the 768-d fps/motion/cond-aug vector) are per frame ``(b t)``, ``context`` (CLIP image embedding) is
``(b t) n context_dim``. Temporal layers unfold to ``b c t h w`` or ``(b h w) t c``. The output is ``(b t) c h w``.

Attribute names equal the released checkpoint's keys under ``model.diffusion_model.``, so loading is a loop
that checks names and shapes (:meth:`SVDUNet.from_state_dict`). The diffusers-format rename table lives with the
family's other formats in :mod:`i2v.models.svd.checkpoint` (:data:`~i2v.models.svd.checkpoint.UNET_DIFFUSERS_RENAMES`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...checkpoints import load_model
from ...errors import CheckpointError, ConfigError, InputError
from ...nn.attention import CrossAttention, FeedForward
from ...nn.conv import TemporalConv
from ...nn.embeddings import timestep_embedding
from ...nn.norm import GroupNorm32

SGM_PREFIX = "model.diffusion_model."


@dataclass
class SVDUNetConfig:
    """Defaults are the released SVD / SVD-XT U-Net (1.52 B parameters)."""

    in_channels: int = 8  # 4 noisy-latent channels + 4 channels of the conditioning image's latent ("concat")
    out_channels: int = 4  # the network predicts v in latent space
    model_channels: int = 320  # width of level 0; level i is model_channels * channel_mult[i] wide
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # one entry per resolution level (downsampled 2x between them)
    num_res_blocks: int = 2  # VideoResBlocks per level going down (one more per level coming up)
    transformer_depth: tuple[int, ...] = (1, 1, 1, 0)  # transformer blocks per level; 0 = no attention there
    # (sgm's attention_resolutions (4, 2, 1) = levels 0, 1, 2 have transformers)
    transformer_depth_middle: int = 1  # the middle block always has one SpatialVideoTransformer
    num_head_channels: int = 64  # width of one attention head; heads = channels // 64. NOT visible in tensor shapes
    context_dim: int = 1024  # width of the CLIP image embedding that cross-attention reads
    adm_in_channels: int = 768  # the "vector" conditioning: 256-d sinusoids of fps_id, motion_bucket_id, cond_aug
    video_kernel_size: tuple[int, int, int] = (3, 1, 1)  # temporal ResBlock convolution (t, h, w): mixes 3 frames
    extra_ff_mix_layer: bool = True  # temporal transformer blocks start with an extra feed-forward ("ff_in")

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @classmethod
    def from_state_dict(cls, sd, num_head_channels: int = 64, source: str = "the state dict") -> "SVDUNetConfig":
        """Infer the config from tensor SHAPES of a U-Net state dict (key -> shape, keys without
        ``model.diffusion_model.``). The head width is not stored in any shape: it is an argument (64 for every
        released SVD file)."""
        shape = {k: tuple(v) for k, v in sd.items()}

        def need(key: str) -> tuple[int, ...]:
            if key not in shape:
                raise CheckpointError(
                    f"{source}: expected the SVD U-Net tensor '{key}' (prefix {SGM_PREFIX!r} in a single-file "
                    f"checkpoint) but it is missing: not an SVD U-Net, or an incomplete file")
            return shape[key]

        model_channels, in_channels = need("input_blocks.0.0.weight")[:2]
        out_channels = need("out.2.weight")[0]
        adm_in_channels = need("label_emb.0.0.weight")[1]
        n_input = 1 + max(int(m.group(1)) for k in shape if (m := re.match(r"input_blocks\.(\d+)\.", k)))

        def depth(block: str) -> int:
            idx = {int(m.group(1)) for k in shape if (m := re.match(re.escape(block) + r"\.transformer_blocks\.(\d+)\.", k))}
            return len(idx)

        levels: list[list[tuple[int, int]]] = [[]]  # per level: (out channels, transformer depth) of each res block
        for i in range(1, n_input):
            if f"input_blocks.{i}.0.op.weight" in shape:
                levels.append([])
            else:
                levels[-1].append((need(f"input_blocks.{i}.0.in_layers.2.weight")[0], depth(f"input_blocks.{i}.1")))
        num_res_blocks = len(levels[0])
        channel_mult, transformer_depth = [], []
        for lv, blocks in enumerate(levels):
            if len(blocks) != num_res_blocks or len(set(blocks)) != 1:
                raise CheckpointError(
                    f"{source}: U-Net level {lv} has res blocks (channels, depth) {blocks}; expected "
                    f"{num_res_blocks} identical ones as in level 0: not an SVD U-Net layout")
            ch, d = blocks[0]
            if ch % model_channels:
                raise CheckpointError(f"{source}: level {lv} has {ch} channels, not a multiple of {model_channels}")
            channel_mult.append(ch // model_channels)
            transformer_depth.append(d)
        to_k = next((v for k, v in shape.items() if k.endswith("attn2.to_k.weight")), None)
        if to_k is None:
            raise CheckpointError(f"{source}: no cross-attention (attn2.to_k.weight) found: not an SVD U-Net")
        kernel = need("input_blocks.1.0.time_stack.in_layers.2.weight")[2:]
        return cls(
            in_channels=in_channels, out_channels=out_channels, model_channels=model_channels,
            channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks,
            transformer_depth=tuple(transformer_depth), transformer_depth_middle=depth("middle_block.1"),
            num_head_channels=num_head_channels, context_dim=to_k[1], adm_in_channels=adm_in_channels,
            video_kernel_size=tuple(kernel),
            extra_ff_mix_layer=any(".time_stack.0.ff_in." in k for k in shape))

    def check(self) -> None:
        if len(self.transformer_depth) != len(self.channel_mult):
            raise ConfigError(f"transformer_depth {self.transformer_depth} needs one entry per level {self.channel_mult}")
        widths = [self.model_channels * m for m, d in zip(self.channel_mult, self.transformer_depth) if d]
        widths.append(self.model_channels * self.channel_mult[-1])
        bad = [w for w in widths if w % self.num_head_channels or w < self.num_head_channels]
        if bad:
            raise ConfigError(
                f"num_head_channels={self.num_head_channels} does not divide the transformer widths {bad}; "
                f"pass the head width the model was trained with (64 for released SVD files)")


# --------------------------------------------------------------------------------------------------------------
# Building blocks


class AlphaBlender(nn.Module):
    """Learned mixing of the spatial and temporal paths (sgm merge_strategy "learned_with_images")::

        out = a * x_spatial + (1 - a) * x_temporal,   a = sigmoid(mix_factor)

    where ``image_only_indicator`` (b, t) is 1 (frames treated as independent images) a = 1."""

    def __init__(self, pattern: str):
        super().__init__()
        self.mix_factor = nn.Parameter(torch.zeros(1))
        self.pattern = pattern  # how a (b, t) alpha broadcasts onto the tensors being mixed

    def forward(self, x_spatial, x_temporal, image_only_indicator=None):
        alpha = torch.sigmoid(self.mix_factor)  # (1,)
        if image_only_indicator is not None:
            alpha = torch.where(image_only_indicator.bool(), torch.ones_like(alpha), alpha)  # (b, t)
            alpha = rearrange(alpha, self.pattern)
        return torch.lerp(x_temporal, x_spatial, alpha.to(x_spatial.dtype))  # x_t + a (x_s - x_t): one pass


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + Linear(SiLU(emb)), GroupNorm-SiLU-conv, + skip (Ho et al. 2020 / LDM).
    2D on ``(n, c, h, w)`` with ``emb`` (n, e); 3D on ``(b, c, t, h, w)`` with ``emb`` (b, t, e)."""

    def __init__(self, channels: int, out_channels: int, emb_channels: int, kernel_size=(3, 3)):
        super().__init__()
        conv = nn.Conv2d if len(kernel_size) == 2 else TemporalConv
        pad = tuple(k // 2 for k in kernel_size)
        self.in_layers = nn.Sequential(
            GroupNorm32(channels, eps=1e-5), nn.SiLU(), conv(channels, out_channels, kernel_size, padding=pad))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(  # index 2 was dropout; kept so the conv stays at the checkpoint's index 3
            GroupNorm32(out_channels, eps=1e-5), nn.SiLU(), nn.Identity(),
            conv(out_channels, out_channels, kernel_size, padding=pad))
        self.skip_connection = nn.Identity() if channels == out_channels else conv(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)
        if h.ndim == 5:
            e = rearrange(e, "b t c -> b c t 1 1")
        else:
            e = e[:, :, None, None]
        h = self.out_layers(h.add_(e))  # in place on the fresh conv output: one activation-sized buffer fewer
        return h.add_(self.skip_connection(x))


class VideoResBlock(ResBlock):
    """Spatial ResBlock per frame, then a temporal ResBlock over frames, blended by a learned alpha."""

    def __init__(self, channels: int, out_channels: int, emb_channels: int, video_kernel_size=(3, 1, 1)):
        super().__init__(channels, out_channels, emb_channels)
        self.time_stack = ResBlock(out_channels, out_channels, emb_channels, kernel_size=video_kernel_size)
        self.time_mixer = AlphaBlender("b t -> b 1 t 1 1")

    def forward(self, x, emb, num_frames: int, image_only_indicator=None):
        x = super().forward(x, emb)  # (b t) c h w
        x_spatial = rearrange(x, "(b t) c h w -> b c t h w", t=num_frames)
        x_temporal = self.time_stack(x_spatial, rearrange(emb, "(b t) e -> b t e", t=num_frames))
        x = self.time_mixer(x_spatial, x_temporal, image_only_indicator)
        return rearrange(x, "b c t h w -> (b t) c h w")


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class BasicTransformerBlock(nn.Module):
    """Pre-norm transformer block on ``(n, s, c)``: self-attention, cross-attention to ``context``, GEGLU MLP."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, heads, dim_head, context_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context):
        # residual adds in place on a sub-layer's fresh output (a Linear's, which autograd does not need)
        x = self.attn1(self.norm1(x)).add_(x)
        x = x + self.attn2(self.norm2(x), context)  # not in place: attn2 may return a broadcast view
        return self.ff(self.norm3(x)).add_(x)


class VideoTransformerBlock(nn.Module):
    """Transformer block whose self-attention runs over the FRAMES of each pixel: ``(b t) s c`` in and out."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, ff_in: bool):
        super().__init__()
        if ff_in:
            self.norm_in = nn.LayerNorm(dim)
            self.ff_in = FeedForward(dim)
        self.has_ff_in = ff_in
        self.attn1 = CrossAttention(dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = CrossAttention(dim, heads, dim_head, context_dim)
        self.norm1, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context, num_frames: int):
        # x (b t, s, c); context (b, n, d): one context per video (its first frame's)
        b = x.shape[0] // num_frames
        x = rearrange(x, "(b t) s c -> (b s) t c", t=num_frames)
        if self.has_ff_in:
            x = self.ff_in(self.norm_in(x)).add_(x)
        x = self.attn1(self.norm1(x)).add_(x)  # attention over the t frames at each pixel
        # Cross-attention: every (pixel, frame) query of a video reads the same context, so the queries of one
        # video form one sequence (the original repeats the context h*w times instead; same result).
        q = rearrange(self.norm2(x), "(b s) t c -> b (s t) c", b=b)
        x = x + rearrange(self.attn2(q, context), "b (s t) c -> (b s) t c", t=num_frames)
        x = self.ff(self.norm3(x)).add_(x)
        return rearrange(x, "(b s) t c -> (b t) s c", b=b)


class SpatialVideoTransformer(nn.Module):
    """GroupNorm, linear in, [spatial block, temporal block (+ frame position embedding), alpha blend] x depth,
    linear out, residual. ``(b t) c h w`` in and out."""

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int, ff_in: bool):
        super().__init__()
        inner = heads * dim_head
        self.norm = GroupNorm32(channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)])
        self.proj_out = nn.Linear(inner, channels)
        self.time_stack = nn.ModuleList(
            [VideoTransformerBlock(inner, heads, dim_head, context_dim, ff_in) for _ in range(depth)])
        self.time_pos_embed = nn.Sequential(nn.Linear(channels, 4 * channels), nn.SiLU(), nn.Linear(4 * channels, channels))
        self.time_mixer = AlphaBlender("b t -> (b t) 1 1")

    def forward(self, x, context, num_frames: int, image_only_indicator=None):
        _, _, h, w = x.shape
        x_in = x
        x = self.proj_in(rearrange(self.norm(x), "n c h w -> n (h w) c"))  # (b t, s, c), s = h*w
        time_context = context[::num_frames]  # (b, n, d): the first frame's context of each video
        # frame position embedding: sinusoid of the frame index 0..t-1 through a small MLP, (t, c)
        frames = torch.arange(num_frames, device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
        pos = self.time_pos_embed(timestep_embedding(frames, self.proj_in.in_features).to(x.dtype))
        for block, mix_block in zip(self.transformer_blocks, self.time_stack):
            x = block(x, context)
            x_mix = rearrange(x, "(b t) s c -> b t s c", t=num_frames) + pos[:, None, :]
            x_mix = mix_block(rearrange(x_mix, "b t s c -> (b t) s c"), time_context, num_frames)
            x = self.time_mixer(x, x_mix, image_only_indicator)
        x = rearrange(self.proj_out(x), "n (h w) c -> n c h w", h=h, w=w)
        return x + x_in


class UNetBlock(nn.ModuleList):
    """One entry of input_blocks / middle_block / output_blocks: its layers in order, each given what it needs."""

    def forward(self, h, emb, context, num_frames: int, image_only_indicator=None):
        for layer in self:
            if isinstance(layer, VideoResBlock):
                h = layer(h, emb, num_frames, image_only_indicator)
            elif isinstance(layer, SpatialVideoTransformer):
                h = layer(h, context, num_frames, image_only_indicator)
            else:
                h = layer(h)
        return h


# --------------------------------------------------------------------------------------------------------------
# The U-Net


class SVDUNet(nn.Module):
    def __init__(self, config: SVDUNetConfig | None = None):
        super().__init__()
        c = self.config = config or SVDUNetConfig()
        c.check()
        mc, E = c.model_channels, c.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, E), nn.SiLU(), nn.Linear(E, E))
        self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(c.adm_in_channels, E), nn.SiLU(), nn.Linear(E, E)))

        def res(ch_in, ch_out):
            return VideoResBlock(ch_in, ch_out, E, c.video_kernel_size)

        def attn(ch, depth):
            return SpatialVideoTransformer(ch, ch // c.num_head_channels, c.num_head_channels, depth,
                                           c.context_dim, c.extra_ff_mix_layer)

        self.input_blocks = nn.ModuleList([UNetBlock([nn.Conv2d(c.in_channels, mc, 3, padding=1)])])
        skip_channels, ch = [mc], mc
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers = [res(ch, mc * mult)]
                ch = mc * mult
                if c.transformer_depth[level]:
                    layers.append(attn(ch, c.transformer_depth[level]))
                self.input_blocks.append(UNetBlock(layers))
                skip_channels.append(ch)
            if level != len(c.channel_mult) - 1:
                self.input_blocks.append(UNetBlock([Downsample(ch)]))
                skip_channels.append(ch)

        self.middle_block = UNetBlock([res(ch, ch), attn(ch, c.transformer_depth_middle), res(ch, ch)])

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), mc * mult)]
                ch = mc * mult
                if c.transformer_depth[level]:
                    layers.append(attn(ch, c.transformer_depth[level]))
                if level and i == c.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(UNetBlock(layers))

        self.out = nn.Sequential(GroupNorm32(ch, eps=1e-5), nn.SiLU(), nn.Conv2d(mc, c.out_channels, 3, padding=1))

    def forward(self, x, timesteps, context, y, num_video_frames: int, image_only_indicator=None):
        """x (b t, in_channels, h, w); timesteps (b t,) = c_noise; context (b t, n, context_dim);
        y (b t, adm_in_channels); image_only_indicator (b, t) or None (= all zeros: every frame is video).
        Returns (b t, out_channels, h, w)."""
        T = int(num_video_frames)
        self._check_inputs(x, timesteps, context, y, T)
        dtype = self.time_embed[0].weight.dtype
        # timestep embedding: sinusoid of c_noise (float64 when the model runs in float64) -> MLP; + vector MLP
        t = timesteps.to(x.device, torch.float64 if dtype == torch.float64 else torch.float32)
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(dtype))
        emb = emb + self.label_emb(y.to(dtype))  # (b t, 4*model_channels)
        context = context.to(dtype)
        h, skips = x.to(dtype), []
        for block in self.input_blocks:
            h = block(h, emb, context, T, image_only_indicator)
            skips.append(h)
        h = self.middle_block(h, emb, context, T, image_only_indicator)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, T, image_only_indicator)
        return self.out(h)

    def _check_inputs(self, x, timesteps, context, y, T):
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise InputError(f"SVD U-Net input: expected x of shape ((b t), {c.in_channels}, h, w), found {tuple(x.shape)}")
        n = x.shape[0]
        if T < 1 or n % T:
            raise InputError(f"SVD U-Net input: batch {n} is not a whole number of videos of num_video_frames={T}")
        f = 2 ** (len(c.channel_mult) - 1)
        if x.shape[2] % f or x.shape[3] % f:
            raise InputError(f"SVD U-Net input: latent size {tuple(x.shape[2:])} must be a multiple of {f} "
                             f"(image size a multiple of {8 * f})")
        if timesteps.shape != (n,):
            raise InputError(f"SVD U-Net input: expected timesteps of shape ({n},), found {tuple(timesteps.shape)}")
        if context.ndim != 3 or context.shape[0] != n or context.shape[2] != c.context_dim:
            raise InputError(f"SVD U-Net input: expected context of shape ({n}, n_tokens, {c.context_dim}), "
                             f"found {tuple(context.shape)}")
        if y.shape != (n, c.adm_in_channels):
            raise InputError(f"SVD U-Net input: expected y of shape ({n}, {c.adm_in_channels}), found {tuple(y.shape)}")

    # ----------------------------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_state_dict(cls, sd, *, prefix: str = SGM_PREFIX, num_head_channels: int = 64, dtype=None,
                        device=None, source: str = "the state dict") -> "SVDUNet":
        """Build the U-Net from the tensors under ``prefix`` of ``sd`` (other keys are ignored: they belong to
        the VAE and conditioner). Strict: every tensor under ``prefix`` is used and every parameter found with
        its shape. Built on the meta device and filled by assignment, so no second copy of the weights is made
        (when dtype/device are those of the tensors). ``num_head_channels`` is not in the file: 64 for SVD."""
        own = sd.strip(prefix) if hasattr(sd, "strip") else {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not own:
            some = ", ".join(list(sd)[:3])
            raise CheckpointError(f"{source}: no tensors under {prefix!r} (found e.g. {some}): not an SVD checkpoint "
                                  f"in the original single-file layout")
        shapes = own.shapes if hasattr(own, "shapes") else {k: tuple(v.shape) for k, v in own.items()}
        config = SVDUNetConfig.from_state_dict(shapes, num_head_channels=num_head_channels, source=source)
        model = load_model(cls, config, own, source=source, dtype=dtype, device=device, prefix=prefix)
        return model.requires_grad_(False)
