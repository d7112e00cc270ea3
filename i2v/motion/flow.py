"""Dense optical flow between two frames, and the Middlebury ``.flo`` format.

``estimate_flow(a, b)`` returns the flow F from a to b, in pixels, such that a(p) ~ b(p + F(p)), i.e.
``backward_warp(b, F) ~ a`` (see :mod:`i2v.motion.warp` for the pixel convention). Back-ends: OpenCV's DIS
(Kroeger et al. 2016; presets ultrafast/fast/medium) and Farneback (2003).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError

FLO_MAGIC = 202021.25

DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}  # cv2.DISOPTICAL_FLOW_PRESET_*


def _gray(img: np.ndarray) -> np.ndarray:
    import cv2

    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(img)


def estimate_flow(a: np.ndarray, b: np.ndarray, method: str = "dis", preset: str = "medium",
                  farneback=(0.5, 5, 15, 3, 5, 1.2)) -> np.ndarray:
    """Flow from image ``a`` to image ``b`` as a (h, w, 2) float32 array of (u, v) pixels.

    ``a`` and ``b``: (h, w, 3) uint8 RGB (or float in [0, 1], or greyscale), the same size.
    ``method``: "dis" (with ``preset``) or "farneback" (with ``farneback`` = pyr_scale, levels, winsize,
    iterations, poly_n, poly_sigma)."""
    import cv2

    if np.shape(a)[:2] != np.shape(b)[:2]:
        raise InputError(f"images must have the same size for flow, got {np.shape(a)[:2]} and {np.shape(b)[:2]}; resize one first")
    ga, gb = _gray(a), _gray(b)
    if method == "dis":
        if preset not in DIS_PRESETS:
            raise ConfigError(f"unknown DIS preset {preset!r}; valid: {', '.join(DIS_PRESETS)}")
        dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
        return dis.calc(ga, gb, None).astype(np.float32)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(ga, gb, None, *farneback, 0).astype(np.float32)
    raise ConfigError(f"unknown flow method {method!r}; valid: dis, farneback")


def read_flo(path) -> np.ndarray:
    """Read a Middlebury .flo file -> (h, w, 2) float32."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    data = path.read_bytes()
    if len(data) < 12 or np.frombuffer(data[:4], "<f4")[0] != FLO_MAGIC:
        raise InputError(f"{path}: not a .flo file (expected the magic number {FLO_MAGIC} in the first 4 bytes)")
    w, h = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
    if len(data) != 12 + 8 * w * h:
        raise InputError(f"{path}: header says {w}x{h} flow ({12 + 8 * w * h} bytes) but the file has {len(data)} bytes")
    return np.frombuffer(data[12:], "<f4").reshape(h, w, 2).copy()


def write_flo(path, flow: np.ndarray) -> Path:
    """Write (h, w, 2) flow as a Middlebury .flo file (atomically)."""
    path = Path(path)
    flow = np.asarray(flow, dtype="<f4")
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise InputError(f"expected flow as (h, w, 2), got {flow.shape}")
    h, w, _ = flow.shape
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(np.array([FLO_MAGIC], "<f4").tobytes())
        f.write(np.array([w, h], "<i4").tobytes())
        f.write(flow.tobytes())
    os.replace(tmp, path)
    return path


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
