"""Procedural video clips whose motion is known exactly: the built-in model's training and evaluation data.

Every clip is a function of one integer seed (:func:`make_clip`), so the data set needs no disk: the trainer
draws clip ``i`` of the ``"train"`` split, the evaluator clips of the ``"eval"`` split, and the two seed
streams never meet (:func:`clip_seed`, numpy ``SeedSequence`` spawn keys).

A clip is a stack of layers composited back to front:

- a **background** canvas (a random crop of an image bundled with scikit-image, or procedural noise:
  smoothed colour noise, stripes, checkers), seen through a moving **camera**;
- 1-3 **sprites** (textured discs, boxes, triangles) at depths ``d`` in [0.6, 1.6]: in camera moves a sprite
  moves ``d`` times as far as the background (parallax: near things move faster), in the object classes the
  camera is still and the sprites slide or bounce.

Each layer ``L`` has a 2x3 affine ``A_k^L`` per frame ``k`` mapping layer coordinates to frame pixels (pixel
convention of :mod:`i2v.motion.warp`: centres at integers, x right, y down). From the layers we also get the
exact **backward flow to frame 0**: a pixel ``p`` of frame ``k`` showing layer ``L`` came from
``A_0^L (A_k^L)^-1 p`` in frame 0; the evaluator's oracle warps the first frame with it.

Motion classes (``MOTIONS``; "pan-left" means the *camera* turns left, so the picture content moves right):

=============  ==========================================================
static         nothing moves (sprites included)
pan-left/right camera translates; content moves +x / -x, 1.2*speed px/frame
pan-up/down    content moves +y / -y, 1.2*speed px/frame
zoom-in/out    scale about the centre by (1 +/- 0.02*speed) per frame
rotate-cw/ccw  rotation about the centre, 1.5*speed degrees per frame
slide          camera still, sprites slide right at 1.2*speed*d px/frame
bounce         camera still, sprites fall under gravity and bounce on the floor
=============  ==========================================================

``speed`` is drawn from [0.5, 1.5] and stored with the label; the model is conditioned on both.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

MOTIONS = ("static", "pan-left", "pan-right", "pan-up", "pan-down", "zoom-in", "zoom-out",
           "rotate-cw", "rotate-ccw", "slide", "bounce")
CAMERA_MOTIONS = MOTIONS[:9]
SPLITS = {"train": 0, "eval": 1}

PAN_PX = 1.2      # background pixels per frame at speed 1
ZOOM_RATE = 0.02  # relative scale change per frame at speed 1
ROT_DEG = 1.5     # degrees per frame at speed 1
GRAVITY = 0.35    # px / frame^2 at speed 1

# images bundled with scikit-image (no download needed); grey ones are tinted at random
TEXTURES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
            "colorwheel", "brick", "grass", "gravel", "camera", "coins", "moon", "page", "clock", "text")


@dataclass
class Clip:
    """One clip. ``frames`` (t, h, w, 3) float32 in [0, 1]; ``flow`` (t, h, w, 2) float32 backward flow to
    frame 0 in pixels (frame k pixel p shows what frame 0 had at p + flow[k, p]); ``motion`` one of MOTIONS;
    ``speed`` in [0.5, 1.5]; ``seed`` the integer it was made from."""
    frames: np.ndarray
    flow: np.ndarray
    motion: str
    speed: float
    seed: int

    @property
    def label(self) -> int:
        return MOTIONS.index(self.motion)


def motion_index(name: str) -> int:
    """Index of a motion class by name; a clear error listing the names otherwise."""
    if name not in MOTIONS:
        raise ConfigError(f"unknown motion {name!r}; valid: {', '.join(MOTIONS)}")
    return MOTIONS.index(name)


def clip_seed(split: str, index: int, data_seed: int = 0) -> int:
    """A 32-bit seed for clip ``index`` of ``split`` ("train" or "eval"): the splits are separate
    SeedSequence spawn keys, so no training clip ever equals an evaluation clip."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    ss = np.random.SeedSequence(entropy=data_seed, spawn_key=(SPLITS[split], index))
    return int(ss.generate_state(1)[0])


@functools.lru_cache(maxsize=None)
def _texture_image(name: str) -> np.ndarray:
    import skimage.data
    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.float32) / 255.0


