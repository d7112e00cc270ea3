"""Embeddings shared by the models: the sinusoidal timestep embedding.

Transformer positional encoding (Vaswani et al. 2017) applied to a scalar, as in DDPM/LDM/SVD::

    freqs_k = exp(-ln(max_period) * k / half),  k = 0 .. half-1
    emb = [cos(t * freqs), sin(t * freqs)]          (cos first, as in the original LDM/sgm code)
"""

from __future__ import annotations

import math

import torch


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(n,) scalars -> (n, dim) sinusoidal embedding. Computed in float64 when ``t`` is float64, else float32
    (the original code's float32 sinusoid); an odd ``dim`` gets a trailing zero column."""
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t.to(dtype)[:, None] * freqs[None]  # (n, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (n, 2*half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb
