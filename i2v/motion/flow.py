"""Dense optical flow between two frames, and the Middlebury ``.flo`` format.

``estimate_flow(a, b)`` returns the flow F from a to b, in pixels, such that a(p) ~ b(p + F(p)), i.e.
``backward_warp(b, F) ~ a`` (see :mod:`i2v.motion.warp` for the pixel convention). One table,
:data:`FLOW_METHODS`, lists the methods: OpenCV's DIS (Kroeger et al. 2016; presets ultrafast/fast/medium, and
``dis-fine`` refined to full resolution), Farneback (2003), and the learned RAFT (Teed & Deng 2020; a released
checkpoint, :mod:`i2v.models.raft`). The classical ones need neither weights nor torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError

FLO_MAGIC = 202021.25

DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}  # cv2.DISOPTICAL_FLOW_PRESET_*


def _gray(img: np.ndarray) -> np.ndarray:
    """RGB -> 8-bit luma Y = floor((9797 R + 19234 G + 3737 B) / 2^15) (Rec. 601 weights 0.299, 0.587, 0.114 in
    15-bit fixed point, truncated). This is the conversion libpng applies when ``cv2.imread(path,
    cv2.IMREAD_GRAYSCALE)`` reads a colour PNG, so the flow equals the one computed on images read that way
    (DIS is sensitive to 1-level differences on large motions: Sintel market_5 EPE 17.7 vs 23.2 with cvtColor)."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        rgb = img[:, :, :3].astype(np.int32)
        img = ((rgb[:, :, 0] * 9797 + rgb[:, :, 1] * 19234 + rgb[:, :, 2] * 3737) >> 15).astype(np.uint8)
    return np.ascontiguousarray(img)


def _dis(a, b, preset: str = "medium", finest_scale: int | None = None, **_) -> np.ndarray:
    import cv2

    if preset not in DIS_PRESETS:
        raise ConfigError(f"unknown DIS preset {preset!r}; valid: {', '.join(DIS_PRESETS)}")
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    if finest_scale is not None:
        dis.setFinestScale(int(finest_scale))
    return dis.calc(_gray(a), _gray(b), None).astype(np.float32)


def _dis_fine(a, b, preset: str = "medium", **_) -> np.ndarray:
    return _dis(a, b, preset, finest_scale=0)  # refine down to full resolution (the presets stop at 1/4 or 1/8)


def _farneback(a, b, farneback=(0.5, 5, 15, 3, 5, 1.2), **_) -> np.ndarray:
    import cv2

    return cv2.calcOpticalFlowFarneback(_gray(a), _gray(b), None, *farneback, 0).astype(np.float32)


_RAFT_CACHE: dict = {}


def load_raft(checkpoint, device="cpu"):
    """A RAFT model for ``checkpoint`` (raft-things.pth, raft-small.pth, ...), loaded once per (file, device)."""
    if checkpoint is None:
        raise ConfigError("the raft flow method needs its weights: --checkpoint raft-things.pth (or raft-small.pth, "
                          "from the RAFT release: princeton-vl/RAFT, download_models.sh)")
    key = (str(Path(checkpoint).resolve()), str(device))
    if key not in _RAFT_CACHE:
        from ..models.raft.raft import RAFT

        _RAFT_CACHE[key] = RAFT.from_pretrained(checkpoint, device=device)
    return _RAFT_CACHE[key]


def _raft(a, b, checkpoint=None, iters: int = 12, device="cpu", flow_init=None, model=None, **_) -> np.ndarray:
    from ..models.raft.raft import estimate

    return estimate(model if model is not None else load_raft(checkpoint, device), a, b, iters=iters, flow_init=flow_init)


# the smallest side each method can work on (DIS's pyramid needs 12 px; RAFT's 1/8 correlation pyramid 121 px)
MIN_SIDE = {"dis": 12, "dis-fine": 12, "farneback": 2, "raft": 121}

# name -> (function(a, b, **options) -> (h, w, 2) float32 flow, weights needed, one line). An explicit table.
FLOW_METHODS = {
    "dis": (_dis, False, "OpenCV DIS (Kroeger et al. 2016), --preset ultrafast/fast/medium; no weights"),
    "dis-fine": (_dis_fine, False, "DIS medium refined down to full resolution (setFinestScale(0)); no weights"),
    "farneback": (_farneback, False, "OpenCV Farneback (2003) polynomial expansion; no weights"),
    "raft": (_raft, True, "RAFT (Teed & Deng 2020), learned; needs raft-things.pth / raft-small.pth"),
}


def estimate_flow(a: np.ndarray, b: np.ndarray, method: str = "dis", preset: str = "medium",
                  farneback=(0.5, 5, 15, 3, 5, 1.2), finest_scale: int | None = None, **options) -> np.ndarray:
    """Flow from image ``a`` to image ``b`` as a (h, w, 2) float32 array of (u, v) pixels.

    ``a`` and ``b``: (h, w, 3) uint8 RGB (or float in [0, 1], or greyscale), the same size. ``method``: a key of
    :data:`FLOW_METHODS` -- "dis" (with ``preset``; ``finest_scale`` overrides DIS's finest pyramid level),
    "dis-fine", "farneback" (``farneback`` = pyr_scale, levels, winsize, iterations, poly_n, poly_sigma), or
    "raft" (``checkpoint=``, ``iters=`` 12, ``device=``, ``flow_init=`` a previous flow for video, or a loaded
    ``model=``)."""
    if method not in FLOW_METHODS:
        raise ConfigError(f"unknown flow method {method!r}; valid: {', '.join(FLOW_METHODS)}")
    if np.shape(a)[:2] != np.shape(b)[:2]:
        raise InputError(f"images must have the same size for flow, got {np.shape(a)[:2]} and {np.shape(b)[:2]}; resize one first")
    if min(np.shape(a)[:2]) < MIN_SIDE[method]:
        raise InputError(f"images of {np.shape(a)[1]}x{np.shape(a)[0]} px are too small for {method} optical flow "
                         f"(both sides must be at least {MIN_SIDE[method]} px)")
    fn, _, _ = FLOW_METHODS[method]
    return fn(a, b, preset=preset, farneback=farneback, finest_scale=finest_scale, **options)


def flows_to_first(frames: np.ndarray, method: str = "dis", preset: str = "medium") -> tuple[np.ndarray, np.ndarray]:
    """The motion of a video as backward flow to its first frame, and where that flow is trustworthy.

    ``frames`` (t, h, w, 3) in [0, 1] (or uint8) -> (flows (t, h, w, 2) float32 with frame k (p) ~ frame 0
    (p + F_k(p)), consistent (t, h, w) bool): True where the flow from frame 0 back to frame k returns to p
    (forward-backward check, :func:`i2v.motion.warp.consistency_mask`), False where the pixel is occluded in
    frame 0 or comes from outside it. Frame 0's flow is zero."""
    import torch

    from .warp import consistency_mask

    to_first = np.stack([estimate_flow(f, frames[0], method, preset) for f in frames])  # (t, h, w, 2)
    from_first = np.stack([estimate_flow(frames[0], f, method, preset) for f in frames])
    fw, bw = (torch.from_numpy(x).permute(0, 3, 1, 2) for x in (to_first, from_first))  # -> (t, 2, h, w)
    return to_first, consistency_mask(fw, bw)[:, 0].numpy()


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


def write_flo(path, flow: np.ndarray, overwrite: bool = True) -> Path:
    """Write (h, w, 2) flow as a Middlebury .flo file (atomically, :func:`i2v.outputs.atomic`)."""
    from ..outputs import atomic

    path = Path(path)
    flow = np.asarray(flow, dtype="<f4")
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise InputError(f"expected flow as (h, w, 2), got {flow.shape}")
    h, w, _ = flow.shape
    with atomic(path, overwrite) as tmp, open(tmp, "wb") as f:
        f.write(np.array([FLO_MAGIC], "<f4").tobytes())
        f.write(np.array([w, h], "<i4").tobytes())
        f.write(flow.tobytes())
    return path