def _grid(n: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(yy, xx) float32 coordinates of the pixel centres of an n x n image rendered at ``scale`` x the pixels,
    in units of the unscaled image (pixel j of the fine image is at (j + 0.5) / scale - 0.5)."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    if scale == 1:
        return yy, xx
    return (yy + 0.5) / scale - 0.5, (xx + 0.5) / scale - 0.5


def _noise_texture(rng: np.random.Generator, size: int, scale: int = 1) -> np.ndarray:
    """Procedural texture: smoothed colour noise at a few octaves, or stripes / checkers. ``size`` is in pixels
    of the rendering; ``scale`` says how many of them make one unit of the pattern's geometry."""
    import cv2

    kind = rng.integers(3)
    yy, xx = _grid(size, scale)
    if kind == 0:  # multi-octave smoothed colour noise
        out = np.zeros((size, size, 3), np.float32)
        for octave in range(4):
            cells = 4 * 2**octave
            small = rng.random((cells, cells, 3)).astype(np.float32)
            out += cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC) / 2**octave
        out -= out.min()
        return out / max(out.max(), 1e-6)
    c0, c1 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 20)
    u = (xx * math.cos(angle) + yy * math.sin(angle)) / period
    if kind == 1:  # soft stripes
        m = 0.5 + 0.5 * np.sin(2 * math.pi * u)
    else:  # checkers
        v = (-xx * math.sin(angle) + yy * math.cos(angle)) / period
        m = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        m = cv2.GaussianBlur(m, (0, 0), 0.7 * scale)
    return m[..., None] * c0 + (1 - m[..., None]) * c1


def _background(rng: np.random.Generator, size: int, scale: int = 1) -> np.ndarray:
    """A (size, size, 3) canvas: a random crop of a bundled image (70%) or a procedural texture."""
    import cv2

    if rng.random() < 0.3:
        return _noise_texture(rng, size, scale)
    img = _texture_image(TEXTURES[rng.integers(len(TEXTURES))])
    h, w = img.shape[:2]
    crop = int(rng.uniform(0.45, 1.0) * min(h, w))
    y0, x0 = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    # enlarging with INTER_AREA is nearly nearest-neighbour (blocky); scale 1 keeps it so the training data stays
    # bit for bit what the shipped weights were trained on
    interp = cv2.INTER_AREA if scale == 1 or crop >= size else cv2.INTER_CUBIC
    out = cv2.resize(img[y0:y0 + crop, x0:x0 + crop], (size, size), interpolation=interp)
    if img[..., 0].std() > 0 and np.allclose(img[..., 0], img[..., 1]):  # grey image: tint it
        tint = rng.uniform(0.4, 1.0, 3).astype(np.float32)
        out = out * tint + (1 - tint) * rng.random(3).astype(np.float32) * 0.3
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out, dtype=np.float32)


def _sprite(rng: np.random.Generator, radius: int, scale: int = 1) -> np.ndarray:
    """(2r+1, 2r+1, 4) RGBA sprite (times ``scale`` per side): a textured disc, box or triangle with an
    anti-aliased edge."""
    n = (2 * radius + 1) * scale
    tex = _noise_texture(rng, n, scale) * 0.5 + rng.random(3).astype(np.float32) * 0.5
    yy, xx = _grid(n, scale)
    yy, xx = yy - radius, xx - radius
    shape = rng.integers(3)
    if shape == 0:
        d = radius - np.hypot(xx, yy)
    elif shape == 1:
        d = radius * 0.8 - np.maximum(np.abs(xx), np.abs(yy))
    else:  # upward triangle: inside three half-planes
        d = np.minimum.reduce([yy + radius * 0.6, (radius * 0.7 - yy) * 0.5 - np.abs(xx) * 0.87 + radius * 0.2,
                               np.full_like(xx, radius)])
    alpha = np.clip(d * scale + 0.5, 0, 1)  # one rendered pixel of anti-aliasing
    return np.dstack([tex, alpha]).astype(np.float32)


def _affine(scale: float, angle_deg: float, center: tuple[float, float], shift: tuple[float, float]) -> np.ndarray:
    """2x3 matrix: rotate by ``angle_deg`` (clockwise on screen, y down) and scale about ``center``,
    then translate by ``shift``."""
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    cx, cy = center
    # p' = R S (p - c) + c + shift
    return np.array([[c, -s, cx - c * cx + s * cy + shift[0]],
                     [s, c, cy - s * cx - c * cy + shift[1]]], np.float64)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x3 affine of ``a after b``."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


