"""The shared primitives in i2v/nn and the built-in DiT block, each against its defining property or against the
formulas written out here with plain tensor operations."""

from __future__ import annotations

import math

import pytest
import torch

from i2v.nn.attention import attention
from i2v.nn.rope import apply_rope, axis_pairs, rope_3d


def naive_attention(q, k, v, bias=None, scale=None):
    """softmax(q k^T * scale + bias) v with an explicit matrix, (b, h, n, d)."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = torch.einsum("bhnd,bhmd->bhnm", q, k) * scale
    if bias is not None:
        logits = logits + bias
    return torch.einsum("bhnm,bhmd->bhnd", logits.softmax(-1), v)


def test_attention_equals_the_formula_in_both_layouts():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g, dtype=torch.float64) for n in (5, 7, 7))
    bias = torch.randn(1, 3, 5, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(attention(q, k, v), naive_attention(q, k, v))
    torch.testing.assert_close(attention(q, k, v, bias=bias, scale=1.0), naive_attention(q, k, v, bias, 1.0))
    packed = [t.permute(0, 2, 1, 3).reshape(2, t.shape[2], 24) for t in (q, k, v)]  # (b, n, h*d)
    out = attention(*packed, heads=3)
    torch.testing.assert_close(out, naive_attention(q, k, v).permute(0, 2, 1, 3).reshape(2, 5, 24))


@pytest.mark.parametrize("head_dim", [12, 16, 128])
def test_rope_scores_depend_only_on_relative_positions(head_dim):
    """RoFormer's defining property: <R(p) q, R(p') k> = <R(p - p') q, k> for every pair of (f, y, x) positions."""
    f, h, w = 3, 4, 5
    cos, sin = rope_3d(f, h, w, head_dim)
    g = torch.Generator().manual_seed(1)
    q = torch.randn(head_dim, generator=g, dtype=torch.float64).expand(f * h * w, -1)
    k = torch.randn(head_dim, generator=g, dtype=torch.float64).expand(f * h * w, -1)
    scores = apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).T  # (N, N): the same q and k at every position
    pos = torch.stack(torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 3)
    by_offset = {}
    for i in range(len(pos)):
        for j in range(len(pos)):
            by_offset.setdefault(tuple((pos[i] - pos[j]).tolist()), []).append(scores[i, j])
    for offset, values in by_offset.items():
        values = torch.stack(values)
        assert (values - values[0]).abs().max() < 1e-9, offset
    assert len({round(float(v[0]), 6) for v in map(torch.stack, by_offset.values())}) > len(by_offset) // 2


def test_rope_is_the_complex_rotation_of_each_pair():
    head_dim = 16
    n_f, n_y, n_x = axis_pairs(head_dim)
    assert (n_f, n_y, n_x) == (4, 2, 2)  # d/2 - 2 floor(d/6), floor(d/6), floor(d/6)
    cos, sin = rope_3d(2, 3, 2, head_dim)
    x = torch.randn(12, head_dim, dtype=torch.float64)
    pos = [(fi, yi, xi) for fi in range(2) for yi in range(3) for xi in range(2)]
    angles = torch.zeros(12, head_dim // 2, dtype=torch.float64)
    for i, (fi, yi, xi) in enumerate(pos):
        for j in range(n_f):
            angles[i, j] = fi * 10000 ** (-j / n_f)
        for j in range(n_y):
            angles[i, n_f + j] = yi * 10000 ** (-j / n_y)
        for j in range(n_x):
            angles[i, n_f + n_y + j] = xi * 10000 ** (-j / n_x)
    z = torch.view_as_complex(x.reshape(12, -1, 2).contiguous()) * torch.polar(torch.ones_like(angles), angles)
    torch.testing.assert_close(apply_rope(x, cos, sin), torch.view_as_real(z).reshape(12, head_dim))


def test_builtin_dit_block_equals_its_formulas():
    """adaLN-Zero block of the built-in DiT: spatial attention within each frame, temporal attention along each patch
    position, tanh-GELU MLP, each branch modulated (1 + scale, shift) and gated, RoPE on q and k."""
    from i2v.models.builtin.dit import Block, DiTConfig

    torch.manual_seed(0)
    cfg = DiTConfig(dim=64, emb_dim=16)  # 2 heads of 32
    block = Block(cfg).double()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)  # the zero-initialised gates would hide everything
    t, gh, gw, d = 3, 2, 4, 64
    n, heads, e = gh * gw, 2, 32
    x = torch.randn(t, n, d, dtype=torch.float64)  # one clip, (b t) n d
    c = torch.randn(t, cfg.emb_dim, dtype=torch.float64)
    cos, sin = rope_3d(t, gh, gw, e)
    with torch.no_grad():
        got = block(x, c, (cos, sin), t)

    def layer_norm(z):
        return (z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + 1e-6)

    def rotate(z, cs, sn):  # pairs (z_2j, z_2j+1) by angle a: (z1 cos - z2 sin, z1 sin + z2 cos)
        z1, z2 = z[..., 0::2], z[..., 1::2]
        out = torch.empty_like(z)
        out[..., 0::2], out[..., 1::2] = z1 * cs - z2 * sn, z1 * sn + z2 * cs
        return out

    def self_attention(layer, z, cs, sn):  # z (batch, seq, d)
        qkv = z @ layer.qkv.weight.T + layer.qkv.bias
        q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(*z.shape[:2], heads, e).transpose(1, 2) for i in range(3))
        q, k = rotate(q, cs, sn), rotate(k, cs, sn)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(e), -1) @ v
        return a.transpose(1, 2).reshape(*z.shape[:2], d) @ layer.proj.weight.T + layer.proj.bias

    m = torch.nn.functional.silu(c) @ block.ada.weight.T + block.ada.bias  # (t, 9 d)
    s1, sc1, g1, s2, sc2, g2, s3, sc3, g3 = (m[:, None, i * d:(i + 1) * d] for i in range(9))
    h = layer_norm(x) * (1 + sc1) + s1
    x1 = x + g1 * self_attention(block.spatial, h, cos[:n], sin[:n])  # positions within one frame
    h = (layer_norm(x1) * (1 + sc2) + s2).transpose(0, 1)  # (n, t, d): each patch position along time
    cos_t, sin_t = cos.reshape(t, n, -1)[:, 0], sin.reshape(t, n, -1)[:, 0]
    x2 = x1 + g2 * self_attention(block.temporal, h, cos_t, sin_t).transpose(0, 1)
    h = layer_norm(x2) * (1 + sc3) + s3
    u = h @ block.mlp[0].weight.T + block.mlp[0].bias
    u = 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3)))  # GELU, tanh approximation
    want = x2 + g3 * (u @ block.mlp[2].weight.T + block.mlp[2].bias)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
