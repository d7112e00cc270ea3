"""Samplers: pure functions that integrate from noise to data with a denoiser ``D(x, sigma, cond) -> x0``.

Every sampler has the same signature (the k-diffusion convention, Crowson 2022)::

    x0 = sampler(denoiser, x, sigmas, *, cond=None, generator=None, callback=None)

- ``x``: the starting noise, already scaled to ``sigmas[0]`` (``randn * sigmas[0]`` for VE/EDM models).
- ``sigmas``: ``n + 1`` decreasing noise levels ending in 0 (see :mod:`i2v.diffusion.schedules`).
- ``generator``: a ``torch.Generator`` for the fresh noise of stochastic samplers (reproducibility).
- ``callback``: called after each step with ``{"i", "x", "sigma", "sigma_next", "denoised"}`` (progress bars, previews).

The probability-flow ODE in this parameterisation is dx/dsigma = (x - D(x, sigma)) / sigma (EDM eq. 3
with sigma(t) = t); each sampler below is one way to integrate it (or its SDE). Coefficients are computed
in float64 from the sigmas; the state keeps the dtype of ``x``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConfigError, NumericalError


# ----------------------------------------------------------------------------------------- helpers

def _check_sigmas(sigmas: torch.Tensor) -> list[float]:
    """Validate a schedule and return it as Python floats (float64)."""
    s = torch.as_tensor(sigmas).detach().to("cpu", torch.float64)
    if s.ndim != 1 or len(s) < 2:
        raise ConfigError(f"sigmas must be a 1-D tensor of n + 1 >= 2 noise levels, got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all() or (s < 0).any():
        raise ConfigError(f"sigmas must be finite and >= 0, got {s.tolist()}")
    if not (s[1:] < s[:-1]).all():
        raise ConfigError(f"sigmas must be strictly decreasing, got {s.tolist()}")
    return s.tolist()


def _check_finite(x: torch.Tensor, i: int, sigma: float, what: str = "sampler state") -> None:
    if not torch.isfinite(x).all():
        raise NumericalError(
            f"{what} became NaN/inf at step {i} (sigma={sigma:.4g}); in float16 this is usually an overflow: "
            "try bfloat16 or float32"
        )


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn from ``generator`` (on its own device) for reproducibility."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)


def _denoise(denoiser, x, sigma: float, cond, i: int):
    s_in = x.new_ones([x.shape[0]])
    denoised = denoiser(x, sigma * s_in, cond)
    _check_finite(denoised, i, sigma, "denoiser output")
    return denoised


def _report(callback, i, x, sigma, sigma_next, denoised):
    _check_finite(x, i, sigma_next)
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split the step sigma -> sigma_next into a deterministic part to sigma_down and fresh noise sigma_up,
    with sigma_down^2 + sigma_up^2 = sigma_next^2 and
    sigma_up = eta * sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)  (DDIM's sigma_eta in VE form)."""
    if not eta:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    sigma_down = math.sqrt(sigma_next**2 - sigma_up**2)
    return sigma_down, sigma_up


# ----------------------------------------------------------------------------------------- samplers

