"""Preconditioning: turn a raw network F into a denoiser ``D(x, sigma, cond) -> x0``.

Karras et al. 2022 (EDM), eq. 7 and Table 1::

    D(x, sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma))

Every sampler in :mod:`i2v.diffusion.samplers` sees only ``D``. The scalings for each parameterisation
are small pure functions ``sigma -> (c_skip, c_out, c_in, c_noise)``; :class:`Denoiser` applies them.

Layouts: ``x`` is any tensor whose first axis is the batch, e.g. ``(b, c, h, w)`` or ``(b t) c h w``;
``sigma`` is a tensor of shape ``(b,)`` (one noise level per batch element) or a scalar.
``cond`` is a dict of keyword arguments passed to the network unchanged.

A network may also propose a clean frame of its own (the built-in model's warp head moves the first frame):
it then returns a :class:`Proposal` ``(F, frames, mask)`` and the denoiser blends after preconditioning, the
composition of flow-based frame synthesis (Liu et al. 2017, Deep Voxel Flow; RIFE's fusion mask)::

    D(x, sigma) = mask * frames + (1 - mask) * (c_skip x + c_out F)

Where the mask is 1 the estimate is the proposed frame exactly, with nothing of the noisy input in it.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import nn

from ..errors import ConfigError


EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0  # EDM's noise range (Karras et al. 2022, Table 1)


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """(b,) -> (b, 1, ..., 1) with ``ndim`` axes in total, for broadcasting against x."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


class Proposal(NamedTuple):
    """A network's output when it also proposes clean frames; :class:`Denoiser` blends them into D."""
    F: torch.Tensor  # the raw output, as a plain network returns it
    frames: torch.Tensor  # proposed clean frames, same shape as x
    mask: torch.Tensor  # in [0, 1], broadcastable to x: how much of D is the proposal
    motion: object = None  # optional, ignored here: how the frames were made (the built-in warp head's maps)


def eps_scalings(sigma):
    """eps-prediction (DDPM, SD 1.x), VE form: x0 = x - sigma * eps, network input x / sqrt(sigma^2 + 1)."""
    c_skip = torch.ones_like(sigma)
    c_out = -sigma
    c_in = 1 / (sigma**2 + 1) ** 0.5
    return c_skip, c_out, c_in, sigma


def v_scalings(sigma):
    """v-prediction (Salimans & Ho 2022) with sigma_data = 1:
    c_skip = 1/(sigma^2+1), c_out = -sigma/sqrt(sigma^2+1), c_in = 1/sqrt(sigma^2+1)."""
    c_skip = 1 / (sigma**2 + 1)
    c_out = -sigma / (sigma**2 + 1) ** 0.5
    c_in = 1 / (sigma**2 + 1) ** 0.5
    return c_skip, c_out, c_in, sigma


def edm_v_scalings(sigma):
    """SVD's preconditioning: v-prediction scalings with EDM noise conditioning c_noise = 0.25 ln sigma."""
    c_skip, c_out, c_in, _ = v_scalings(sigma)
    return c_skip, c_out, c_in, 0.25 * sigma.log()


def edm_scalings(sigma, sigma_data: float = 0.5):
    """EDM (Karras et al. 2022, Table 1): c_skip = sd^2/(s^2+sd^2), c_out = s*sd/sqrt(s^2+sd^2),
    c_in = 1/sqrt(s^2+sd^2), c_noise = 0.25 ln s."""
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    c_in = 1 / (sigma**2 + sigma_data**2) ** 0.5
    return c_skip, c_out, c_in, 0.25 * sigma.log()


def flow_scalings(sigma):
    """Rectified flow / flow matching: x = (1 - sigma) x0 + sigma eps, the network predicts the
    velocity v = eps - x0, so x0 = x - sigma * v (c_skip = 1, c_out = -sigma, c_in = 1, c_noise = sigma)."""
    return torch.ones_like(sigma), -sigma, torch.ones_like(sigma), sigma


PARAMETERIZATIONS = {
    "eps": eps_scalings,
    "v": v_scalings,
    "edm_v": edm_v_scalings,
    "edm": edm_scalings,
    "flow": flow_scalings,
}


def initial_noise(noise: torch.Tensor, sigma_max: float, prediction: str, data_variance: float = 0.0):
    """The sampler's starting point at the top noise level ``sigma_max`` from a standard normal draw ``noise``.

    Flow form (x = (1 - sigma) x0 + sigma eps, sigma_max = 1 or just below): the noise itself. VE form
    (x = x0 + sigma eps): x has variance sigma_max^2 + Var(x0); ``data_variance`` is the Var(x0) the model's
    convention assumes -- 0 ignores it (EDM, the built-in model: noise * sigma_max), 1 for unit-variance latents
    (generative-models / SVD: noise * sqrt(1 + sigma_max^2))."""
    if prediction not in PARAMETERIZATIONS:
        raise ConfigError(f"unknown parameterisation {prediction!r}; choose one of: {', '.join(PARAMETERIZATIONS)}")
    if prediction == "flow":
        return noise
    if data_variance == 0:
        return noise * float(sigma_max)
    return noise * math.sqrt(float(data_variance) + float(sigma_max) ** 2)


