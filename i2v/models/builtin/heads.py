"""The backbone interface shared by the built-in image-to-video models (:mod:`.unet3d`, :mod:`.dit`), and the heads
both use.

A backbone is the raw network ``F`` that :class:`i2v.diffusion.Denoiser` wraps into ``D(x, sigma) -> x0``::

    F(x_in, c_noise, *, first_frame, motion, speed) -> (b, 3, t, h, w)
                                                       [warp_mask: a Proposal (F, moved first frame, mask)]

    x_in         (b, 3, t, h, w)  noisy frames, already multiplied by c_in (frames live in [-1, 1])
    c_noise      (b,)             the preconditioning's noise conditioning (0.25 ln sigma for EDM, sigma for flow)
    first_frame  (b, 3, h, w)     the clean conditioning image in [-1, 1] (SVD-style channel concat)
    motion       (b,) long        index into MOTIONS, or NULL_MOTION (= len(MOTIONS)) for "unconditional"
    speed        (b,) float       motion speed, 0.5 .. 1.5

Every backbone class has a ``Config`` dataclass (``Config.from_state_dict(shapes)`` reads it off tensor shapes),
a ``config`` attribute, ``from_state_dict(sd)`` that builds the model on the meta device and loads it strictly
(:func:`i2v.checkpoints.load_into`), and supports any number of frames and any grid its patching divides.

This module also holds the pieces both backbones share: :class:`ConditionEmbedding`, which turns
(c_noise, motion, speed, frame index) into one vector per frame, and :class:`WarpHead`, the optional output
branch that moves the first frame's pixels instead of redrawing them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...checkpoints import load_model
from ...data.procedural import MOTIONS
from ...diffusion.denoisers import Proposal
from ...errors import CheckpointError
from ...nn.embeddings import timestep_embedding

NULL_MOTION = len(MOTIONS)  # the extra label used for classifier-free guidance (label dropout in training)
C_NOISE_SCALE = 250.0  # 0.25 ln sigma spans about [-2, 1.5]; x250 spreads it over the sinusoid's frequencies
SPEED_SCALE = 100.0
MASK_INIT = -4.0  # initial bias of the U-Net's warp-mask logit: sigmoid(-4) = 0.018
INSIDE_INIT = 4.0  # initial weight of the warp mask's inside/outside prior, in logits


class ConditionEmbedding(nn.Module):
    """(c_noise, motion, speed) per clip + frame index per frame -> ((b t), dim) conditioning vectors::

        e = MLP(sin(250 c_noise)) + Embed(motion) + MLP(sin(100 speed)) + MLP(sin(k))    k = 0 .. t-1
    """

    def __init__(self, dim: int, num_motions: int = NULL_MOTION + 1, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.noise_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.motion_embed = nn.Embedding(num_motions, dim)
        self.speed_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.frame_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise, motion, speed, frames: int) -> torch.Tensor:
        dtype = self.motion_embed.weight.dtype
        e = self.noise_mlp(timestep_embedding(c_noise * C_NOISE_SCALE, self.freq_dim).to(dtype))
        e = e + self.motion_embed(motion) + self.speed_mlp(timestep_embedding(speed * SPEED_SCALE, self.freq_dim).to(dtype))
        k = torch.arange(frames, device=e.device, dtype=torch.float32)
        f = self.frame_mlp(timestep_embedding(k, self.freq_dim).to(dtype))  # (t, dim)
        return (e[:, None] + f[None]).flatten(0, 1)  # (b, dim) + (t, dim) -> (b t) dim


class WarpMotion(NamedTuple):
    """How the warp head moved the first frame, readable at any resolution: the point ``x`` of a frame (in the
    grid's normalised coordinates, ``align_corners=False``: -1 and 1 are the image's outer edges, so a point
    means the same place at every resolution) shows the first frame at::

        source(x) = theta [x; 1] + flow(x)      flow bilinear between the grid's pixel centres, border beyond

    The backbone's own grid is ``source`` at its pixel centres; :mod:`i2v.pipelines.builtin` evaluates it at the
    pixels of the full-resolution photo."""
    theta: torch.Tensor  # ((b t), 2, 3) affine maps, aspect-corrected (:func:`aspect_corrected`)
    flow: torch.Tensor | None  # ((b t), 2, h, w) residual offsets in normalised units (0.1 r), or None

    def source(self, points: torch.Tensor) -> torch.Tensor:
        """points ((b t), H, W, 2) or (1, H, W, 2), normalised (x, y) -> ((b t), H, W, 2) source positions."""
        theta = self.theta.float()
        n, (_, H, W, _) = theta.shape[0], points.shape
        points = points.float().expand(n, -1, -1, -1)
        # A x + t for every point: (n, H W, 2) @ (n, 2, 2)^T + (n, 1, 2)
        out = torch.baddbmm(theta[:, None, :, 2], points.reshape(n, H * W, 2), theta[:, :, :2].transpose(1, 2))
        out = out.view(n, H, W, 2)
        if self.flow is not None:
            flow = F.grid_sample(self.flow.float(), points, mode="bilinear", padding_mode="border", align_corners=False)
            out = out + flow.permute(0, 2, 3, 1)  # ((b t), 2, H, W) -> ((b t), H, W, 2)
        return out

    def select(self, index) -> "WarpMotion":
        """The maps of some (clip, frame) entries, e.g. ``select(slice(t, 2 t))``."""
        return WarpMotion(self.theta[index], None if self.flow is None else self.flow[index])


def aspect_corrected(theta: torch.Tensor, flow: torch.Tensor | None, h: int, w: int):
    """The head learned its maps on square frames, in coordinates normalised by the side. On an h x w grid the
    same numbers would mean other pixel motions per axis (a vertical pan 3/4 as fast on 64x48, a rotation
    sheared), so they are read in coordinates normalised by the longer side L = max(h, w) and converted::

        x_grid = D q,  D = diag(L / w, L / h)      theta' = [D A D^-1 | D t],   flow' = D flow

    so a pan moves the same pixels on both axes and a rotation stays rigid. Square grids: unchanged."""
    if h == w:
        return theta, flow
    L = max(h, w)
    d = torch.tensor([L / w, L / h], device=theta.device, dtype=theta.dtype)
    theta = torch.cat([theta[:, :, :2] * d[:, None] / d[None, :], theta[:, :, 2:] * d[:, None]], dim=2)  # [DAD^-1|Dt]
    return theta, None if flow is None else flow * d.to(flow.dtype)[:, None, None]


class WarpHead(nn.Module):
    """Moves the first frame the way the conditioning asks, as a spatial transformer (Jaderberg et al. 2015)
    with a flow refinement (as in flow-based video prediction, e.g. Liu et al. 2017, "Video Frame Synthesis
    using Deep Voxel Flow")::

        h_f     = SiLU(W SiLU(e_f) + b)                a hidden layer on frame f's conditioning vector e_f
        theta_f = I + A(h_f)                           a 2x3 affine map per frame
        grid_f  = affine_grid(theta_f) + 0.1 * r_f     r_f: per-pixel residual flow from the backbone's features
        out_f   = g(h_f) * grid_sample(first_frame, grid_f)      g: a learned gain per frame
        [warp_mask: m_f = sigmoid(l_f + M h_f + a * (+1 inside the first frame / -1 outside)), see below]

    The camera moves of the training data (pan, zoom, rotation) are affine maps of the image plane, so the
    affine branch can express them from the label, speed and frame index alone (the hidden layer lets it form
    products such as speed x frame index, which a linear map of the summed embedding cannot); parallax and moving sprites
    need the residual flow; pixels that enter the frame (nothing to warp from) are left to the backbone's
    ordinary output, which ``out_f`` is added to. At sampling nothing here is given the true motion: A, g and r
    are learned. A and g are zero-initialised, so at initialisation the head adds nothing (g = 0) and warps by
    the identity. While g is near zero the diffusion loss hardly reaches A, so training adds an auxiliary loss on
    the affine warp alone (:func:`i2v.train.warp_loss`: the moved first frame against the true frames); the
    stage "camera" (:mod:`i2v.calibrate`) then regresses A onto the training data's known camera maps.
    Grid coordinates are normalised to [-1, 1] (``align_corners=False``); the border pixel repeats outside.

    With ``warp_mask`` (``mask=True`` here) the backbone also predicts a mask m = sigmoid(l_pixel + M h_f),
    a per-pixel logit from its features plus a per-frame one from the hidden layer (how far to trust the move
    at this noise level, for this label, at this frame), and returns a :class:`i2v.diffusion.Proposal`: the
    denoiser's estimate becomes m * moved + (1 - m) * D, so where the move explains the pixel (m -> 1) the frame
    is the moved first frame itself, free of the noise that c_skip x carries into D (the composition of Deep
    Voxel Flow and RIFE). M starts at zero; the per-pixel logit's bias at :data:`MASK_INIT` in the U-Net
    (m = 0.018: adding the mask to a trained model hardly changes it) and at 0 in the DiT (see dit.py).
    A third, geometric term says where the move has anything to show: ``+a`` where the pixel is read from
    inside the first frame, ``-a`` where the grid leaves it (content entering the frame; the warp would only
    repeat the border there). ``a`` is learned, starting at :data:`INSIDE_INIT`.
    """

    def __init__(self, emb_dim: int, mask: bool = False):
        super().__init__()
        self.hidden = nn.Linear(emb_dim, emb_dim)
        self.affine = nn.Linear(emb_dim, 6)
        self.gain = nn.Linear(emb_dim, 1)
        zero = [self.affine, self.gain]
        if mask:  # the per-frame part of the mask logit (the backbone adds a per-pixel part)
            self.mask = nn.Linear(emb_dim, 1)
            zero.append(self.mask)
            self.inside = nn.Parameter(torch.tensor([INSIDE_INIT]))  # weight of the inside/outside prior
        for m in zero:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def _hidden(self, emb: torch.Tensor) -> torch.Tensor:
        return F.silu(self.hidden(F.silu(emb.float())))

    def motion(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """emb ((b t), d) -> (theta ((b t), 2, 3) affine maps, gain ((b t), 1)), in float32."""
        theta, gain, _ = self.per_frame(emb)
        return theta, gain

    def per_frame(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Everything the head computes from the conditioning alone: emb ((b t), d) -> (theta ((b t), 2, 3),
        gain ((b t), 1), the per-frame mask logit ((b t), 1) or None without a mask), in float32."""
        with torch.autocast(emb.device.type, enabled=False):  # bfloat16 would round shifts to ~0.1 px
            h = self._hidden(emb)
            identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=emb.device)
            mask = self.mask(h) if hasattr(self, "mask") else None
            return identity + self.affine(h).view(-1, 2, 3), self.gain(h), mask

    def warp_motion(self, theta: torch.Tensor, flow: torch.Tensor | None, h: int, w: int) -> WarpMotion:
        """theta ((b t), 2, 3) and the backbone's residual flow r ((b t), 2, h, w) or None -> the motion on an
        h x w grid (aspect-corrected, flow scaled by 0.1)."""
        with torch.autocast(theta.device.type, enabled=False):
            flow = None if flow is None else 0.1 * flow.float()
            return WarpMotion(*aspect_corrected(theta.float(), flow, h, w))

    def grid(self, theta: torch.Tensor, flow: torch.Tensor | None, h: int, w: int) -> torch.Tensor:
        """Where each output pixel reads the first frame: ((b t), h, w, 2) positions (x, y) in [-1, 1] inside it,
        i.e. :meth:`WarpMotion.source` at the grid's pixel centres."""
        return self._grid(self.warp_motion(theta, flow, h, w), h, w)

    @staticmethod
    def _grid(motion: WarpMotion, h: int, w: int) -> torch.Tensor:
        with torch.autocast(motion.theta.device.type, enabled=False):
            grid = F.affine_grid(motion.theta, [motion.theta.shape[0], 1, h, w], align_corners=False)
            if motion.flow is not None:
                grid = grid + motion.flow.permute(0, 2, 3, 1)  # ((b t), 2, h, w) -> ((b t), h, w, 2)
            return grid

    def warp(self, first_frame: torch.Tensor, theta: torch.Tensor, flow: torch.Tensor | None = None,
             grid: torch.Tensor | None = None) -> torch.Tensor:
        """The first frame (b, 3, h, w) moved by theta ((b t), 2, 3) [+ flow ((b t), 2, h, w)] -> ((b t), 3, h, w)."""
        bt, (b, c, h, w) = theta.shape[0], first_frame.shape
        grid = self.grid(theta, flow, h, w) if grid is None else grid
        with torch.autocast(theta.device.type, enabled=False):
            src = first_frame.float().repeat_interleave(bt // b, dim=0)  # the first frame for every (clip, frame)
            return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def forward(self, first_frame: torch.Tensor, emb: torch.Tensor, flow: torch.Tensor | None = None) -> torch.Tensor:
        """first_frame (b, 3, h, w), emb ((b t), d), flow ((b t), 2, h, w) or None -> ((b t), 3, h, w)."""
        theta, gain = self.motion(emb)
        return gain[:, :, None, None] * self.warp(first_frame, theta, flow)

    def output(self, out, first_frame, emb, flow, mask_logit=None, frames: int = 1):
        """A backbone's last step. out ((b t), 3, h, w) its own output, flow ((b t), 2, h, w), mask_logit
        ((b t), 1, h, w) or None -> F (b, 3, t, h, w) = out + g * moved, or Proposal(F, moved, sigmoid(logit),
        the :class:`WarpMotion`)."""
        theta, gain = self.motion(emb)
        motion = self.warp_motion(theta, flow, *first_frame.shape[-2:])
        grid = self._grid(motion, *first_frame.shape[-2:])
        moved = self.warp(first_frame, theta, grid=grid)  # ((b t), 3, h, w), float32
        f = rearrange(out + (gain[:, :, None, None] * moved).to(out.dtype), "(b t) c h w -> b c t h w", t=frames)
        if mask_logit is None:
            return f
        with torch.autocast(moved.device.type, enabled=False):
            # +-inside: +1 where the pixel is read from inside the first frame, -1 where the border is repeated
            inside = grid.abs().le(1).all(dim=-1, keepdim=True).permute(0, 3, 1, 2).float() * 2 - 1
            logit = mask_logit.float() + self.mask(self._hidden(emb))[:, :, None, None] + self.inside * inside
            mask = torch.sigmoid(logit)  # per pixel (features) + per frame (h_f) + where the move has content
        return Proposal(f, rearrange(moved, "(b t) c h w -> b c t h w", t=frames),
                        rearrange(mask, "(b t) c h w -> b c t h w", t=frames), motion)


def require(shapes: dict, key: str, what: str) -> tuple[int, ...]:
    """shapes[key], or a CheckpointError saying which tensor the config inference needed."""
    if key not in shapes:
        raise CheckpointError(f"not a {what} checkpoint: tensor {key!r} is missing (found {len(shapes)} tensors, "
                              f"e.g. {', '.join(sorted(shapes)[:3]) or 'none'})")
    return tuple(shapes[key])


def build(cls, config_cls, sd, source: str | None = None):
    """A backbone built on the meta device from ``sd``'s shapes and filled strictly (every tensor used)."""
    shapes = sd.shapes if hasattr(sd, "shapes") else {k: tuple(v.shape) for k, v in sd.items()}
    return load_model(cls, config_cls.from_state_dict(shapes), sd, source=source or f"the {cls.__name__} state dict", dtype=torch.float32,
                     device="cpu", hint=f"Is it a checkpoint of this backbone ({cls.__name__}), saved by `i2v train`?")
