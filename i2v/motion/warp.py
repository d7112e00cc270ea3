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
    Samples outside the image take the nearest border value (``padding_mode="border"``) or 0 ("zeros").
    A flow of whole pixels is applied by indexing, so integer shifts are exact."""
    _check(img, flow)
    b, _, h, w = img.shape
    coords = pixel_grid(h, w, img.device, flow.dtype) + flow  # (b, 2, h, w) absolute sample positions
    if padding_mode in ("border", "zeros") and not flow.requires_grad and bool(torch.all(coords == torch.round(coords))):
        return _integer_warp(img, coords.long(), padding_mode)
    # pixel -> [-1, 1] with align_corners=True: -1 is the centre of pixel 0, +1 the centre of pixel w-1
    gx = 2 * coords[:, 0] / max(w - 1, 1) - 1
    gy = 2 * coords[:, 1] / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1)  # (b, h, w, 2)
    return F.grid_sample(img, grid.to(img.dtype), mode=mode, padding_mode=padding_mode, align_corners=True)


def _integer_warp(img: torch.Tensor, coords: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Backward warp when every sample position is a whole pixel: plain indexing, so integer shifts are exact
    (grid_sample's [-1, 1] normalisation would add float32 rounding, ~1e-5 at 1000 px)."""
    b, c, h, w = img.shape
    x, y = coords[:, 0], coords[:, 1]  # (b, h, w)
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    idx = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).reshape(b, 1, h * w).expand(b, c, h * w)
    out = img.reshape(b, c, h * w).gather(2, idx).reshape(b, c, h, w)
    return out if padding_mode == "border" else out * inside[:, None].to(img.dtype)


def normalized_grid(h: int, w: int, device=None) -> torch.Tensor:
    """(1, h, w, 2) pixel centres of an h x w image in the normalised (x, y) coordinates of
    ``grid_sample(align_corners=False)``: x = (2 j + 1) / w - 1, so -1 and 1 are the outer edges and a position
    means the same place at every resolution (the convention of the built-in model's warp head)."""
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], device=device)
    return F.affine_grid(identity, [1, 1, h, w], align_corners=False)


def transfer_detail(frame: torch.Tensor, image: torch.Tensor, source: torch.Tensor, weight: torch.Tensor,
                    moved: torch.Tensor | None = None) -> torch.Tensor:
    """Carry low-resolution frames to the resolution of ``image`` along their motion::

        P   = image sampled at source                     the full-resolution image, moved as the frame moved
        out = up(frame) + v (up(m) P - up(m W))           W: P at the frame's resolution, m: ``weight``
                                                          v: 1 where the source lies inside the image, else 0

    Inside the image this is ``up(frame - m W) + up(m) P``: the moved image where the frame is that moved image
    (share m), plus the frame's own residual ``frame - m W`` (what it shows beyond the moved image), upsampled.
    Where m = 1 and frame = W the output is P exactly; where m = 0, or where the source leaves the image
    (content entering the picture, which P could only show as repeated border pixels), it is the upsampled frame.

    ``frame`` (n, c, h, w) in [0, 1]; ``image`` (1, c, H, W); ``source`` (n, H', W', 2) where each output pixel
    reads ``image``, in normalised coordinates (``align_corners=False``, see :func:`normalized_grid`); ``weight``
    (n, 1, h, w) in [0, 1]; ``moved`` (n, c, h, w): W as the frame's maker computed it (e.g. the built-in warp
    head's moved first frame), else the area average of P (``down(P)``). ``up`` is bicubic to (H', W').
    Returns (n, c, H', W') clamped to [0, 1]."""
    n, c = frame.shape[:2]
    size = tuple(source.shape[1:3])
    big = F.grid_sample(image.expand(n, -1, -1, -1).to(source.dtype), source, mode="bicubic",
                        padding_mode="border", align_corners=False)  # P, (n, c, H', W')
    if moved is None:
        moved = F.adaptive_avg_pool2d(big, frame.shape[-2:])  # area average: down(P), (n, c, h, w)
    frame, weight = frame.to(big.dtype), weight.to(big.dtype)
    # one bicubic upsampling of [frame, m W, m]: (n, 2c + 1, h, w) -> (n, 2c + 1, H', W')
    up = F.interpolate(torch.cat([frame, weight * moved.to(big.dtype), weight], dim=1), size=size, mode="bicubic",
                       align_corners=False)
    inside = (source.abs() <= 1).all(dim=-1)[:, None].to(big.dtype)  # (n, 1, H', W')
    return (up[:, :c] + inside * (up[:, 2 * c:].clamp(0, 1) * big - up[:, c:2 * c])).clamp(0, 1)