def _invert(a: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.vstack([a, [0, 0, 1]]))[:2]


def camera_transform(motion: str, speed: float, k: int, size: int) -> np.ndarray:
    """2x3 map from frame-0 pixels to frame-k pixels for the camera (background at depth 1)."""
    c = ((size - 1) / 2, (size - 1) / 2)
    v = PAN_PX * speed * k
    if motion == "pan-left":
        return _affine(1, 0, c, (v, 0))
    if motion == "pan-right":
        return _affine(1, 0, c, (-v, 0))
    if motion == "pan-up":
        return _affine(1, 0, c, (0, v))
    if motion == "pan-down":
        return _affine(1, 0, c, (0, -v))
    if motion == "zoom-in":
        return _affine((1 + ZOOM_RATE * speed) ** k, 0, c, (0, 0))
    if motion == "zoom-out":
        return _affine((1 + ZOOM_RATE * speed) ** -k, 0, c, (0, 0))
    if motion == "rotate-cw":
        return _affine(1, ROT_DEG * speed * k, c, (0, 0))
    if motion == "rotate-ccw":
        return _affine(1, -ROT_DEG * speed * k, c, (0, 0))
    return _affine(1, 0, c, (0, 0))


def camera_backward(motion: str, speed: float, k: int, size: int) -> np.ndarray:
    """2x3 map from frame-k pixels to the frame-0 pixels the camera brought there: C_0 C_k^-1 with C_k =
    :func:`camera_transform` (the background's backward map, the one its exact flow to frame 0 follows)."""
    return _compose(camera_transform(motion, speed, 0, size), _invert(camera_transform(motion, speed, k, size)))