class Denoiser(nn.Module):
    """Wraps a network ``F(x_in, c_noise, **cond)`` into ``D(x, sigma, cond) -> x0``.

    ``prediction`` names the parameterisation (one of :data:`PARAMETERIZATIONS`). ``sigma_to_c_noise``
    optionally replaces the scalings' c_noise, e.g. :func:`discrete_timestep` for networks trained on
    integer timesteps.
    """

    def __init__(self, model: Callable, prediction: str = "eps", sigma_to_c_noise: Callable | None = None):
        super().__init__()
        if prediction not in PARAMETERIZATIONS:
            raise ConfigError(f"unknown prediction type {prediction!r}; valid: {', '.join(PARAMETERIZATIONS)}")
        self.model = model
        self.prediction = prediction
        self.scalings = PARAMETERIZATIONS[prediction]
        self.sigma_to_c_noise = sigma_to_c_noise

    def noise(self, x0: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The noisy sample this parameterisation trains on: flow ``x = (1 - sigma) x0 + sigma eps``, every other
        (variance exploding) ``x = x0 + sigma eps``. ``sigma`` is (b,)."""
        s = append_dims(sigma, x0.ndim)
        if self.prediction == "flow":
            return (1 - s) * x0 + s * eps
        return x0 + s * eps

    def loss(self, x0: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        """The preconditioning's own training loss, per element (as k-diffusion's ``Denoiser.loss``)::

            ((D(x_sigma, sigma) - x0) / c_out)^2 = (F(c_in x, c_noise) - (x0 - c_skip x) / c_out)^2

        i.e. the EDM weighting lambda = 1 / c_out^2: the network regresses its own target. Reduce as you need."""
        x = self.noise(x0, sigma, eps)
        _, c_out, _, _ = self.scalings(sigma.to(x.dtype))
        return ((self(x, sigma, cond) - x0) / append_dims(c_out, x0.ndim)).square()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        sigma = sigma.to(x.dtype)
        c_skip, c_out, c_in, c_noise = self.scalings(sigma)
        if self.sigma_to_c_noise is not None:
            c_noise = self.sigma_to_c_noise(sigma)
        out = self.model(x * append_dims(c_in, x.ndim), c_noise, **(cond or {}))
        F = out.F if isinstance(out, Proposal) else out
        # D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)
        d = x * append_dims(c_skip, x.ndim) + F * append_dims(c_out, x.ndim)
        if isinstance(out, Proposal):  # blend in the network's own proposal: mask W + (1 - mask) D
            d = out.mask * out.frames + (1 - out.mask) * d
        return d


def discrete_timestep(train_sigmas: torch.Tensor) -> Callable:
    """c_noise for discrete-time models: the (fractional) training timestep t whose sigma_t equals sigma,
    found by linear interpolation in log sigma (as the original DDPM/LDM wrappers do)."""
    log_sigmas = train_sigmas.log()

    def sigma_to_t(sigma: torch.Tensor) -> torch.Tensor:
        ls = log_sigmas.to(sigma.device)
        log_sigma = sigma.to(ls.dtype).log()
        dists = log_sigma[:, None] - ls[None, :]
        low = dists.ge(0).cumsum(dim=1).argmax(dim=1).clamp(max=len(ls) - 2)
        high = low + 1
        w = ((ls[low] - log_sigma) / (ls[low] - ls[high])).clamp(0, 1)
        return ((1 - w) * low + w * high).to(sigma.dtype)

    return sigma_to_t


def flow_timestep(num_train_timesteps: int = 1000) -> Callable:
    """c_noise for flow models trained on integer timesteps (Wan): t = floor(num_train_timesteps * sigma), an
    int64 tensor, as Wan's scheduler truncates ``sigma * 1000``. Computed in float64 from the sigma the denoiser
    receives (float32: the product with 1000 is exact), so the :func:`~i2v.diffusion.schedules.wan` schedule gives
    Wan's timesteps exactly; intermediate sigmas (Heun's, DPM-2's) are truncated the same way."""

    def sigma_to_t(sigma: torch.Tensor) -> torch.Tensor:
        t = (sigma.detach().to("cpu", torch.float64) * num_train_timesteps).floor().long()  # cpu: MPS has no float64
        return t.to(sigma.device)

    return sigma_to_t