def inside_mask(flow: torch.Tensor) -> torch.Tensor:
    """(b, 1, h, w) float mask: 1 where p + flow(p) lands inside the image (within the outer pixel centres)."""
    _, _, h, w = flow.shape
    coords = pixel_grid(h, w, flow.device, flow.dtype) + flow
    ok = (coords[:, 0] >= 0) & (coords[:, 0] <= w - 1) & (coords[:, 1] >= 0) & (coords[:, 1] <= h - 1)
    return ok[:, None].to(flow.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Forward splatting (Niklaus & Liu, "Softmax Splatting for Video Frame Interpolation", CVPR 2020)
# ---------------------------------------------------------------------------------------------------------------

SPLAT_MODES = ("sum", "average", "linear", "softmax")


def _splat_corners(flow: torch.Tensor):
    """Bilinear splatting targets. Source pixel p lands at q = p + flow(p) and gives each of the 4 pixels around
    q the bilinear weight b(q, corner) = (1 - |q_x - corner_x|)(1 - |q_y - corner_y|). Returns, for each of the
    4 corners, (flat target index over b*h*w, weight, valid) per source pixel; pairs that fall outside the image,
    have weight 0 or come from non-finite flow point at the extra slot b*h*w with weight 0."""
    b, _, h, w = flow.shape
    n = b * h * w
    q = pixel_grid(h, w, flow.device, flow.dtype) + flow  # (b, 2, h, w) landing positions
    x, y = q[:, 0].reshape(-1), q[:, 1].reshape(-1)  # (b*h*w,)
    finite = torch.isfinite(x) & torch.isfinite(y)  # non-finite flow = "drop this source"
    x, y = torch.where(finite, x, -2.0), torch.where(finite, y, -2.0)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    base = (torch.arange(b, device=flow.device) * (h * w)).repeat_interleave(h * w)  # batch offset of each source
    corners = []
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        cx, cy = x0 + dx, y0 + dy
        ok = finite & (wt > 0) & (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
        corners.append((torch.where(ok, base + cy * w + cx, n), torch.where(ok, wt, 0.0), ok))
    return corners


def forward_splat(img: torch.Tensor, flow: torch.Tensor, mode: str = "softmax", metric: torch.Tensor | None = None,
                  return_coverage: bool = False):
    """Forward-warp ``img`` (b, c, h, w) by ``flow`` (b, 2, h, w): every source pixel p is pushed to p + flow(p)
    and shared bilinearly among the 4 pixels around it (Niklaus & Liu 2020, eq. 1-4).

    ``mode``:
      - "sum":     out(q) = sum_p b(p, q) img(p)                                  (no normalisation)
      - "average": out(q) = sum_p b img(p) / sum_p b
      - "linear":  out(q) = sum_p Z(p) b img(p) / sum_p Z(p) b                     (``metric`` Z >= 0)
      - "softmax": out(q) = sum_p exp(Z(p)) b img(p) / sum_p exp(Z(p)) b          (larger Z wins, e.g. Z = a / depth)

    Softmax is numerically stable in float32 for any range of Z: every target subtracts the largest Z that
    reaches it, exp(Z(p) - max_q Z), so the winning contribution is exp(0) = 1 and nothing underflows to 0/0.
    Sources whose flow is NaN/inf are dropped (use that to mask invalid pixels). Pixels nothing lands on are 0.
    With ``return_coverage`` also returns the (b, 1, h, w) summed bilinear weight sum_p b(p, q): 0 at holes,
    about 1 where the image is neither stretched nor squeezed."""
    _check(img, flow)
    if mode not in SPLAT_MODES:
        raise InputError(f"unknown splatting mode {mode!r}; valid: {', '.join(SPLAT_MODES)}")
    if mode in ("linear", "softmax"):
        if metric is None:
            raise InputError(f"splatting mode {mode!r} needs a metric (b, 1, h, w), e.g. inverse depth")
        if metric.shape != (img.shape[0], 1, *img.shape[-2:]):
            raise InputError(f"metric must be (b, 1, h, w) = {(img.shape[0], 1, *img.shape[-2:])}, got {tuple(metric.shape)}")
        if mode == "linear" and bool((metric < 0).any()):
            raise InputError("linear splatting needs a metric >= 0; use softmax for signed metrics")
    b, c, h, w = img.shape
    n = b * h * w
    dtype = img.dtype if img.dtype in (torch.float32, torch.float64) else torch.float32
    corners = _splat_corners(flow.to(dtype))
    # channels first: index_add_ along the last dim scatters contiguous rows per channel (3-5x faster on CPU
    # than scattering (c,)-rows along dim 0)
    vals = img.to(dtype).permute(1, 0, 2, 3).reshape(c, n)  # (b, c, h, w) -> (c, b*h*w)
    if mode != "sum":
        vals = torch.cat([vals, torch.ones_like(vals[:1])])  # last row accumulates the normaliser
    if mode == "softmax":
        z = metric.to(dtype).reshape(-1)
        z_max = torch.full((n + 1,), -torch.inf, dtype=dtype, device=img.device)  # max Z landing on each target
        for dst, _, ok in corners:
            z_max.scatter_reduce_(0, dst, torch.where(ok, z, -torch.inf), reduce="amax")
    elif mode == "linear":
        z = metric.to(dtype).reshape(-1)
    acc = torch.zeros(vals.shape[0], n + 1, dtype=dtype, device=img.device)  # slot n collects dropped pairs
    for dst, bw, ok in corners:
        if mode == "softmax":
            weight = bw * torch.exp(torch.where(ok, z - z_max[dst], -torch.inf))  # exp(Z - max Z) in (0, 1]
        elif mode == "linear":
            weight = bw * z
        else:
            weight = bw
        acc.index_add_(1, dst, vals * weight)
    acc = acc[:, :n]
    if mode == "sum":
        out = acc
    else:
        den = acc[c:]
        out = torch.where(den > 0, acc[:c] / den.clamp_min(torch.finfo(dtype).tiny), 0.0)
    out = out.reshape(c, b, h, w).permute(1, 0, 2, 3).to(img.dtype)  # (c, b*h*w) -> (b, c, h, w)
    if not return_coverage:
        return out
    return out, _coverage(corners, b, h, w, dtype)


def _coverage(corners, b, h, w, dtype) -> torch.Tensor:
    cov = torch.zeros(b * h * w + 1, dtype=dtype, device=corners[0][0].device)
    for dst, bw, _ in corners:
        cov.index_add_(0, dst, bw.to(dtype))
    return cov[:-1].reshape(b, 1, h, w)


def splat_coverage(flow: torch.Tensor) -> torch.Tensor:
    """(b, 1, h, w) summed bilinear weight of all sources landing on each pixel under forward splatting."""
    b, _, h, w = flow.shape
    return _coverage(_splat_corners(flow), b, h, w, flow.dtype)


def hole_mask(flow: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """(b, 1, h, w) bool: True where forward splatting by ``flow`` leaves a hole (coverage < ``threshold``)."""
    return splat_coverage(flow) < threshold


def consistency_mask(flow_fw: torch.Tensor, flow_bw: torch.Tensor, alpha1: float = 0.01, alpha2: float = 0.5) -> torch.Tensor:
    """Forward-backward consistency (Sundaram et al. 2010; the thresholds of Meister et al. 2018, UnFlow).

    ``flow_fw`` maps frame a to b, ``flow_bw`` b to a, both (b, 2, h, w). A pixel p of a is visible in b when
    following the forward flow and then the backward flow returns to p:
        |F_fw(p) + F_bw(p + F_fw(p))|^2 < alpha1 (|F_fw(p)|^2 + |F_bw(p + F_fw(p))|^2) + alpha2.
    Returns a (b, 1, h, w) bool mask, True = consistent (visible), False = occluded or leaving the image."""
    if flow_fw.shape != flow_bw.shape:
        raise InputError(f"forward and backward flow must have the same shape, got {tuple(flow_fw.shape)} and {tuple(flow_bw.shape)}")
    bw_at = backward_warp(flow_bw, flow_fw)  # F_bw(p + F_fw(p)), (b, 2, h, w)
    diff = (flow_fw + bw_at).square().sum(1, keepdim=True)
    bound = alpha1 * (flow_fw.square().sum(1, keepdim=True) + bw_at.square().sum(1, keepdim=True)) + alpha2
    return (diff < bound) & inside_mask(flow_fw).bool()
