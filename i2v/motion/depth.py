"""Depth and disparity maps: reading them, checking them, and a stated fallback when there is none.

Conventions (``kind`` says which quantity a file holds; the file type gives the default):
- ``.npy``: a float (h, w) array, taken as is. Default kind "depth".
- 16-bit PNG / PGM: value / ``scale`` (default 1). Default kind "depth" (e.g. millimetres from a depth sensor).
- 8-bit PNG / PGM: value / ``scale`` (default 1), read as **disparity: brighter = nearer**, the way monocular
  depth networks (MiDaS, Depth Anything) and stereo datasets (Middlebury, scale 4) store them. Default kind "disparity".
In every format 0, NaN and inf mean "unknown". Depth and disparity are inverses up to a constant
(depth = f B / disparity); camera moves only need depth up to scale, so disparity d is turned into depth 1 / d.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError

DEPTH_KINDS = ("depth", "disparity")

FALLBACK_PRIOR = ("no depth map given: using the fallback prior, a ground plane seen from eye level - depth 1 at "
                  "the bottom row growing to depth 4 at the top row (disparity falls linearly upward). Parallax "
                  "will follow image rows only; pass --depth for real 3D")


@dataclass
class DepthMap:
    depth: np.ndarray  # (h, w) float32, > 0 where valid, unknown pixels filled in
    valid: np.ndarray  # (h, w) bool, True where the input had a value
    note: str = ""  # what was done to the input (resize, fill), for the user


def read_depth_file(path, kind: str | None = None, scale: float | None = None) -> tuple[np.ndarray, str]:
    """Read a depth or disparity map -> ((h, w) float32 with NaN where unknown, kind)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such depth file")
    if kind is not None and kind not in DEPTH_KINDS:
        raise InputError(f"unknown depth kind {kind!r}; valid: {', '.join(DEPTH_KINDS)}")
    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
        arr = arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr
        default = "depth"
    else:
        import cv2

        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise InputError(f"{path}: cannot be read as an image; expected a 16-bit or 8-bit PNG/PGM or a .npy array")
        if arr.ndim == 3:  # an 8-bit colour rendering of a grey map: use its first channel (all equal if grey)
            arr = arr[..., 0]
        if arr.dtype == np.uint16:
            default = "depth"
        elif arr.dtype == np.uint8:
            default = "disparity"
        else:
            raise InputError(f"{path}: pixel type {arr.dtype} is not a depth format; use a 16-bit or 8-bit PNG or .npy")
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a single-channel (h, w) map, got shape {arr.shape}")
    arr = arr.astype(np.float32) / np.float32(scale or 1.0)
    arr[~np.isfinite(arr) | (arr <= 0)] = np.nan
    return arr, kind or default