# ---------------------------------------------------------------------------------------------------------------
# Flow to colour: the Middlebury colour wheel (Baker et al. 2011, "A Database and Evaluation Methodology for
# Optical Flow", the colour coding of their flowToColor / computeColor code). Hue = direction, saturation =
# magnitude relative to ``max_flow``; right = red, down = green-ish, left = cyan, up = blue/violet.
# ---------------------------------------------------------------------------------------------------------------

# hue segments between the six primary/secondary colours: red-yellow, yellow-green, green-cyan, cyan-blue,
# blue-magenta, magenta-red, with these many steps each (chosen by Baker et al. to look perceptually even)
WHEEL_SEGMENTS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))


def color_wheel() -> np.ndarray:
    """(55, 3) float array: the Middlebury wheel's colours in [0, 255], going round from red (angle 0 = flow to
    the left in their convention, see :func:`flow_to_color`)."""
    cols = []
    for name, n in WHEEL_SEGMENTS:
        ramp = np.floor(255 * np.arange(n) / n)  # 0 .. 255 in n steps
        up, down, full, zero = ramp, 255 - ramp, np.full(n, 255.0), np.zeros(n)
        r, g, b = {"RY": (full, up, zero), "YG": (down, full, zero), "GC": (zero, full, up),
                   "CB": (zero, down, full), "BM": (up, zero, full), "MR": (full, zero, down)}[name]
        cols.append(np.stack([r, g, b], 1))
    return np.concatenate(cols)


def flow_to_color(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """(h, w, 2) flow -> (h, w, 3) uint8 RGB with the Middlebury colour coding.

    Each vector (u, v) is scaled by ``max_flow`` (default: the largest magnitude in the field, so the longest
    vector is fully saturated); angle a = atan2(-v, -u) / pi in [-1, 1] picks a position on the 55-colour wheel
    (linear interpolation between neighbours); the radius r blends from white (r = 0) to the colour (r = 1);
    vectors longer than ``max_flow`` are drawn darker (colour * 0.75). Non-finite vectors are black."""
    flow = np.asarray(flow, np.float64)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise InputError(f"expected flow as (h, w, 2), got {flow.shape}")
    bad = ~np.isfinite(flow).all(-1)
    u, v = np.where(bad, 0, flow[..., 0]), np.where(bad, 0, flow[..., 1])
    rad = np.sqrt(u**2 + v**2)
    if max_flow is None:
        max_flow = float(rad.max())
    scale = max(float(max_flow), np.finfo(np.float64).eps)
    u, v, rad = u / scale, v / scale, rad / scale
    wheel = color_wheel()
    n = len(wheel)
    a = np.arctan2(-v, -u) / np.pi  # [-1, 1]
    fk = (a + 1) / 2 * (n - 1)  # position on the wheel, 0 .. n-1
    k0 = np.floor(fk).astype(int)
    k1 = (k0 + 1) % n
    f = (fk - k0)[..., None]
    col = ((1 - f) * wheel[k0] + f * wheel[k1]) / 255  # (h, w, 3) in [0, 1]
    inside = (rad <= 1)[..., None]
    col = np.where(inside, 1 - rad[..., None] * (1 - col), col * 0.75)  # white centre -> saturated rim
    col[bad] = 0
    return np.floor(255 * col).astype(np.uint8)


def wheel_image(size: int = 151) -> np.ndarray:
    """(size, size, 3) uint8 picture of the colour code: the flow at each pixel points from the centre to it."""
    c = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    flow = np.stack([xs - c, ys - c], -1)
    img = flow_to_color(flow, max_flow=c)
    img[np.hypot(xs - c, ys - c) > c] = 255
    return img
