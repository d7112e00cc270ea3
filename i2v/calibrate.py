"""Calibrating the built-in model's warp mask on the sampler's own trajectories: ``train.stage = "calibrate"``.

Training noises the *true* clip, ``x = x0 + sigma eps``, and there the network's own estimate is good, so the warp
mask learns to mix it in. Sampling feeds the network its *own* previous estimates plus noise (exposure bias; Ning
et al. 2023), where that estimate is worse and flickers from frame to frame. :func:`calibration_loss` runs the
sampler the pipeline uses and takes the diffusion loss at each of its steps against the true clip, optionally plus
the short-term temporal loss of Lai et al. 2018 (:func:`temporal_loss`); only the mask's parameters learn
(:func:`calibration_parameters`). The loop itself is :func:`i2v.train.train`.
"""

from __future__ import annotations

import torch

from .diffusion.denoisers import Denoiser, append_dims
from .errors import ConfigError
from .metrics import consecutive_flows, warping_error_along


MASK_LAYERS = ("mask_out", "warp.mask", "warp.inside")  # the warp mask's own parameters


def calibration_parameters(model, layers=MASK_LAYERS) -> list:
    """The parameters stage "calibrate" trains: those named ``layer`` or under ``layer.`` for each of ``layers``.
    By default the warp mask's own (the per-pixel ``mask_out``, the per-frame ``warp.mask``, the prior weight
    ``warp.inside``): they decide how much of D is the moved first frame and how much the network's estimate."""
    named = dict(model.named_parameters())
    chosen = {}
    for layer in layers:
        hits = {n: p for n, p in named.items() if n == layer or n.startswith(layer + ".")}
        if not hits:
            tops = sorted({n.split(".")[0] for n in named})
            raise ConfigError(f"train.calibrate_layers: {layer!r} names no parameter of {type(model).__name__}; "
                              f"its modules are {', '.join(tops)} (use a name or a prefix such as 'warp.mask')")
        chosen.update(hits)
    return [p for n, p in named.items() if n in chosen]


def true_flows(x0: torch.Tensor) -> torch.Tensor:
    """Optical flow between consecutive frames of the true clips, frame k+1 -> frame k, measured by DIS as the
    evaluation's warping error measures it. x0 (b, 3, t, h, w) in [-1, 1] -> (b, t-1, 2, h, w) pixels."""
    return consecutive_flows((x0.detach().float().clamp(-1, 1) + 1) / 2).to(x0.device)


def temporal_loss(video: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """Short-term temporal loss (Lai et al. 2018, "Learning Blind Video Temporal Consistency", eq. 3): the mean
    over consecutive frames of the mean |O_{k+1}(p) - O_k(p + F(p))| over the pixels p whose flow lands inside,
    with F = ``flows`` (b, t-1, 2, h, w) the true clip's flow from frame k+1 to frame k. ``video`` (b, c, t, h, w).
    It is :func:`i2v.evaluate.warping_error_along`: the evaluation's warping error, with the true clip's flow
    instead of the one measured on the generated video."""
    return warping_error_along(video, flows)


def calibration_loss(denoiser: Denoiser, x0, cond: dict, sigmas, eps, on: str = "trajectory",
                     temporal: float = 0.0, flows: torch.Tensor | None = None) -> torch.Tensor:
    """The diffusion loss on the inputs the sampler really meets (exposure bias; Ning et al. 2023).

    Training noises the *true* clip, ``x = x0 + sigma eps``, and there the network's own estimate is good, so the
    mask learns to mix it in. Sampling feeds the network its *own* previous estimates plus noise, where that
    estimate is worse and flickers from frame to frame. Here the sampler the pipeline uses (DPM-Solver++(2M) on
    ``sigmas``) runs from ``x = sigma_max eps`` with the current weights, and at each of its steps the loss
    ``((D(x_i, sigma_i) - x0) / c_out)^2`` over frames 1..T-1 is taken against the true clip; the sampler goes on
    with D detached, so gradients reach only the last layers (in practice the mask, the only trainable part).
    Returns the mean over steps (``on="trajectory"``) or the last step's loss (``on="output"``: the sampler
    returns that estimate, D(x, sigma_min), as the video), plus ``temporal`` times the :func:`temporal_loss` of
    that video (frame 0 replaced by the true one, as the pipeline does) along the true clip's ``flows``."""
    from .diffusion.samplers import dpmpp_2m

    losses, estimates = [], []

    def recording(x, sigma, c):
        with torch.enable_grad():  # the sampler runs under no_grad
            d = denoiser(x, sigma, c)
            _, c_out, _, _ = denoiser.scalings(sigma)
            losses.append(((d - x0) / append_dims(c_out, x0.ndim))[:, :, 1:].float().square().mean())
            estimates.append(d)
        return d.detach()

    dpmpp_2m(recording, eps * sigmas[0], sigmas, cond=cond)
    loss = losses[-1] if on == "output" else torch.stack(losses).mean()
    if temporal:
        video = torch.cat([x0[:, :, :1], estimates[-1][:, :, 1:]], dim=2).float()  # frame 0 is the input image
        loss = loss + temporal * temporal_loss(video, true_flows(x0) if flows is None else flows)
    return loss


