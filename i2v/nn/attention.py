"""Attention: one functional primitive, :func:`attention`, and the LDM/sgm-named modules built on it.

Scaled dot-product attention (Vaswani et al. 2017)::

    Attention(Q, K, V) = softmax(Q K^T * scale + bias) V,   scale = 1 / sqrt(d_head) unless given

computed by ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels where the
device has them, never a full (n, m) matrix in memory on CPU). Every attention module of every model in i2v
calls :func:`attention`, so there is one place to read the math, one place to swap the kernel, and one place
where sequence parallelism (:mod:`i2v.nn.parallel`) exchanges heads for sequence.

The modules keep the attribute names of the original checkpoints (``to_q``, ``to_k``, ``to_v``, ``to_out.0``;
``net.0.proj``, ``net.2``) so weights load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, heads: int | None = None,
              bias: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v over the keys.

    Layouts: q (b, h, n, d), k and v (b, h, m, d) -> (b, h, n, d); or, with ``heads``, tokens with the heads
    packed in the channels, q (b, n, h*d), k and v (b, m, h*d) -> (b, n, h*d). ``bias`` broadcasts to
    (b, h, n, m) (T5's relative position bias, a padding mask as -inf); ``scale`` defaults to 1/sqrt(d)
    (T5 uses 1: its initialisation absorbs the factor)."""
    if heads is not None:
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)  # (b, h, n, d)
    return rearrange(out, "b h n d -> b n (h d)") if heads is not None else out


class CrossAttention(nn.Module):
    """Multi-head attention of ``x`` (b, n, query_dim) over ``context`` (b, m, context_dim), or over ``x``
    itself when ``context`` is None. Output (b, n, query_dim)."""

    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim))  # index 0 as in the checkpoints (1 was dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        if context.shape[1] == 1 and context is not x:
            # One key: softmax over a single logit is exactly 1, so every query receives v. Skipping q, k and the
            # attention is exact (SVD's context is one CLIP image token). A broadcast view, (b, n, query_dim).
            return self.to_out(self.to_v(context)).expand(x.shape[0], x.shape[1], -1)
        out = attention(self.to_q(x), self.to_k(context), self.to_v(context), heads=self.heads)
        return self.to_out(out)


class GEGLU(nn.Module):
    """Gated GELU projection (Shazeer 2020): ``a * gelu(g)`` with ``[a, g] = x W + b``."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """Transformer MLP with a GEGLU input: ``dim -> mult*dim (gated) -> dim_out``, applied to each token.

    Its hidden layer (2 * mult * dim wide before gating) is the largest activation in a U-Net; because the MLP
    acts on each token alone, tokens are processed ``chunk_tokens`` at a time, which bounds that buffer
    without changing the result (0 = all at once)."""

    def __init__(self, dim: int, dim_out: int | None = None, mult: int = 4, chunk_tokens: int = 4096):
        super().__init__()
        inner = dim * mult
        # net.1 was dropout in training; an Identity keeps the checkpoint's index of the output layer (net.2)
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Identity(), nn.Linear(inner, dim_out or dim))
        self.chunk_tokens = chunk_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])  # (n, dim)
        n, step = tokens.shape[0], self.chunk_tokens or tokens.shape[0]
        if n <= step:
            return self.net(x)
        out = tokens.new_empty(n, self.net[2].out_features)
        for i in range(0, n, step):
            out[i:i + step] = self.net(tokens[i:i + step])
        return out.view(*x.shape[:-1], -1)
