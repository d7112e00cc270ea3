"""Flow-based frame interpolation on i2v's motion primitives (no learned weights).

Given frames I_0, I_1 and a time t in (0, 1):

1. **Bidirectional flow** F_0->1, F_1->0, in i2v's convention: I_0(p) ~ I_1(p + F_0->1(p)). Default
   ``flow="dis-fine"``: OpenCV DIS (Kroeger et al. ECCV 2016) with the medium preset but refined down to full
   resolution (finest scale 0 instead of 1: +0.3 dB here); ``"dis"`` / ``"farneback"`` go through
   :func:`i2v.motion.flow.estimate_flow`.
2. **Intermediate flows** F_t->0, F_t->1 (where to sample each input for a pixel p of the frame at time t).
   *Linear approximation* (Super SloMo, Jiang et al. CVPR 2018, eq. 4), assuming the flow at p at time t is
   that of the same place in the inputs:

       F_t->0 = -(1 - t) t F_0->1 + t^2 F_1->0
       F_t->1 = (1 - t)^2 F_0->1 - t (1 - t) F_1->0

   *Flow projection* (default, ``intermediate="splat"``; the idea of DAIN, Bao et al. CVPR 2019, without the
   depth): a pixel q of I_0 moving straight reaches q + t F_0->1(q) at time t, where F_t->0 = -t F_0->1(q) and
   F_t->1 = (1 - t) F_0->1(q); a pixel of I_1 reaches q + (1 - t) F_1->0(q) with F_t->1 = -(1 - t) F_1->0(q),
   F_t->0 = t F_1->0(q). Both sets are forward-splatted (bilinear) and averaged, weighted by 1 - occlusion and
   by closeness in time; where little or nothing lands (holes of the projection) the linear approximation
   fills in.

3. **Occlusion-aware blending.** A pixel p of I_0 whose flow does not come back, |F_0->1(p) + F_1->0(p +
   F_0->1(p))| large (forward-backward check, Sundaram et al. ECCV 2010), is occluded in I_1; such content can
   only be seen in I_0, so at time t the sample from I_1 gets no weight there. With O_0, O_1 those soft
   occlusion maps (1 = occluded in the other frame) carried to time t by the same backward warp,

       I_t = ((1 - t) V_0 I_0(p + F_t->0) + t V_1 I_1(p + F_t->1)) / ((1 - t) V_0 + t V_1)
       V_0 = (1 - k O_1(p + F_t->1)) * inside_0,   V_1 = (1 - k O_0(p + F_t->0)) * inside_1

   (Super SloMo eq. 1 with visibility maps from the flow check instead of a network). The check also fires
   where the flow is merely wrong, not occluded; ``occlusion_strength`` k = 0.5 keeps some of both samples
   there (k = 1 costs 0.3 dB on UCF101 triplets, k = 0.5 is neutral on them and fixes true occlusions, see
   the synthetic test).
4. **Holes**: where both weights vanish (both samples leave the image or are flagged occluded) the frame falls
   back to the time-weighted average of the two warped inputs, so no pixel is left undefined.

Layouts: images (b, 3, h, w) float in [0, 1] or (h, w, 3) uint8; flows (b, 2, h, w) in pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, InputError
from ..image import to_tensor
from ..motion.flow import estimate_flow
from ..motion.warp import backward_warp, forward_splat, inside_mask


def _flow_tensor(f: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)[None].float()  # (h, w, 2) -> (1, 2, h, w)


def _to_numpy_image(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x[0] if x.ndim == 4 else x
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.asarray(x)


INTERMEDIATE = ("splat", "linear")


def bidirectional_flow(img0, img1, method: str = "dis-fine", preset: str = "medium",
                       **flow_options) -> tuple[torch.Tensor, torch.Tensor]:
    """(F_0->1, F_1->0), each (1, 2, h, w) in pixels. ``method``: a key of :data:`i2v.motion.flow.FLOW_METHODS`
    ("dis-fine" by default; "raft" with ``checkpoint=`` for RAFT's bidirectional flows)."""
    a, b = _to_numpy_image(img0), _to_numpy_image(img1)
    f01 = estimate_flow(a, b, method, preset, **flow_options)
    f10 = estimate_flow(b, a, method, preset, **flow_options)
    return _flow_tensor(f01), _flow_tensor(f10)


def linear_intermediate_flows(f01: torch.Tensor, f10: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(F_t->0, F_t->1) by the linear approximation (Super SloMo eq. 4)."""
    ft0 = -(1 - t) * t * f01 + t * t * f10
    ft1 = (1 - t) * (1 - t) * f01 - t * (1 - t) * f10
    return ft0, ft1


def intermediate_flows(f01: torch.Tensor, f10: torch.Tensor, t: float, method: str = "splat",
                       occ0: torch.Tensor | None = None, occ1: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(F_t->0, F_t->1), each (b, 2, h, w): ``method`` "linear" (Super SloMo eq. 4) or "splat" (flow projection
    with the linear approximation filling the holes; see the module docstring)."""
    lin0, lin1 = linear_intermediate_flows(f01, f10, t)
    if method == "linear":
        return lin0, lin1
    if method != "splat":
        raise ConfigError(f"unknown intermediate-flow method {method!r}; valid: {', '.join(INTERMEDIATE)}")
    occ0 = occlusion(f01, f10) if occ0 is None else occ0
    occ1 = occlusion(f10, f01) if occ1 is None else occ1
    w0 = (1 - occ0) * (1 - t) + 1e-4  # trust visible pixels, and the input nearer in time
    w1 = (1 - occ1) * t + 1e-4
    # from I_0: q -> q + t F01(q), carrying (F_t->0, F_t->1) = (-t F01, (1 - t) F01)
    s0, n0 = _splat_weighted(torch.cat([-t * f01, (1 - t) * f01], 1), t * f01, w0)
    # from I_1: q -> q + (1 - t) F10(q), carrying (t F10, -(1 - t) F10)
    s1, n1 = _splat_weighted(torch.cat([t * f10, -(1 - t) * f10], 1), (1 - t) * f10, w1)
    n = n0 + n1
    proj = (s0 + s1) / n.clamp_min(1e-6)  # (b, 4, h, w) weighted average of what landed
    conf = n / (n + 0.05)  # ~1 where enough landed, -> 0 in holes
    return conf * proj[:, :2] + (1 - conf) * lin0, conf * proj[:, 2:] + (1 - conf) * lin1


def occlusion(f_ab: torch.Tensor, f_ba: torch.Tensor, alpha: float = 0.01, beta: float = 0.5) -> torch.Tensor:
    """Soft occlusion map (b, 1, h, w) on frame a's grid: 1 where the forward-backward check fails.

    The round trip r(p) = F_ab(p) + F_ba(p + F_ab(p)) should be ~0 for pixels visible in both frames; the
    tolerance grows with the motion (Sundaram et al. 2010): |r|^2 < alpha (|F_ab|^2 + |F_ba(warped)|^2) + beta.
    The map is 1 - exp(-|r|^2 / tolerance), 0 for consistent pixels, -> 1 for clear failures."""
    back = backward_warp(f_ba, f_ab)  # F_ba(p + F_ab(p))
    r2 = (f_ab + back).square().sum(1, keepdim=True)
    tol = alpha * (f_ab.square().sum(1, keepdim=True) + back.square().sum(1, keepdim=True)) + beta
    return 1 - torch.exp(-r2 / tol)


def blend(img0: torch.Tensor, img1: torch.Tensor, f01: torch.Tensor, f10: torch.Tensor, t: float,
          intermediate: str = "splat", occlusion_strength: float = 0.5) -> dict[str, torch.Tensor]:
    """The frame at time t from two images (b, 3, h, w) and their bidirectional flows. Returns dict with
    ``frame`` and the pieces for teaching: ``flow_t0``, ``flow_t1``, ``warped0``, ``warped1``, ``occ0``,
    ``occ1`` (on the input grids), ``weight0`` (normalised weight of the warped I_0), ``holes``."""
    occ0 = occlusion(f01, f10)  # on I_0's grid: seen in I_0, hidden in I_1
    occ1 = occlusion(f10, f01)
    ft0, ft1 = intermediate_flows(f01, f10, t, intermediate, occ0, occ1)
    warped0, warped1 = backward_warp(img0, ft0), backward_warp(img1, ft1)
    v0, v1 = inside_mask(ft0), inside_mask(ft1)  # a sample from outside the image is a guess (border copy)
    k = occlusion_strength
    v0 = v0 * (1 - k * backward_warp(occ1, ft1))  # content that only I_1 sees: do not take it from I_0
    v1 = v1 * (1 - k * backward_warp(occ0, ft0))
    w0, w1 = (1 - t) * v0, t * v1
    den = w0 + w1
    eps = 1e-3
    holes = (den < eps).float()
    weight0 = torch.where(den < eps, torch.full_like(den, 1 - t), w0 / den.clamp_min(eps))  # hole: time-weighted
    frame = weight0 * warped0 + (1 - weight0) * warped1
    return {"frame": frame, "flow_t0": ft0, "flow_t1": ft1, "warped0": warped0, "warped1": warped1,
            "occ0": occ0, "occ1": occ1, "weight0": weight0, "holes": holes}


def interpolate_pair(img0, img1, times=(0.5,), flow: str = "dis-fine", intermediate: str = "splat",
                     occlusion_strength: float = 0.5, flow_options: dict | None = None) -> list[torch.Tensor]:
    """Frames at each t in ``times`` between two images ((h, w, 3) uint8 or (3, h, w)/(1, 3, h, w) float).
    Flow (a method of :data:`i2v.motion.flow.FLOW_METHODS`, with ``flow_options`` such as RAFT's checkpoint) is
    estimated once per pair. Returns a list of (1, 3, h, w) float tensors in [0, 1]."""
    x0, x1 = to_tensor(img0), to_tensor(img1)  # (1, 3, h, w) in [0, 1]
    if x0.shape != x1.shape:
        raise InputError(f"the two frames differ in size: {tuple(x0.shape[-2:])} and {tuple(x1.shape[-2:])}")
    f01, f10 = bidirectional_flow(img0, img1, flow, **(flow_options or {}))
    return [blend(x0, x1, f01, f10, float(t), intermediate, occlusion_strength)["frame"].clamp(0, 1) for t in times]


def _splat_weighted(values: torch.Tensor, flow: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum-mode forward splatting of ``weight * values`` and of ``weight`` itself (the shared
    :func:`i2v.motion.warp.forward_splat`): returns (sum w v (b, c, h, w), sum w (b, 1, h, w)); their ratio is
    the weighted average of what landed on each pixel."""
    c = values.shape[1]
    acc = forward_splat(torch.cat([values * weight, weight], 1), flow, mode="sum")
    return acc[:, :c], acc[:, c:]