def make_clip(seed: int, motion: str | None = None, speed: float | None = None, frames: int = 16,
              size: int = 64, sprites: int | None = None, with_flow: bool = True, scale: int = 1) -> Clip:
    """Render one clip from ``seed``. ``motion``/``speed``/``sprites`` default to random draws from the seed
    (motion uniform over MOTIONS, speed uniform in [0.5, 1.5], 1-3 sprites). ``with_flow=False`` skips the
    flow (all zeros), which the trainer does not need.

    ``scale`` renders the same clip with ``scale`` times the pixels per side (``size * scale`` square frames,
    flow in those pixels): the scene, its motion and every random draw are those of the ``size`` clip, all
    geometry is defined in its units (a pan still crosses the same fraction of the frame), and textures and
    edges are drawn at the finer resolution. The procedural textures and sprite edges then carry real detail
    at every scale; the bundled photographs (at most about 500 px) are enlarged bicubically where their crop
    has fewer pixels than the canvas."""
    import cv2

    if frames < 2 or size < 16:
        raise ConfigError(f"need frames >= 2 and size >= 16, got frames={frames}, size={size}")
    if not isinstance(scale, int) or isinstance(scale, bool) or not 1 <= scale <= 16:
        raise ConfigError(f"scale must be an integer between 1 and 16, got {scale!r}")
    rng = np.random.default_rng(seed)
    draw_motion = MOTIONS[rng.integers(len(MOTIONS))]
    draw_speed = float(rng.uniform(0.5, 1.5))
    draw_sprites = int(rng.integers(1, 4))
    motion = draw_motion if motion is None else MOTIONS[motion_index(motion)]
    speed = draw_speed if speed is None else float(speed)
    n_sprites = draw_sprites if sprites is None else int(sprites)
    if motion in ("slide", "bounce"):
        n_sprites = max(n_sprites, 1)

    # background canvas larger than the frame, so moves never reveal its edge; frame 0 sees its centre
    margin = int(math.ceil(PAN_PX * 1.5 * frames * 1.6)) + size // 2
    canvas_size = size + 2 * margin
    canvas = _background(rng, canvas_size * scale, scale)
    to_frame0 = _affine(1, 0, (0, 0), (-margin, -margin))  # canvas -> frame-0 pixels

    # layers: (image RGBA or RGB, list of per-frame 2x3 maps image -> frame k)
    layers = []
    cams = [camera_transform(motion, speed, k, size) for k in range(frames)]
    layers.append((canvas, [_compose(cam, to_frame0) for cam in cams]))
    floor = size - 1
    for _ in range(n_sprites):
        radius = int(rng.integers(4, 10))
        sprite = _sprite(rng, radius, scale)
        depth = float(rng.uniform(0.6, 1.6))
        x0 = float(rng.uniform(radius, size - 1 - radius))
        y0 = float(rng.uniform(radius, size - 1 - radius))
        vy0 = float(rng.uniform(-1.5, 0.5))
        maps = []
        for k in range(frames):
            if motion in CAMERA_MOTIONS:
                cam = camera_transform(motion, speed, k, size)
                if motion.startswith("pan"):  # parallax: a sprite at depth d moves d times as far
                    cam = cam.copy()
                    cam[:, 2] *= depth
                pos = (x0, y0)
            elif motion == "slide":
                cam = cams[0]
                pos = (x0 + PAN_PX * speed * depth * k, y0)
            else:  # bounce: y(t) under gravity g = GRAVITY*speed, reflected at the floor
                g = GRAVITY * speed
                cam = cams[0]
                y, vy = y0, vy0 * speed
                for _step in range(k):  # explicit integration so the bounce is exact per frame
                    vy += g
                    y += vy
                    if y > floor - radius:
                        y = 2 * (floor - radius) - y
                        vy = -0.85 * abs(vy)
                pos = (x0, y)
            place = _affine(1, 0, (0, 0), (pos[0] - radius, pos[1] - radius))  # sprite image -> frame-0 spot
            maps.append(_compose(cam, place))
        layers.append((sprite, maps))

    if scale != 1:  # layer and frame maps in rendered pixels: p_px = s p + (s - 1) / 2, map_px = T map T^-1
        to_px = np.array([[scale, 0, (scale - 1) / 2], [0, scale, (scale - 1) / 2]], np.float64)
        layers = [(layer, [_compose(to_px, _compose(m, _invert(to_px))) for m in maps]) for layer, maps in layers]
    size = size * scale
    out = np.zeros((frames, size, size, 3), np.float32)
    flow = np.zeros((frames, size, size, 2), np.float32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    for k in range(frames):
        img = np.zeros((size, size, 3), np.float32)
        owner_map = None
        for li, (layer, maps) in enumerate(layers):
            warped = cv2.warpAffine(layer, maps[k], (size, size), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT101 if li == 0 else cv2.BORDER_CONSTANT)
            if li == 0:
                img = warped
                owner = np.zeros((size, size), np.int64)
            else:
                a = warped[..., 3:4]
                img = img * (1 - a) + warped[..., :3] * a
                owner[warped[..., 3] > 0.5] = li
            owner_map = owner
        out[k] = img
        if not with_flow:
            continue
        # backward flow to frame 0: q = A_0 A_k^-1 p for the layer that owns p
        for li, (_, maps) in enumerate(layers):
            m = owner_map == li
            if not m.any():
                continue
            back = _compose(maps[0], _invert(maps[k]))
            qx = back[0, 0] * xs[m] + back[0, 1] * ys[m] + back[0, 2]
            qy = back[1, 0] * xs[m] + back[1, 1] * ys[m] + back[1, 2]
            flow[k][m] = np.stack([qx - xs[m], qy - ys[m]], -1)
    return Clip(np.clip(out, 0, 1), flow, motion, speed, int(seed))


def make_batch(split: str, indices, data_seed: int = 0, frames: int = 16, size: int = 64):
    """Clips ``indices`` of ``split`` as model tensors: frames (b, 3, t, h, w) in [-1, 1], labels (b,) long,
    speeds (b,) float. Imported lazily by the trainer so this module needs only numpy and OpenCV."""
    import torch
    clips = [make_clip(clip_seed(split, int(i), data_seed), frames=frames, size=size, with_flow=False)
             for i in indices]
    x = torch.from_numpy(np.stack([c.frames for c in clips])).permute(0, 4, 1, 2, 3)  # (b, t, h, w, c) -> (b, c, t, h, w)
    labels = torch.tensor([c.label for c in clips], dtype=torch.long)
    speeds = torch.tensor([c.speed for c in clips], dtype=torch.float32)
    return x * 2 - 1, labels, speeds