def prepare_depth(values: np.ndarray, kind: str, size: tuple[int, int], name: str = "depth map") -> DepthMap:
    """Make a (h, w) depth map for an image of ``size`` = (h, w) from depth or disparity ``values`` (NaN/<=0 =
    unknown): resize with a note when the size differs, convert disparity to depth (1 / d), fill unknown pixels
    by inpainting, and normalise so that the median depth is 1 (camera moves are given relative to it)."""
    import cv2

    if kind not in DEPTH_KINDS:
        raise InputError(f"unknown depth kind {kind!r}; valid: {', '.join(DEPTH_KINDS)}")
    values = np.asarray(values, np.float32)
    if values.ndim != 2:
        raise InputError(f"{name}: expected a (h, w) array, got shape {values.shape}")
    values = np.where(np.isfinite(values) & (values > 0), values, np.nan).astype(np.float32)
    notes = []
    if values.shape != tuple(size):
        notes.append(f"{name} is {values.shape[1]}x{values.shape[0]} but the image is {size[1]}x{size[0]}; "
                     "resized it (nearest neighbour)")
        values = cv2.resize(values, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    valid = np.isfinite(values)
    if not valid.any():
        raise InputError(f"{name} has no valid values (all are 0, negative, NaN or inf); 0 means unknown - "
                         "check the file and --depth-scale")
    depth = 1.0 / values if kind == "disparity" else values
    depth = depth / np.median(depth[valid])  # median depth 1
    if not valid.all():
        notes.append(f"{name}: {1 - valid.mean():.1%} of pixels have no value; filled them with the farther "
                     "of the nearest known depths left and right (background fill)")
        depth = fill_background(depth, valid)
    note = "; ".join(notes)
    return DepthMap(depth.astype(np.float32), valid, note)


def _fill_forward(a: np.ndarray) -> np.ndarray:
    """Along each row, replace NaN by the last finite value to its left (NaN if none)."""
    idx = np.where(np.isfinite(a), np.arange(a.shape[1])[None], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    out = a[np.arange(a.shape[0])[:, None], idx]
    out[~np.isfinite(a[:, :1]).repeat(a.shape[1], 1) & (idx == 0)] = np.nan  # rows starting with a gap
    return out


def fill_background(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill unknown depth with the larger (farther) of the nearest known values to the left and right on the same
    row. Unknown depth mostly sits beside foreground edges (stereo occlusions, sensor shadows), where the hidden
    surface is the background, so taking the far side is the usual scanline fill in stereo matching."""
    a = np.where(valid, depth, np.nan).astype(np.float32)
    left, right = _fill_forward(a), _fill_forward(a[:, ::-1])[:, ::-1]
    with np.errstate(all="ignore"):
        out = np.fmax(left, right)  # fmax ignores a NaN side
    out[~np.isfinite(out)] = np.nanmax(a)  # rows with no known value at all
    return out


def fallback_depth(h: int, w: int) -> np.ndarray:
    """The stated prior used when no depth is given (see ``FALLBACK_PRIOR``): disparity falls linearly from 1 at
    the bottom row to 1/4 at the top row, i.e. depth 1 .. 4, normalised to median 1."""
    disparity = np.linspace(0.25, 1.0, h, dtype=np.float32)[:, None].repeat(w, 1)  # top row far, bottom near
    depth = 1.0 / disparity
    return (depth / np.median(depth)).astype(np.float32)


def load_depth(path, size: tuple[int, int], kind: str | None = None, scale: float | None = None) -> DepthMap:
    """Read ``path`` (see the module docstring for formats) and prepare it for an image of ``size`` = (h, w)."""
    values, kind = read_depth_file(path, kind, scale)
    return prepare_depth(values, kind, size, name=str(path))


# ---------------------------------------------------------------------------------------------------------------
# Learned depth: Depth Anything V2 (i2v/models/depth_anything) on any photo
# ---------------------------------------------------------------------------------------------------------------

_MODELS: dict = {}


def load_depth_model(checkpoint, device="cpu"):
    """A Depth Anything V2 model for ``checkpoint`` (depth_anything_v2_vits/vitb/vitl.pth), loaded once per
    (file, device). A file of another model (a RAFT file, say) is a clear CheckpointError."""
    key = (str(Path(checkpoint).resolve()), str(device))
    if key not in _MODELS:
        from ..models.depth_anything.model import DepthAnythingV2

        _MODELS[key] = DepthAnythingV2.from_pretrained(checkpoint, device=device)
    return _MODELS[key]


def estimate_depth(image, checkpoint=None, input_size: int = 518, device="cpu", model=None) -> np.ndarray:
    """Relative inverse depth (h, w) float32 of an RGB image (path or array), larger = nearer, at the image's size
    (Depth Anything V2's ``infer_image``: resized to ``input_size``, a multiple of 14, and back)."""
    from ..image import to_uint8
    from ..models.depth_anything.model import estimate_depth as infer

    return infer(model if model is not None else load_depth_model(checkpoint, device), to_uint8(image), input_size)


def to_camera_depth(inverse_depth: np.ndarray, depth_range: float = 10.0):
    """Depth Anything's relative inverse depth d -> the depth :mod:`i2v.motion.camera` moves through: a
    :class:`DepthMap` of z along the optical axis, > 0 everywhere, median 1.

    d is disparity up to an unknown scale a and shift b (d ~ a / z + b), and the ReLU puts the farthest regions
    (sky) at d = 0. Taking 1 / d (what ``render_camera_move(depth_kind="disparity")`` would do) treats b as 0 and
    sends d = 0 to infinity; instead the shift is fixed by a stated range::

        z = 1 / (d / max(d) + 1 / (R - 1)),   R = ``depth_range``

    so the nearest pixel is at (R - 1) / R, a pixel at d = 0 at R - 1: the farthest point is R times as far as the
    nearest, and depth ordering is d's. Then z / median(z). R = 10 (default) suits rooms and streets; raise it for
    landscapes (stronger parallax between near and far), lower it for close-ups. For a metric model (``max_depth``
    set) the output already is depth: pass it as ``depth=..., depth_kind="depth"`` instead."""
    if not depth_range > 1:
        raise ConfigError(f"depth_range must be > 1 (farthest / nearest depth), got {depth_range}")
    d = np.asarray(inverse_depth, np.float32)
    if d.ndim != 2:
        raise InputError(f"expected an (h, w) inverse-depth map, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise InputError("the inverse-depth map has NaN or inf values (a float16 overflow?); run the model in float32")
    d = np.maximum(d, 0)
    top = float(d.max())
    if top <= 0:
        raise InputError("the inverse-depth map is 0 everywhere: nothing to take depth from")
    z = 1.0 / (d / top + 1.0 / (depth_range - 1.0))
    z = (z / np.median(z)).astype(np.float32)
    note = (f"depth from Depth Anything V2's relative inverse depth d: z = 1 / (d / max d + 1 / {depth_range - 1:g}) "
            f"(farthest / nearest = {depth_range:g}), median 1")
    return DepthMap(z, np.ones(d.shape, bool), note)


def depth_from_model(image, checkpoint, input_size: int = 518, device="cpu", depth_range: float = 10.0) -> DepthMap:
    """The DepthMap a camera move needs, from Depth Anything V2 on ``image``: its inverse depth turned into depth by
    :func:`to_camera_depth` (the stated shift: farthest / nearest = ``depth_range``)."""
    return to_camera_depth(estimate_depth(image, checkpoint, input_size, device), depth_range)


def depth_preview(inverse_depth: np.ndarray) -> np.ndarray:
    """(h, w) inverse depth -> (h, w, 3) uint8 RGB picture (near = bright yellow, far = dark purple: 'inferno')."""
    import cv2

    d = np.nan_to_num(np.asarray(inverse_depth, np.float64))
    lo, hi = float(d.min()), float(d.max())
    grey = ((d - lo) / (hi - lo) * 255).round().astype(np.uint8) if hi > lo else np.zeros(d.shape, np.uint8)
    return cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO)[:, :, ::-1].copy()  # BGR -> RGB


def write_inverse_depth(path, inverse_depth: np.ndarray, overwrite: bool = True) -> Path:
    """Write inverse depth: ``.npy`` (float32 as is) or ``.png`` (8-bit, d / max d * 255: the disparity convention
    of this module, brighter = nearer, so ``i2v camera --depth`` reads it back as disparity). Atomic."""
    from ..outputs import atomic

    path = Path(path)
    d = np.asarray(inverse_depth, np.float32)
    if path.suffix.lower() not in (".npy", ".png"):
        raise InputError(f"{path}: depth output must end in .npy (float inverse depth) or .png (8-bit, brighter = nearer)")
    with atomic(path, overwrite) as tmp:
        if path.suffix.lower() == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, d)
        elif path.suffix.lower() == ".png":
            from PIL import Image

            top = float(np.nanmax(d)) if np.isfinite(d).any() else 0.0
            grey = np.zeros(d.shape, np.uint8) if top <= 0 else (np.clip(d / top, 0, 1) * 255).round().astype(np.uint8)
            Image.fromarray(grey).save(tmp, format="PNG")
    return path
