"""Calibrating the built-in model's warp mask on the sampler's own trajectories: ``train.stage = "calibrate"``.

Training noises the *true* clip, ``x = x0 + sigma eps``, and there the network's own estimate is good, so the warp
mask learns to mix it in. Sampling feeds the network its *own* previous estimates plus noise (exposure bias; Ning
et al. 2023), where that estimate is worse and flickers from frame to frame. :func:`calibration_loss` runs the
sampler the pipeline uses and takes the diffusion loss at each of its steps against the true clip, optionally plus
the short-term temporal loss of Lai et al. 2018 (:func:`temporal_loss`); only the mask's parameters learn
(:func:`calibration_parameters`). The loop itself is :func:`i2v.train.train`.

``train.stage = "camera"`` fits the warp head's camera move instead. The head's affine map depends on the
conditioning alone (label, speed, frame, noise level), and for the camera classes the training data's move is a
known affine map of the image plane (:func:`i2v.data.procedural.camera_transform`). Learnt only through the
images (the diffusion loss and :func:`i2v.train.warp_loss`), it stays off by up to ~1 px at 256 px, invisible at
64 px but the whole error once the photo is rendered at its own resolution along it. :func:`camera_loss`
regresses it onto the true map directly (the mean displacement of a grid of points), while keeping the head's
other per-frame outputs (gain, mask logit) where they were (:data:`CAMERA_LAYERS` learn, nothing else).
"""

from __future__ import annotations

import torch

from .diffusion.denoisers import Denoiser, append_dims
from .errors import ConfigError
from .metrics import consecutive_flows, warping_error_along


MASK_LAYERS = ("mask_out", "warp.mask", "warp.inside")  # the warp mask's own parameters
CAMERA_LAYERS = ("warp.hidden", "warp.affine", "warp.gain", "warp.mask")  # the warp head's per-frame layers


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


# --- stage "camera": the warp head's affine map against the true camera move ---------------------------------

def camera_theta(motion: str, speed: float, frames: int, size: int) -> torch.Tensor:
    """The true camera move of class ``motion`` as the warp head writes it: (frames, 2, 3) maps theta_k such that
    the point x of frame k (normalised, ``align_corners=False``: -1 and 1 are the outer pixel edges) shows frame
    0 at theta_k [x; 1]. In pixels the background's backward map is B_k = C_0 C_k^-1
    (:func:`~i2v.data.procedural.camera_backward`; C_k maps frame-0 pixels to frame-k pixels); in normalised coordinates
    theta_k = N B_k N^-1 with N: p -> (2 p + 1) / size - 1. The identity for static, slide and bounce (the camera
    is still there)."""
    import numpy as np

    from .data.procedural import camera_backward

    n = np.array([[2 / size, 0, 1 / size - 1], [0, 2 / size, 1 / size - 1], [0, 0, 1]])  # pixels -> normalised
    out = [n @ np.vstack([camera_backward(motion, speed, k, size), [0, 0, 1]]) @ np.linalg.inv(n)
           for k in range(frames)]
    return torch.from_numpy(np.stack(out)[:, :2]).float()


def draw_camera_batch(batch: int, step: int, seed: int = 0, sigma_min: float = 0.002, sigma_max: float = 80.0):
    """Step ``step``'s conditioning for stage "camera", a function of (seed, step): ``batch`` clips with a label
    uniform over the motion classes, speed uniform in [0.5, 1.5] (the training data's range) and ln sigma uniform
    in [ln sigma_min, ln sigma_max] (the noise levels the sampler visits). -> labels (b,), speeds (b,), sigma (b,)."""
    from .data.procedural import MOTIONS

    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    labels = torch.randint(len(MOTIONS), (batch,), generator=g)
    speeds = 0.5 + torch.rand(batch, generator=g)
    lo, hi = torch.tensor([sigma_min, sigma_max]).log()
    sigma = (lo + (hi - lo) * torch.rand(batch, generator=g)).exp()
    return labels, speeds, sigma


def camera_error(theta: torch.Tensor, target: torch.Tensor, size: int) -> torch.Tensor:
    """Per map: the mean distance, in pixels of a ``size`` frame, between where ``theta`` and ``target`` (both
    (n, 2, 3), normalised) send a 9 x 9 grid of points spread over the frame. -> (n,)."""
    s = torch.linspace(-1, 1, 9, device=theta.device)
    y, x = torch.meshgrid(s, s, indexing="ij")
    points = torch.stack([x.flatten(), y.flatten(), torch.ones(81, device=theta.device)])  # (3, 81)
    return ((theta - target) @ points).norm(dim=1).mean(dim=1) * size / 2


def camera_loss(model, labels, speeds, c_noise, frames: int, size: int, reference=None,
                keep: float = 100.0) -> torch.Tensor:
    """Stage "camera": the mean :func:`camera_error` of the head's maps for this conditioning, plus ``keep``
    times the squared change of its gain and per-frame mask logit against ``reference`` (the model the stage
    started from), so that only the move changes. labels, speeds, c_noise (b,) -> a scalar."""
    from .data.procedural import MOTIONS

    target = torch.cat([camera_theta(MOTIONS[int(m)], float(v), frames, size)
                        for m, v in zip(labels.tolist(), speeds.tolist())]).to(c_noise.device)  # ((b t), 2, 3)
    theta, gain, mask = model.warp.per_frame(model.embed(c_noise, labels, speeds, frames))
    loss = camera_error(theta, target, size).mean()
    if reference is not None:
        with torch.no_grad():
            _, gain0, mask0 = reference.warp.per_frame(reference.embed(c_noise, labels, speeds, frames))
        loss = loss + keep * (gain - gain0).square().mean()
        if mask is not None:
            loss = loss + keep * (mask - mask0).square().mean()
    return loss
