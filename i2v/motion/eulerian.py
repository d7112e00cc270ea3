"""Eulerian cinemagraphs: a looping video from one photo and a static motion field (Holynski et al. 2021,
"Animating Pictures with Eulerian Motion Fields", CVPR; the integration and symmetric splatting of sec. 3.2-3.3,
without the learned networks: the motion field comes from a user's motion brush or a flow file, and the image
itself is splatted instead of deep features).

- Motion field M(x): a (2, h, w) velocity in pixels per frame that does not change over time.
- Euler integration (eq. 3): F_{0->t+1}(x) = F_{0->t}(x) + M(x + F_{0->t}(x)), F_{0->0} = 0: where the particle
  starting at x is after t frames.
- Symmetric splatting (eq. 6-7): frame t of an N-frame loop splats the photo forward along F_{0->t} with weight
  1 - t/N and along F_{0->t-N} (integrating -M for N - t steps) with weight t/N, then normalises jointly:
      I_t(q) = sum_p [(1 - a_t) b(p + F_{0->t}(p), q) + a_t b(p + F_{0->t-N}(p), q)] I_0(p) / (same without I_0),
  a_t = t / N. At t = 0 and t = N both terms collapse to zero displacement, so frame N equals frame 0 exactly and
  the loop closes with no seam.

Motion brush JSON (coordinates in pixels of the input image, x right, y down)::

    {"size": [w, h],                      # optional: the image size the coordinates were drawn on (rescaled)
     "regions": [
        {"polygon": [[x, y], [x, y], [x, y], ...], "direction": 0, "speed": 1.5, "feather": 8},
        {"box": [x0, y0, x1, y1], "direction": [1, 0.3], "speed": 2},
        {"mask": "water.png", "direction": 90, "speed": 1}]}

``direction``: degrees (0 = right, 90 = down, 180 = left, 270 = up) or an [dx, dy] vector; ``speed``: pixels per
frame; ``feather``: pixels of soft edge (default 4); ``mask``: an image whose non-zero pixels are the region
(a path relative to the JSON file). Later regions are painted over earlier ones.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, InputError
from ..image import to_tensor
from .flow import read_flo
from .warp import backward_warp, forward_splat

REGION_SHAPES = ("polygon", "box", "mask")
REGION_KEYS = set(REGION_SHAPES) | {"direction", "speed", "feather", "name"}


def _number(x, where: str, minimum: float | None = None) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or (minimum is not None and x < minimum):
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise InputError(f"{where}: expected a number{bound}, got {json.dumps(x)}")
    return float(x)


def _points(x, where: str) -> list[list[float]]:
    if not isinstance(x, list) or any(not isinstance(p, list) or len(p) != 2 for p in x):
        raise InputError(f"{where}: expected a list of [x, y] points, got {json.dumps(x)[:80]}")
    return [[_number(v, f"{where}[{i}]") for v in p] for i, p in enumerate(x)]


def brush_to_motion(brush, h: int, w: int, base_dir=".") -> np.ndarray:
    """Motion brush (dict, or path to a JSON file) -> (h, w, 2) float32 velocity field in pixels per frame."""
    import cv2

    src = "brush"
    if isinstance(brush, (str, Path)):
        src, base_dir = str(brush), Path(brush).parent
        if not Path(brush).exists():
            raise InputError(f"{brush}: no such motion brush file")
        try:
            brush = json.loads(Path(brush).read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{src}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(brush, dict) or not isinstance(brush.get("regions"), list) or not brush["regions"]:
        raise InputError(f"{src}: expected an object with a non-empty list 'regions' (see i2v cinemagraph --help)")
    sx = sy = 1.0
    if "size" in brush:
        size = brush["size"]
        if not isinstance(size, list) or len(size) != 2:
            raise InputError(f"{src}: size: expected [width, height], got {json.dumps(size)}")
        sx, sy = w / _number(size[0], f"{src}: size[0]", 1), h / _number(size[1], f"{src}: size[1]", 1)
    motion = np.zeros((h, w, 2), np.float32)
    for i, reg in enumerate(brush["regions"]):
        where = f"{src}: regions[{i}]"
        if not isinstance(reg, dict):
            raise InputError(f"{where}: expected an object, got {json.dumps(reg)[:60]}")
        unknown = set(reg) - REGION_KEYS
        if unknown:
            raise InputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(REGION_KEYS))}")
        shapes = [k for k in REGION_SHAPES if k in reg]
        if len(shapes) != 1:
            raise InputError(f"{where}: needs exactly one of {', '.join(REGION_SHAPES)}, found {shapes or 'none'}")
        mask = np.zeros((h, w), np.float32)
        if "polygon" in reg:
            pts = _points(reg["polygon"], f"{where}.polygon")
            if len(pts) < 3:
                raise InputError(f"{where}.polygon: expected at least 3 [x, y] points, got {len(pts)}")
            poly = np.round(np.array(pts) * [sx, sy]).astype(np.int32)
            cv2.fillPoly(mask, [poly], 1.0)
        elif "box" in reg:
            box = reg["box"]
            if not isinstance(box, list) or len(box) != 4:
                raise InputError(f"{where}.box: expected [x0, y0, x1, y1], got {json.dumps(box)}")
            x0, y0, x1, y1 = (_number(v, f"{where}.box[{j}]") for j, v in enumerate(box))
            if x1 <= x0 or y1 <= y0:
                raise InputError(f"{where}.box: expected x0 < x1 and y0 < y1, got {box}")
            mask[max(0, round(y0 * sy)):max(0, round(y1 * sy)), max(0, round(x0 * sx)):max(0, round(x1 * sx))] = 1
        else:
            if not isinstance(reg["mask"], str):
                raise InputError(f"{where}.mask: expected a path to an image, got {json.dumps(reg['mask'])}")
            path = Path(base_dir) / reg["mask"]
            m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if m is None:
                raise InputError(f"{where}.mask: cannot read {path} as an image")
            mask = (cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) > 0).astype(np.float32)
        if "direction" not in reg or "speed" not in reg:
            raise InputError(f"{where}: needs 'direction' (degrees or [dx, dy]) and 'speed' (pixels per frame)")
        d = reg["direction"]
        if isinstance(d, list):
            (dx, dy), = _points([d], f"{where}.direction")
            norm = math.hypot(dx, dy)
            if norm == 0:
                raise InputError(f"{where}.direction: the vector [0, 0] has no direction")
            dx, dy = dx / norm, dy / norm
        else:
            ang = math.radians(_number(d, f"{where}.direction"))
            dx, dy = math.cos(ang), math.sin(ang)  # 0 = right, 90 = down (y points down)
        speed = _number(reg["speed"], f"{where}.speed", 0)
        feather = _number(reg.get("feather", 4), f"{where}.feather", 0)
        if feather > 0:
            mask = cv2.GaussianBlur(mask, (0, 0), feather / 2)
        vel = np.array([dx * speed * sx, dy * speed * sy], np.float32)
        motion = motion * (1 - mask[..., None]) + mask[..., None] * vel  # paint over earlier regions
    return motion


def load_motion(path, h: int, w: int, speed: float = 1.0) -> np.ndarray:
    """A motion field for an (h, w) image from a brush ``.json`` or a ``.flo`` file (flow per frame), x ``speed``.
    A .flo of another size is resized, its vectors scaled with it (and a note is printed)."""
    import cv2

    path = Path(path)
    if path.suffix.lower() == ".flo":
        m = read_flo(path)
        if m.shape[:2] != (h, w):
            warnings.warn(f"{path}: flow is {m.shape[1]}x{m.shape[0]}, image {w}x{h}; resized the flow and scaled its vectors")
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) * np.array([w / m.shape[1], h / m.shape[0]], np.float32)
    elif path.suffix.lower() == ".json":
        m = brush_to_motion(path, h, w)
    else:
        raise InputError(f"{path}: expected a motion brush .json or a flow .flo file")
    if not np.isfinite(m).all():
        raise InputError(f"{path}: motion field holds NaN or inf values")
    return m * float(speed)


def motion_from_video(frames, h: int, w: int, mask=None, flow: str = "dis", progress: bool = True,
                      **flow_options) -> np.ndarray:
    """Motion transfer: the static velocity field of a reference clip, for an (h, w) photo.

    M(x) = mean over k of F_{k->k+1}(x), the optical flow from each frame of ``frames`` ((t, H, W, 3) uint8) to the
    next (``flow``: a method of :data:`i2v.motion.flow.FLOW_METHODS`, e.g. "raft" with ``checkpoint=``), resized
    to (h, w) with its vectors scaled, then multiplied by ``mask`` ((h, w) weights in [0, 1], e.g. the regions of
    a motion brush) -- the mean motion of the clip inside the brushed mask. Returns (h, w, 2) float32 pixels/frame."""
    import cv2
    from tqdm.auto import tqdm

    from .flow import estimate_flow

    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) < 2:
        raise InputError(f"--motion-from needs a clip of at least 2 frames, got an array of shape {frames.shape}")
    total = np.zeros(frames.shape[1:3] + (2,), np.float64)
    for k in tqdm(range(len(frames) - 1), desc=f"motion from clip ({flow})", unit="pair", disable=not progress):
        total += estimate_flow(frames[k], frames[k + 1], flow, **flow_options)
    m = (total / (len(frames) - 1)).astype(np.float32)
    H, W = m.shape[:2]
    if (H, W) != (h, w):  # a clip of another size: resample the field and scale its vectors with it
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) * np.array([w / W, h / H], np.float32)
    if mask is not None:
        mask = np.asarray(mask, np.float32)
        if mask.shape != (h, w):
            raise InputError(f"the motion mask is {mask.shape[1]}x{mask.shape[0]}, the photo {w}x{h}")
        m = m * mask[..., None]
    return m


def integrate(motion: torch.Tensor, steps: int) -> torch.Tensor:
    """Euler integration of a static velocity field (Holynski et al. eq. 3). ``motion`` (b, 2, h, w) pixels per frame.
    Returns (steps + 1, b, 2, h, w) displacements F_{0->t}, t = 0 .. steps, F_{0->0} = 0."""
    F = torch.zeros_like(motion)
    out = [F]
    for _ in range(steps):
        F = F + backward_warp(motion, F, padding_mode="zeros")  # F_{t+1}(x) = F_t(x) + M(x + F_t(x))
        out.append(F)
    return torch.stack(out)


def cinemagraph(image, motion, frames: int = 60, speed: float = 1.0, include_end: bool = False,
                progress: bool = True, device="cpu") -> torch.Tensor:
    """A seamless loop of ``frames`` frames from one image and a static motion field.

    ``image``: path, (h, w, 3) uint8 array or (3, h, w) tensor in [0, 1]. ``motion``: a path (.json brush or
    .flo), a brush dict, or an (h, w, 2) array / (2, h, w) tensor of pixels per frame; times ``speed``.
    Returns (frames, 3, h, w) floats in [0, 1]; frame ``frames`` would equal frame 0, so playing the result on
    repeat never jumps (``include_end=True`` appends that closing frame, e.g. to check it)."""
    if frames < 2:
        raise ConfigError(f"a loop needs frames >= 2, got {frames}")
    img = to_tensor(image, device=device)[0]  # (3, h, w) in [0, 1]
    _, h, w = img.shape
    if isinstance(motion, (str, Path)):
        m = torch.from_numpy(load_motion(motion, h, w, speed)).permute(2, 0, 1)  # (h, w, 2) -> (2, h, w)
    elif isinstance(motion, dict):
        m = torch.from_numpy(brush_to_motion(motion, h, w) * speed).permute(2, 0, 1)
    else:
        m = motion if isinstance(motion, torch.Tensor) else torch.from_numpy(np.asarray(motion, np.float32))
        if tuple(m.shape) == (h, w, 2):
            m = m.permute(2, 0, 1)  # (h, w, 2) -> (2, h, w)
        if tuple(m.shape) != (2, h, w):
            raise InputError(f"motion field must be (h, w, 2) or (2, h, w) = {(2, h, w)} for this image, got {tuple(m.shape)}")
        m = m.float() * speed
    m = m[None].float().to(device)  # (1, 2, h, w)
    N = frames
    count = N + 1 if include_end else N
    ones = torch.ones_like(img[:1])
    src = torch.cat([img, ones])[None]  # (1, 4, h, w): colour and a channel of ones for the normaliser
    acc = torch.zeros(count, 4, h, w, device=device)  # per frame: sum of weighted colour, sum of weights
    # Two passes of Euler integration (eq. 3), each adding its splats to every frame's accumulator, so only one
    # displacement field is alive at a time. Forward pass: frame t gets (1 - t/N) splat(I, F_{0->t}).
    # Backward pass (velocity -M): after k steps the field is F_{0->-k} = F_{0->t-N} for frame t = N - k,
    # which gets (t/N) splat(I, F_{0->t-N}).
    bar = tqdm(total=2 * count, desc="cinemagraph", disable=not progress, leave=False)
    for sign, weight_of in ((1.0, lambda t: 1 - t / N), (-1.0, lambda t: t / N)):
        F = torch.zeros_like(m)
        for k in range(N + 1):
            t = k if sign > 0 else N - k
            if t < count:
                a = weight_of(t)
                if a > 0:
                    acc[t] += a * forward_splat(src, F, mode="sum")[0]
                bar.update()
            F = F + sign * backward_warp(m, F, padding_mode="zeros")  # F <- F + (+-M)(x + F)
    bar.close()
    num, den = acc[:, :3], acc[:, 3:]
    out = torch.where(den > 1e-6, num / den.clamp_min(1e-6), img[None])  # holes keep the still photo
    return out.clamp(0, 1).cpu()
