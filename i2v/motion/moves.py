"""Camera trajectories for :mod:`i2v.motion.camera`, in plain numpy (no torch: the command line lists the moves
without loading torch).

Each move maps eased time s in [0, 1] and an amount to (R_c, C, focal scale): the camera's camera-to-world
rotation (3x3), its centre (3,), and f'/f. s = 0 is the input view (identity), so frame 0 = the photo. Axes: x
right, y down, z forward (OpenCV's camera convention).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError


def rot_y(theta: float) -> np.ndarray:
    """Rotation about the y (down) axis by theta radians; positive turns the forward axis z toward +x (right)."""
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)


def rot_x(theta: float) -> np.ndarray:
    """Rotation about the x axis; positive turns the forward axis toward -y (up)."""
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[1, 0, 0], [0, c, s], [0, -s, c]], dtype=np.float64)


def _vec(x, y, z):
    return np.array([x, y, z], dtype=np.float64)


I3 = np.eye(3, dtype=np.float64)


def _orbit(s, a):
    # the camera swings on a circle of radius 1 (the median depth) around the pivot P = (0, 0, 1), looking at it:
    # C = P + R_y(theta) (0, 0, -1), R_c = R_y(theta) with theta = -a s (positive amount: camera moves right)
    theta = -math.radians(a) * s
    return rot_y(theta), _vec(0, 0, 1) + rot_y(theta) @ _vec(0, 0, -1), 1.0


def _dolly_zoom(s, a):
    # move back by a s while zooming in so the plane at depth 1 keeps its size: f'/f = (1 + a s) / 1 (Hitchcock)
    return I3, _vec(0, 0, -a * s), 1.0 + a * s


# name -> (trajectory(s, amount) -> (R_c, C, focal scale), default amount, what it does). An explicit table.
MOVES = {
    "dolly-in": (lambda s, a: (I3, _vec(0, 0, a * s), 1.0), 0.3, "move toward the scene by amount x median depth"),
    "dolly-out": (lambda s, a: (I3, _vec(0, 0, -a * s), 1.0), 0.3, "move away from the scene"),
    "truck-left": (lambda s, a: (I3, _vec(-a * s, 0, 0), 1.0), 0.12, "slide the camera left"),
    "truck-right": (lambda s, a: (I3, _vec(a * s, 0, 0), 1.0), 0.12, "slide the camera right"),
    "pan-left": (lambda s, a: (rot_y(-math.radians(a) * s), _vec(0, 0, 0), 1.0), 8.0, "turn left by amount degrees"),
    "pan-right": (lambda s, a: (rot_y(math.radians(a) * s), _vec(0, 0, 0), 1.0), 8.0, "turn right by amount degrees"),
    "pedestal-up": (lambda s, a: (I3, _vec(0, -a * s, 0), 1.0), 0.1, "raise the camera"),
    "pedestal-down": (lambda s, a: (I3, _vec(0, a * s, 0), 1.0), 0.1, "lower the camera"),
    "orbit": (_orbit, 10.0, "circle around the subject at median depth by amount degrees (negative: other way)"),
    "zoom-in": (lambda s, a: (I3, _vec(0, 0, 0), 1.0 + a * s), 0.3, "focal length x (1 + amount), no parallax"),
    "zoom-out": (lambda s, a: (I3, _vec(0, 0, 0), 1.0 / (1.0 + a * s)), 0.3, "focal length / (1 + amount)"),
    "dolly-zoom": (_dolly_zoom, 0.5, "move back while zooming in: the subject stays, the background grows"),
}

EASINGS = {
    "linear": lambda s: s,
    "ease-in-out": lambda s: 3 * s**2 - 2 * s**3,  # smoothstep: zero velocity at both ends
    "ease-in": lambda s: s**2,
    "ease-out": lambda s: 1 - (1 - s) ** 2,
    "swing": lambda s: (1 - math.cos(2 * math.pi * s)) / 2,  # there and back: the last frame is the photo (loops)
}


def _check_move(move: str, easing: str) -> str:
    move = move.replace("_", "-").lower()
    if move not in MOVES:
        raise ConfigError(f"unknown camera move {move!r}; valid: {', '.join(MOVES)}")
    if easing not in EASINGS:
        raise ConfigError(f"unknown easing {easing!r}; valid: {', '.join(EASINGS)}")
    return move


def trajectory(move: str, frames: int, amount: float | None = None, easing: str = "ease-in-out"):
    """The camera of each frame: a list of (R_c, C, focal scale), frame 0 the identity."""
    move = _check_move(move, easing)
    if frames < 1:
        raise ConfigError(f"frames must be >= 1, got {frames}")
    fn, default, _ = MOVES[move]
    a = default if amount is None else float(amount)
    times = [i / (frames - 1) if frames > 1 else 0.0 for i in range(frames)]
    return [fn(EASINGS[easing](s), a) for s in times]


FILLS = ("telea", "ns", "none")  # how disoccluded holes are filled: OpenCV inpainting (Telea, Navier-Stokes) or not
