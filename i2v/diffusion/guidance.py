"""Guidance wraps a denoiser into another denoiser; samplers never know about it.

Classifier-free guidance (Ho & Salimans 2022): D_cfg = D_u + w (D_c - D_u), computed in one batched
call on [uncond; cond]. ``w`` may be a float or a per-frame tensor (SVD's linear ramp over frames).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .denoisers import append_dims


def frame_ramp(min_scale: float, max_scale: float, num_frames: int) -> torch.Tensor:
    """Per-frame guidance scale w_f = linspace(min_scale, max_scale, T)[f] (SVD's LinearPredictionGuider)."""
    if num_frames < 1:
        raise ConfigError(f"num_frames must be >= 1, got {num_frames}")
    return torch.linspace(min_scale, max_scale, num_frames, dtype=torch.float64)


def _cat_cond(uncond: dict, cond: dict) -> dict:
    if uncond.keys() != cond.keys():
        raise ConfigError(f"cond and uncond must have the same keys, got {sorted(cond)} and {sorted(uncond)}")
    out = {}
    for k in cond:
        c, u = cond[k], uncond[k]
        out[k] = torch.cat([u, c]) if isinstance(c, torch.Tensor) else c
    return out


class CFGDenoiser:
    """D_cfg(x, sigma, cond) = D_u + w (D_c - D_u) with D_u = D(x, sigma, uncond).

    ``cond`` passed at call time must be a dict ``{"cond": {...}, "uncond": {...}}``; both halves go through
    the wrapped denoiser in one batch ``[uncond; cond]``. ``scale`` is a float or a tensor of per-frame
    scales of length T, for ``x`` laid out as ``(b t) c h w`` (frames folded into the batch).
    """

    def __init__(self, denoiser, scale):
        self.denoiser = denoiser
        self.scale = scale

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
        if not isinstance(cond, dict) or set(cond) != {"cond", "uncond"}:
            raise ConfigError("CFGDenoiser needs cond={'cond': {...}, 'uncond': {...}}")
        sigma = torch.as_tensor(sigma, device=x.device)
        if sigma.ndim == 0:  # one sigma for the whole batch, as Denoiser accepts too
            sigma = sigma.expand(x.shape[0])
        scale = self.scale
        if isinstance(scale, (int, float)) and scale == 1.0:
            return self.denoiser(x, sigma, cond["cond"])  # w = 1 is the conditional model alone
        d_u, d_c = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), _cat_cond(cond["uncond"], cond["cond"])).chunk(2)
        if isinstance(scale, torch.Tensor):
            T = scale.numel()
            if x.shape[0] % T:
                raise ConfigError(f"per-frame scale has {T} values but the batch has {x.shape[0]} items, not a multiple")
            # (t,) -> ((b t),) -> ((b t), 1, 1, 1)
            scale = append_dims(scale.to(x.device, x.dtype).repeat(x.shape[0] // T), x.ndim)
        return d_u + scale * (d_c - d_u)


class ImposeKnown:
    """Conditioning by replacement: D'(x, sigma, cond) = mask * known + (1 - mask) * D(x, sigma, cond).

    Where ``mask`` is 1 the clean latent is known (Wan2.2 TI2V: latent frame 0 is the image's VAE latent), so the
    data prediction there is the known latent itself. Start from ``x = mask * known + (1 - mask) * noise``: every
    sampler update is a combination of x and data predictions with weights summing to 1 (sigma_t / sigma_s +
    (1 - sigma_t / sigma_s) = 1 in the first-order part; the higher-order terms are differences of predictions,
    0 there), so the known part stays at ``known`` to rounding, and nothing else changes: the update acts on each
    element alone. This is what Wan's TI2V does by writing frame 0 back after every scheduler step, in a form every
    sampler of the core accepts. ``known`` and ``mask`` broadcast against x."""

    def __init__(self, denoiser, known: torch.Tensor, mask: torch.Tensor):
        self.denoiser, self.known, self.mask = denoiser, known, mask

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor:
        d = self.denoiser(x, sigma, cond)
        m = self.mask.to(d.device, d.dtype)
        return m * self.known.to(d.device, d.dtype) + (1 - m) * d
