"""Quality measures of flows and videos, shared by evaluation, training losses, tests and benchmarks.

- :func:`psnr`, :func:`ssim`: per-frame fidelity to ground truth (pixels in [0, 1]).
- :func:`laplacian_variance`: the sharpness of one frame (variance of its Laplacian, Pech-Pacheco et al. 2000).
- :func:`warping_error_along`, :func:`warping_error`, :func:`consecutive_flows`, :func:`flicker`: temporal
  consistency of a video (Lai et al. 2018's warping error along optical flow; mean frame-to-frame change).
- :func:`endpoint_error`, :func:`angular_error`: optical flow against ground truth (Baker et al. 2011).
"""

from __future__ import annotations

import numpy as np

from .motion.flow import estimate_flow


def psnr(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over frames of 10 log10(1 / MSE); arrays (t, h, w, 3) in [0, 1]."""
    mse = ((pred.astype(np.float64) - true.astype(np.float64)) ** 2).reshape(len(pred), -1).mean(axis=1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-10))))


def ssim(pred: np.ndarray, true: np.ndarray) -> float:
    from skimage.metrics import structural_similarity
    return float(np.mean([structural_similarity(p, t, channel_axis=-1, data_range=1.0)
                          for p, t in zip(pred.astype(np.float64), true.astype(np.float64))]))


def laplacian_variance(frame: np.ndarray) -> float:
    """Sharpness of a frame (h, w, 3) in [0, 1]: the variance of the 3x3 Laplacian of its grey level on the
    0..255 scale (``cv2.Laplacian(grey, CV_64F).var()``, the usual focus measure). It falls as detail is lost:
    a blur, or an enlargement by s (about s^-4 for natural images)."""
    import cv2

    grey = np.asarray(frame, np.float64) @ np.array([0.299, 0.587, 0.114]) * 255
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def consecutive_flows(video):
    """DIS optical flow from frame k+1 to frame k of each clip (f_{k+1}(p) ~ f_k(p + F(p))).
    video (b, 3, t, h, w) in [0, 1] -> (b, t-1, 2, h, w) in pixels, on the CPU."""
    import torch

    clips = video.detach().float().cpu().permute(0, 2, 3, 4, 1).numpy()  # (b, t, h, w, 3)
    flows = [[estimate_flow(clip[k + 1], clip[k]) for k in range(len(clip) - 1)] for clip in clips]
    return torch.from_numpy(np.stack(flows)).permute(0, 1, 4, 2, 3)  # (b, t-1, h, w, 2) -> (b, t-1, 2, h, w)


def warping_error_along(video, flows):
    """Mean over consecutive frame pairs of the mean |f_{k+1}(p) - f_k(p + F(p))| over the pixels p whose flow
    lands inside the frame (channels averaged). video (b, c, t, h, w), flows (b, t-1, 2, h, w). Differentiable
    in ``video``: with the flow of the true clip it is the short-term temporal loss of Lai et al. 2018
    (:func:`i2v.calibrate.temporal_loss`)."""
    from einops import rearrange

    from .motion.warp import backward_warp, inside_mask

    flow = flows.flatten(0, 1).to(video.dtype)  # (b (t-1)) 2 h w
    prev = rearrange(video[:, :, :-1], "b c t h w -> (b t) c h w")
    nxt = rearrange(video[:, :, 1:], "b c t h w -> (b t) c h w")
    mask = inside_mask(flow)  # (b (t-1)) 1 h w
    diff = (nxt - backward_warp(prev, flow)).abs().mean(dim=1, keepdim=True)
    per_pair = (diff * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp(min=1)  # masked mean per frame pair
    return per_pair.mean()


def warping_error(frames: np.ndarray) -> float:
    """The warping error of one clip (t, h, w, 3) in [0, 1], along the DIS flow measured on the clip itself."""
    import torch

    video = torch.from_numpy(np.ascontiguousarray(frames)).float().permute(3, 0, 1, 2)[None]  # -> (1, 3, t, h, w)
    return float(warping_error_along(video, consecutive_flows(video)))


def flicker(frames: np.ndarray) -> float:
    """Mean absolute difference of consecutive frames."""
    return float(np.abs(np.diff(frames.astype(np.float64), axis=0)).mean())


def endpoint_error(flow: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean end-point error ||F - F_gt||_2 over pixels (where ``mask`` is true, if given)."""
    epe = np.sqrt(((np.asarray(flow, np.float64) - np.asarray(gt, np.float64)) ** 2).sum(-1))
    return float(epe[mask].mean() if mask is not None else epe.mean())


def angular_error(flow: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean angular error in degrees between (u, v, 1) and (u_gt, v_gt, 1) (Barron et al. 1994)."""
    f, g = np.asarray(flow, np.float64), np.asarray(gt, np.float64)
    num = 1 + (f * g).sum(-1)
    den = np.sqrt(1 + (f**2).sum(-1)) * np.sqrt(1 + (g**2).sum(-1))
    ang = np.degrees(np.arccos(np.clip(num / den, -1, 1)))
    return float(ang[mask].mean() if mask is not None else ang.mean())
