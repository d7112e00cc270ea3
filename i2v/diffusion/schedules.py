"""Noise schedules: each returns ``n + 1`` sigmas, decreasing, ending in exactly 0.

A sigma is the noise level of the variance-exploding form ``x = x0 + sigma * eps`` (Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", EDM). Variance-preserving models
(DDPM, Stable Diffusion) are brought into that form by ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``;
flow-matching models use ``x = (1 - sigma) x0 + sigma * eps`` with sigma in [0, 1].

Every function is pure: same arguments, same tensor (float64, on CPU unless ``device`` is given).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


def _check_steps(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {n!r}")


def _check_range(sigma_min: float, sigma_max: float) -> None:
    if not (sigma_min > 0 and sigma_max > 0):
        raise ConfigError(f"sigma_min and sigma_max must be > 0, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if sigma_min >= sigma_max:
        raise ConfigError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min} >= sigma_max={sigma_max}")


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, device=None) -> torch.Tensor:
    """EDM schedule (Karras et al. 2022, eq. 5):
    sigma_i = (sigma_max^(1/rho) + i/(n-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, then 0."""
    _check_steps(n)
    _check_range(sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64, device=device)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return _append_zero(sigmas)


def exponential(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, device=None) -> torch.Tensor:
    """Log-linear schedule: ln sigma evenly spaced from ln sigma_max to ln sigma_min, then 0."""
    _check_steps(n)
    _check_range(sigma_min, sigma_max)
    sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64, device=device).exp()
    return _append_zero(sigmas)


# --- variance-preserving (DDPM-style) schedules, defined by betas over training timesteps -----------------

def betas_linear(beta_start: float = 1e-4, beta_end: float = 0.02, num_train_timesteps: int = 1000) -> torch.Tensor:
    """DDPM linear betas (Ho et al. 2020)."""
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)


def betas_scaled_linear(beta_start: float = 0.00085, beta_end: float = 0.012, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Stable Diffusion's betas: linear in sqrt(beta)."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2


def betas_cosine(num_train_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine betas (Nichol & Dhariwal 2021, eq. 17): alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) * pi/2),
    beta_t = min(1 - alpha_bar(t+1)/alpha_bar(t), max_beta)."""
    def alpha_bar(t):
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    T = num_train_timesteps
    return torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)], dtype=torch.float64)


def train_sigmas(betas: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) with alpha_bar_t = prod_{s<=t} (1 - beta_s)."""
    alpha_bar = torch.cumprod(1 - betas, dim=0)
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def vp_from_betas(n: int, betas: torch.Tensor, device=None) -> torch.Tensor:
    """Pick n noise levels of a discrete VP model: timesteps evenly spaced from T-1 down to 0
    ("linspace" spacing), sigma interpolated linearly between training timesteps, then 0."""
    _check_steps(n)
    sig = train_sigmas(betas)
    T = len(sig)
    t = torch.linspace(T - 1, 0, n, dtype=torch.float64)
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=T - 1)
    w = t - lo
    sigmas = (1 - w) * sig[lo] + w * sig[hi]
    return _append_zero(sigmas).to(device)


def vp_linear(n: int, beta_start: float = 1e-4, beta_end: float = 0.02, num_train_timesteps: int = 1000, device=None) -> torch.Tensor:
    """DDPM linear-beta model's noise levels (see :func:`vp_from_betas`)."""
    return vp_from_betas(n, betas_linear(beta_start, beta_end, num_train_timesteps), device)


def scaled_linear(n: int, beta_start: float = 0.00085, beta_end: float = 0.012, num_train_timesteps: int = 1000, device=None) -> torch.Tensor:
    """Stable-Diffusion scaled-linear-beta noise levels (see :func:`vp_from_betas`)."""
    return vp_from_betas(n, betas_scaled_linear(beta_start, beta_end, num_train_timesteps), device)