@torch.no_grad()
def euler(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without churn).
    First order: x <- x + (sigma_next - sigma) * d, d = (x - D(x, sigma)) / sigma."""
    s = _check_sigmas(sigmas)
    _check_finite(x, 0, s[0], "initial noise")
    for i in range(len(s) - 1):
        denoised = _denoise(denoiser, x, s[i], cond, i)
        d = (x - denoised) / s[i]
        x = x + d * (s[i + 1] - s[i])
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


@torch.no_grad()
def euler_ancestral(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta: float = 1.0):
    """Ancestral Euler: an Euler step down to sigma_down, then fresh noise of std sigma_up
    (see :func:`ancestral_step`). eta = 0 gives :func:`euler`."""
    s = _check_sigmas(sigmas)
    _check_finite(x, 0, s[0], "initial noise")
    for i in range(len(s) - 1):
        denoised = _denoise(denoiser, x, s[i], cond, i)
        sigma_down, sigma_up = ancestral_step(s[i], s[i + 1], eta)
        d = (x - denoised) / s[i]
        x = x + d * (sigma_down - s[i])
        if s[i + 1] > 0 and sigma_up > 0:
            x = x + _noise(x, generator) * sigma_up
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


@torch.no_grad()
def heun(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """Heun's second-order method (Karras et al. 2022, Algorithm 1): an Euler predictor to sigma_next,
    then the trapezoidal corrector x <- x + (d + d') / 2 * dt. The last step (to sigma = 0) is plain Euler."""
    s = _check_sigmas(sigmas)
    _check_finite(x, 0, s[0], "initial noise")
    for i in range(len(s) - 1):
        denoised = _denoise(denoiser, x, s[i], cond, i)
        d = (x - denoised) / s[i]
        dt = s[i + 1] - s[i]
        if s[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = _denoise(denoiser, x_2, s[i + 1], cond, i)
            d_2 = (x_2 - denoised_2) / s[i + 1]
            x = x + (d + d_2) / 2 * dt
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


@torch.no_grad()
def dpm2(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """DPM-Solver-2 in the midpoint form of k-diffusion's ``sample_dpm_2`` (Lu et al. 2022, Algorithm 1):
    a half step to sigma_mid = sqrt(sigma * sigma_next) (geometric mean), then the full step with the
    slope there. Second order; the last step is Euler."""
    s = _check_sigmas(sigmas)
    _check_finite(x, 0, s[0], "initial noise")
    for i in range(len(s) - 1):
        denoised = _denoise(denoiser, x, s[i], cond, i)
        d = (x - denoised) / s[i]
        if s[i + 1] == 0:
            x = x + d * (s[i + 1] - s[i])
        else:
            sigma_mid = math.exp((math.log(s[i]) + math.log(s[i + 1])) / 2)
            x_2 = x + d * (sigma_mid - s[i])
            denoised_2 = _denoise(denoiser, x_2, sigma_mid, cond, i)
            d_2 = (x_2 - denoised_2) / sigma_mid
            x = x + d_2 * (s[i + 1] - s[i])
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


@torch.no_grad()
def dpmpp_2m(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2), multistep second order in lambda = -ln sigma:
    x_next = (sigma_next / sigma) x - expm1(-h) D_hat, with D_hat = (1 + 1/2r) D_i - (1/2r) D_{i-1},
    h = lambda_next - lambda, r = h_last / h. First order at the first step and the last (sigma_next = 0)."""
    s = _check_sigmas(sigmas)
    _check_finite(x, 0, s[0], "initial noise")
    old_denoised = None
    for i in range(len(s) - 1):
        denoised = _denoise(denoiser, x, s[i], cond, i)
        if s[i + 1] == 0:
            x = denoised  # the limit h -> inf of the update below
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            if old_denoised is None:
                denoised_d = denoised
            else:
                r = (math.log(s[i - 1]) - math.log(s[i])) / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (s[i + 1] / s[i]) * x - math.expm1(-h) * denoised_d
        old_denoised = denoised
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


@torch.no_grad()
def dpmpp_2m_sde(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta: float = 1.0):
    """DPM-Solver++(2M) SDE, midpoint variant (Lu et al. 2022b; k-diffusion ``sample_dpmpp_2m_sde``):
    x_next = (sigma_next/sigma) e^{-eta h} x + (1 - e^{-(1+eta) h}) D
             [+ 0.5 (1 - e^{-(1+eta) h}) (D - D_prev) / r]  +  sigma_next sqrt(1 - e^{-2 eta h}) z."""
    s = _check_sigmas(sigmas)
    _check_finite(x, 0, s[0], "initial noise")
    old_denoised, h_last = None, None
    for i in range(len(s) - 1):
        denoised = _denoise(denoiser, x, s[i], cond, i)
        if s[i + 1] == 0:
            x = denoised
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            eta_h = eta * h
            x = (s[i + 1] / s[i]) * math.exp(-eta_h) * x + (-math.expm1(-h - eta_h)) * denoised
            if old_denoised is not None:
                r = h_last / h
                x = x + 0.5 * (-math.expm1(-h - eta_h)) * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + _noise(x, generator) * (s[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)))
            h_last = h
        old_denoised = denoised
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


@torch.no_grad()
def ddim(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta: float = 0.0):
    """DDIM (Song et al. 2021, eq. 12) in VE form: with eps = (x - x0) / sigma,
    x_next = x0 + sqrt(sigma_next^2 - sigma_up^2) eps + sigma_up z, where sigma_up is DDIM's sigma_eta
    divided by sqrt(alpha_bar_next) (:func:`ancestral_step`). eta = 0 is deterministic (equal to Euler
    in this parameterisation), eta = 1 is DDPM's ancestral sampling."""
    s = _check_sigmas(sigmas)
    _check_finite(x, 0, s[0], "initial noise")
    for i in range(len(s) - 1):
        denoised = _denoise(denoiser, x, s[i], cond, i)
        eps = (x - denoised) / s[i]
        sigma_down, sigma_up = ancestral_step(s[i], s[i + 1], eta)
        x = denoised + eps * sigma_down
        if sigma_up > 0:
            x = x + _noise(x, generator) * sigma_up
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


@torch.no_grad()
def ddpm(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) with the posterior variance beta_tilde:
    identical to :func:`ddim` with eta = 1."""
    return ddim(denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, eta=1.0)


def lms_coefficient(order: int, s: list[float], i: int, j: int) -> float:
    """Integral over [s_i, s_{i+1}] of the Lagrange basis polynomial of node s_{i-j} through the nodes
    s_i, ..., s_{i-order+1}. The polynomial is integrated exactly (numpy), not by quadrature."""
    nodes = [s[i - k] for k in range(order) if k != j]
    poly = np.poly1d(np.poly(nodes)) if nodes else np.poly1d([1.0])
    poly = poly / np.prod([s[i - j] - n for n in nodes]) if nodes else poly
    antiderivative = np.polyint(poly)
    return float(antiderivative(s[i + 1]) - antiderivative(s[i]))


@torch.no_grad()
def lms(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, order: int = 4):
    """Linear multistep (Adams-Bashforth on non-uniform sigmas, k-diffusion ``sample_lms``):
    x_next = x + sum_j c_j d_{i-j}, c_j = the integral of the j-th Lagrange basis polynomial."""
    s = _check_sigmas(sigmas)
    _check_finite(x, 0, s[0], "initial noise")
    ds = []
    for i in range(len(s) - 1):
        denoised = _denoise(denoiser, x, s[i], cond, i)
        ds.append((x - denoised) / s[i])
        if len(ds) > order:
            ds.pop(0)
        cur_order = min(i + 1, order)
        coeffs = [lms_coefficient(cur_order, s, i, j) for j in range(cur_order)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


@torch.no_grad()
def flow_euler(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """Euler on the flow-matching ODE dx/dsigma = v with v = eps - x0 = (x - D(x, sigma)) / sigma
    (Lipman et al. 2023; Liu et al. 2023). ``x`` starts as pure noise at sigma = 1 (not scaled).
    Algebraically the same update as :func:`euler`, written in the velocity form flow models use."""
    s = _check_sigmas(sigmas)
    _check_finite(x, 0, s[0], "initial noise")
    for i in range(len(s) - 1):
        denoised = _denoise(denoiser, x, s[i], cond, i)
        v = (x - denoised) / s[i]
        x = x + (s[i + 1] - s[i]) * v
        _report(callback, i, x, s[i], s[i + 1], denoised)
    return x


# name -> (function, one line for `i2v samplers`). An explicit table: no reflection.
SAMPLERS = {
    "euler": (euler, "Euler on the probability-flow ODE, 1st order, deterministic (EDM Alg. 2, no churn)"),
    "euler_ancestral": (euler_ancestral, "Euler + fresh noise each step (eta=1), stochastic"),
    "heun": (heun, "Heun predictor-corrector, 2nd order, 2 model calls per step (EDM Alg. 1)"),
    "dpm2": (dpm2, "DPM-Solver-2 midpoint, 2nd order, 2 model calls per step"),
    "dpmpp_2m": (dpmpp_2m, "DPM-Solver++(2M), multistep 2nd order, 1 call per step, deterministic"),
    "dpmpp_2m_sde": (dpmpp_2m_sde, "DPM-Solver++(2M) SDE (midpoint), stochastic"),
    "ddim": (ddim, "DDIM (eta=0: deterministic; pass eta for stochastic)"),
    "ddpm": (ddpm, "DDPM ancestral sampling with posterior variance (DDIM eta=1)"),
    "lms": (lms, "linear multistep, order 4, deterministic"),
    "flow_euler": (flow_euler, "Euler in velocity form for flow-matching models (use with the 'flow' schedule)"),
}


def get_sampler(name: str):
    """The sampler function called ``name``; a clear error listing valid names otherwise."""
    try:
        return SAMPLERS[name][0]
    except KeyError:
        raise ConfigError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLERS)}") from None


def progress_callback(total: int, desc: str = "sampling", then=None):
    """A callback that drives a tqdm progress bar (and optionally calls ``then(info)`` too)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, leave=False)

    def callback(info):
        bar.update(1)
        if info["i"] == total - 1:
            bar.close()
        if then is not None:
            then(info)

    return callback
