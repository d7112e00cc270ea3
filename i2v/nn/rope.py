"""Rotary position embeddings (RoPE, Su et al. 2021, "RoFormer", eq. 15-16), 1D and 3D, shared by every DiT.

Each pair of channels (x_2j, x_2j+1) of a query or key is rotated by an angle proportional to the token's
position::

    (x_2j, x_2j+1) -> (x_2j cos a - x_2j+1 sin a,  x_2j sin a + x_2j+1 cos a),   a = pos * theta^(-j / n)

so q.k depends only on the *difference* of positions. For video the head's n = d/2 pairs are split between the
three axes (frame f, row y, column x)::

    n_f = d/2 - 2 floor(d/6),   n_y = n_x = floor(d/6)

each axis with its own exponent base theta^(-j/n_axis), j = 0 .. n_axis-1 (Wan2.1's ``rope_params`` split; the
built-in DiT uses the same). :func:`rope_3d` computes the (cos, sin) tables ONCE per forward call for the whole
(f, h, w) grid; every block and head reuses them, and sequence parallelism slices them by global position.
"""

from __future__ import annotations

import torch


def axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """How many rotation pairs each axis (f, y, x) gets for a head of width ``head_dim`` (even)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head width, got {head_dim}")
    n_y = n_x = head_dim // 6
    return head_dim // 2 - n_y - n_x, n_y, n_x


def rope_frequencies(pairs: int, theta: float = 10000.0, dtype=torch.float64, device=None) -> torch.Tensor:
    """theta^(-j / pairs), j = 0 .. pairs-1: the angular speed of each pair (RoFormer eq. 15)."""
    return theta ** (-torch.arange(pairs, dtype=dtype, device=device) / max(pairs, 1))


def rope_3d(f: int, h: int, w: int, head_dim: int, *, theta: float = 10000.0, dtype=torch.float64,
            device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (f*h*w, head_dim/2), for tokens in (f, y, x) raster order at integer positions.
    Angles are computed in ``dtype`` (float64 as Wan does; the built-in DiT uses float32)."""
    parts = []
    for n, size, axis in zip(axis_pairs(head_dim), (f, h, w), range(3)):
        pos = torch.arange(size, dtype=dtype, device=device)
        angle = pos[:, None] * rope_frequencies(n, theta, dtype, device)  # (size, n)
        shape = [f, h, w, n]
        view = [1, 1, 1, n]
        view[axis] = size
        parts.append(angle.reshape(view).expand(shape))
    angles = torch.cat(parts, dim=-1).reshape(f * h * w, head_dim // 2)  # (f h w, d/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of ``x`` (..., n, d) by the angles whose cos/sin are (n, d/2) (they
    broadcast over the leading axes). Computed in the tables' dtype, returned in x's dtype.

    The pair (x_2j, x_2j+1) read as the complex number x_2j + i x_2j+1 and multiplied by cos a + i sin a is
    exactly the rotation (x_2j cos a - x_2j+1 sin a, x_2j sin a + x_2j+1 cos a): one complex multiply, one pass
    over x (the same products, ~15x faster than four real products and a stack on the CPU)."""
    xt = x.to(cos.dtype)
    if xt.stride(-1) != 1 or any(st % 2 for st in xt.stride()[:-1]):
        xt = xt.contiguous()
    z = torch.view_as_complex(xt.unflatten(-1, (-1, 2)))  # (..., n, d/2) complex
    out = torch.view_as_real(z * torch.complex(cos, sin)).flatten(-2)
    return out.to(x.dtype)