def cosine(n: int, num_train_timesteps: int = 1000, s: float = 0.008, device=None) -> torch.Tensor:
    """Cosine-schedule noise levels (see :func:`betas_cosine`, :func:`vp_from_betas`)."""
    return vp_from_betas(n, betas_cosine(num_train_timesteps, s), device)


def flow(n: int, shift: float = 1.0, device=None) -> torch.Tensor:
    """Flow-matching sigmas for ``x = (1 - sigma) x0 + sigma eps``: t evenly spaced from 1 to 0, then the
    time shift of SD3 (Esser et al. 2024, eq. 23): sigma = shift t / (1 + (shift - 1) t). shift > 1 spends
    more steps at high noise."""
    _check_steps(n)
    if not shift > 0:
        raise ConfigError(f"flow shift must be > 0, got {shift}")
    t = torch.linspace(1, 0, n + 1, dtype=torch.float64, device=device)
    # shift t / (1 + (shift - 1) t), written as t / (t + (1 - t) / shift) so sigma is exactly 1 at t = 1
    return t / (t + (1 - t) / shift)


WAN_SIGMA_MAX = float(torch.tensor(0.999, dtype=torch.float32))  # = 0.99900001287..., see :func:`wan`


def wan(n: int, shift: float = 5.0, sigma_max: float = WAN_SIGMA_MAX, num_train_timesteps: int = 1000,
        device=None) -> torch.Tensor:
    """Wan's shifted flow schedule (Wan-Video/Wan2.1 ``wan/utils/fm_solvers_unipc.py``, ``set_timesteps``)::

        s_i = linspace(sigma_max, 0, n + 1)[i],  i < n      (numpy's linspace, float64)
        sigma_i = shift s_i / (1 + (shift - 1) s_i),  then 0

    sigma_max is what Wan's scheduler stores as its largest training sigma, float32(1 - 1/1000) (UniPC, the
    default); Wan's DPM++ starts at 1.0 (``get_sampling_sigmas``). Wan's network sees the integer timestep
    trunc(1000 sigma_i) of the float64 sigma (e.g. [999, 899, 749, 499] for 4 steps, shift 3), and its
    scheduler keeps sigma in float32. The sigmas returned are those float32 values (in a float64 tensor), each
    moved by one float32 step where rounding would cross a multiple of 1/1000, so that
    :func:`i2v.diffusion.denoisers.flow_timestep` recovers Wan's timesteps exactly from the float32 sigma the
    denoiser receives."""
    import numpy as np

    _check_steps(n)
    if not shift > 0:
        raise ConfigError(f"flow shift must be > 0, got {shift}")
    if not 0 < sigma_max <= 1:
        raise ConfigError(f"sigma_max must be in (0, 1], got {sigma_max}")
    s = np.linspace(sigma_max, 0.0, n + 1)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    timesteps = (s * num_train_timesteps).astype(np.int64)  # Wan: torch.from_numpy(...).to(torch.int64)
    sig32 = s.astype(np.float32)
    for i, t in enumerate(timesteps):  # float32 sigma whose floor(1000 sigma) is Wan's timestep
        while np.floor(np.float64(sig32[i]) * num_train_timesteps) < t:
            sig32[i] = np.nextafter(sig32[i], np.float32(np.inf))
        while np.floor(np.float64(sig32[i]) * num_train_timesteps) > t:
            sig32[i] = np.nextafter(sig32[i], np.float32(0))
    return _append_zero(torch.from_numpy(sig32.astype(np.float64))).to(device)


# name -> function; an explicit table (no reflection). What each does, in one line: diffusion/catalog.py
SCHEDULES = {
    "karras": karras,
    "exponential": exponential,
    "vp_linear": vp_linear,
    "scaled_linear": scaled_linear,
    "cosine": cosine,
    "flow": flow,
    "wan": wan,
}


def get_schedule(name: str):
    """The schedule function called ``name``; a clear error listing valid names otherwise."""
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ConfigError(f"unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}") from None
