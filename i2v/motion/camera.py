"""Depth-driven camera moves: turn one photo and its depth into a short video of a moving camera.

Pipeline (the "3D photo" baseline, cf. Niklaus et al. 2019, "3D Ken Burns Effect from a Single Image"):
1. unproject every pixel with pinhole intrinsics K: X = z K^-1 (x, y, 1)^T (pixel centres at integers, see
   :mod:`i2v.motion.warp`);
2. for each frame, move the camera along a trajectory (eased in time) and express the points in the new camera:
   X' = R_c^T (X - C), with C the camera centre and R_c its camera-to-world rotation; zoom scales the focal length;
3. project, x' = K' X' / z', which gives a forward flow x' - x per pixel;
4. forward-splat the image with softmax weights exp(Z) = z'^-sharpness, so nearer points win where several land
   on the same pixel (Niklaus & Liu 2020);
5. fill the holes that nothing landed on (disocclusions) with OpenCV inpainting (Telea 2004) as the baseline.

Coordinates: x right, y down, z forward (into the scene), as in OpenCV. Depth is normalised to median 1 (see
:mod:`i2v.motion.depth`), so translations are fractions of the distance to the typical scene point.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..image import to_tensor
from . import moves
from .moves import EASINGS, FILLS, MOVES  # noqa: F401  (the tables the CLI lists)
from .depth import FALLBACK_PRIOR, DepthMap, fallback_depth, load_depth, prepare_depth
from .warp import forward_splat, pixel_grid

# ---------------------------------------------------------------------------------------------------------------
# Pinhole geometry
# ---------------------------------------------------------------------------------------------------------------


def intrinsics(h: int, w: int, fov_deg: float = 60.0) -> torch.Tensor:
    """3x3 pinhole K (float64) with horizontal field of view ``fov_deg``, square pixels and the principal point at
    the image centre ((w-1)/2, (h-1)/2 with pixel centres at integers): f = (w / 2) / tan(fov / 2)."""
    if not 1.0 <= fov_deg <= 170.0:
        raise ConfigError(f"field of view must be in [1, 170] degrees, got {fov_deg}")
    f = (w / 2) / math.tan(math.radians(fov_deg) / 2)
    return torch.tensor([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=torch.float64)


def unproject(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(h, w) depth (distance along the optical axis) -> (3, h, w) camera-space points X = z K^-1 (x, y, 1)."""
    h, w = depth.shape
    xy = pixel_grid(h, w, depth.device, K.dtype)[0]  # (2, h, w)
    xy1 = torch.cat([xy, torch.ones_like(xy[:1])])  # (3, h, w) homogeneous pixels
    rays = torch.einsum("ij,jhw->ihw", torch.linalg.inv(K), xy1)  # K^-1 (x, y, 1): rays with z = 1
    return rays * depth.to(K.dtype)


def project(points: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, ...) camera-space points -> ((2, ...) pixel positions K X / z, (...) depth z)."""
    p = torch.einsum("ij,j...->i...", K, points)
    z = points[2]
    return p[:2] / z, z


def reproject(depth: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
              K_new: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each pixel of a view with ``depth`` lands in a second view whose points are X' = R X + t (the
    convention of ``cv2.warpFrame``'s Rt). Returns ((2, h, w) forward flow x' - x in pixels, (h, w) new depth z')."""
    h, w = depth.shape
    X = unproject(depth, K)  # (3, h, w)
    Xn = torch.einsum("ij,jhw->ihw", R.to(K.dtype), X) + t.to(K.dtype)[:, None, None]
    uv, z = project(Xn, K if K_new is None else K_new)
    return uv - pixel_grid(h, w, depth.device, K.dtype)[0], z


# ---------------------------------------------------------------------------------------------------------------
# Trajectories (i2v/motion/moves.py, numpy) as float64 tensors
# ---------------------------------------------------------------------------------------------------------------


def rot_y(theta: float) -> torch.Tensor:
    """:func:`i2v.motion.moves.rot_y` as a float64 tensor."""
    return torch.from_numpy(moves.rot_y(theta))


def rot_x(theta: float) -> torch.Tensor:
    """:func:`i2v.motion.moves.rot_x` as a float64 tensor."""
    return torch.from_numpy(moves.rot_x(theta))


def trajectory(move: str, frames: int, amount: float | None = None, easing: str = "ease-in-out"):
    """The camera of each frame (:func:`i2v.motion.moves.trajectory`): (R_c, C, focal scale) as float64 tensors."""
    return [(torch.from_numpy(R), torch.from_numpy(C), f) for R, C, f in moves.trajectory(move, frames, amount, easing)]


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


def _depth_map(depth, h: int, w: int, depth_kind: str | None, depth_scale: float | None, verbose: bool) -> DepthMap:
    if isinstance(depth, DepthMap):
        return prepare_depth(depth.depth, "depth", (h, w))
    if depth is None:
        if verbose:
            print(FALLBACK_PRIOR)
        return DepthMap(fallback_depth(h, w), np.ones((h, w), bool), FALLBACK_PRIOR)
    if isinstance(depth, (str, Path)):
        dm = load_depth(depth, (h, w), depth_kind, depth_scale)
    else:
        values = depth.detach().cpu().numpy() if isinstance(depth, torch.Tensor) else np.asarray(depth)
        dm = prepare_depth(values / (depth_scale or 1.0), depth_kind or "depth", (h, w))
    if verbose and dm.note:
        print(f"note: {dm.note}")
    return dm


def inpaint_holes(frame: torch.Tensor, holes: torch.Tensor, method: str = "telea", radius: int = 3) -> torch.Tensor:
    """Fill ``holes`` ((h, w) bool) of a (3, h, w) [0, 1] frame with OpenCV inpainting (Telea 2004 or
    Navier-Stokes, Bertalmio et al. 2001). Works on 8-bit, as OpenCV's colour inpainting does."""
    import cv2

    if method == "none" or not bool(holes.any()):
        return frame
    img = (frame.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # (h, w, 3)
    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    out = cv2.inpaint(img, holes.cpu().numpy().astype(np.uint8), radius, flag)
    return torch.from_numpy(out).permute(2, 0, 1).to(frame) / 255


def render_view(img: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, R_c: torch.Tensor, C: torch.Tensor,
                focal_scale: float = 1.0, sharpness: float = 60.0, hole_threshold: float = 0.05):
    """One frame seen by a camera with rotation ``R_c`` (camera-to-world) at centre ``C``, focal f x ``focal_scale``.
    ``img`` (c, h, w), ``depth`` (h, w), both on the same device. Returns ((c, h, w) splatted frame with 0 in
    holes, (h, w) bool hole mask). Points behind the camera are dropped; softmax weight z'^-sharpness."""
    K_new = K.clone()
    K_new[0, 0] *= focal_scale
    K_new[1, 1] *= focal_scale
    R = R_c.T  # world -> new camera: X' = R_c^T (X - C) = R X + t with t = -R_c^T C
    flow, z = reproject(depth, K, R, -(R @ C), K_new)  # (2, h, w), (h, w) in float64
    ok = z > 1e-3
    flow = torch.where(ok, flow, torch.nan).float()
    metric = -sharpness * torch.log(z.clamp_min(1e-3)).float()  # Z = -sharpness ln z': nearer wins
    out, cov = forward_splat(img[None], flow[None], mode="softmax", metric=metric[None, None], return_coverage=True)
    return out[0], cov[0, 0] < hole_threshold


def render_camera_move(image, depth=None, move: str = "orbit", frames: int = 48, amount: float | None = None,
                       fov: float = 60.0, easing: str = "ease-in-out", fill: str = "telea", depth_kind: str | None = None,
                       depth_scale: float | None = None, sharpness: float = 60.0, device="cpu", progress: bool = True,
                       return_holes: bool = False, verbose: bool = True):
    """Render a camera ``move`` over ``frames`` frames from one image and its depth.

    ``image``: path, (h, w, 3) uint8 array or (3, h, w) tensor in [0, 1]. ``depth``: None (the fallback prior,
    printed), a path (see :mod:`i2v.motion.depth`), an (h, w) array/tensor of ``depth_kind`` values, or a DepthMap.
    ``move``: one of ``MOVES`` with ``amount`` (default per move). ``fill``: "telea", "ns" or "none".
    Returns a (frames, 3, h, w) float tensor in [0, 1] (and the (frames, 1, h, w) bool hole masks before filling,
    with ``return_holes``). Frame 0 is the input image."""
    if fill not in FILLS:
        raise ConfigError(f"unknown hole fill {fill!r}; valid: {', '.join(FILLS)}")
    cams = trajectory(move, frames, amount, easing)
    img = to_tensor(image, device=device)[0]  # (3, h, w) in [0, 1]
    _, h, w = img.shape
    K = intrinsics(h, w, fov).to(device)
    dm = _depth_map(depth, h, w, depth_kind, depth_scale, verbose)
    depth_t = torch.from_numpy(dm.depth).to(device)
    out, holes = [], []
    for R_c, C, fs in tqdm(cams, desc=f"camera {move}", disable=not progress, leave=False):
        frame, hole = render_view(img, depth_t, K, R_c.to(device), C.to(device), fs, sharpness)
        out.append(inpaint_holes(frame, hole, fill))
        holes.append(hole)
    frames_t = torch.stack(out).clamp(0, 1).cpu()
    return (frames_t, torch.stack(holes)[:, None].cpu()) if return_holes else frames_t
