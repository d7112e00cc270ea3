"""Warping primitives shared by motion priors and frame interpolation.

Pixel convention (used everywhere in i2v): pixel centres sit at integer coordinates (x, y), x to the right,
y down, (0, 0) the centre of the top-left pixel. A flow field is a (b, 2, h, w) tensor of (u, v) =
(dx, dy) displacements in pixels. Backward warping samples ``out(p) = img(p + flow(p))`` bilinearly; this is
``grid_sample`` with ``align_corners=True`` and the grid normalised by (w - 1), (h - 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError


def _check(img: torch.Tensor, flow: torch.Tensor) -> None:
    if img.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2:
        raise InputError(f"expected img (b, c, h, w) and flow (b, 2, h, w), got {tuple(img.shape)} and {tuple(flow.shape)}")
    if img.shape[-2:] != flow.shape[-2:] or img.shape[0] != flow.shape[0]:
        raise InputError(f"img {tuple(img.shape)} and flow {tuple(flow.shape)} differ in batch or size")


def pixel_grid(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(1, 2, h, w) tensor holding each pixel's own (x, y) coordinate."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys])[None]


def backward_warp(img: torch.Tensor, flow: torch.Tensor, padding_mode: str = "border", mode: str = "bilinear") -> torch.Tensor:
    """out(p) = img(p + flow(p)), bilinear. ``img`` (b, c, h, w), ``flow`` (b, 2, h, w) in pixels.
    Samples outside the image take the nearest border value (``padding_mode="border"``) or 0 ("zeros")."""
    _check(img, flow)
    b, _, h, w = img.shape
    coords = pixel_grid(h, w, img.device, flow.dtype) + flow  # (b, 2, h, w) absolute sample positions
    # pixel -> [-1, 1] with align_corners=True: -1 is the centre of pixel 0, +1 the centre of pixel w-1
    gx = 2 * coords[:, 0] / max(w - 1, 1) - 1
    gy = 2 * coords[:, 1] / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1)  # (b, h, w, 2)
    return F.grid_sample(img, grid.to(img.dtype), mode=mode, padding_mode=padding_mode, align_corners=True)


def inside_mask(flow: torch.Tensor) -> torch.Tensor:
    """(b, 1, h, w) float mask: 1 where p + flow(p) lands inside the image (within the outer pixel centres)."""
    _, _, h, w = flow.shape
    coords = pixel_grid(h, w, flow.device, flow.dtype) + flow
    ok = (coords[:, 0] >= 0) & (coords[:, 0] <= w - 1) & (coords[:, 1] >= 0) & (coords[:, 1] <= h - 1)
    return ok[:, None].to(flow.dtype)
