"""A small spatio-temporal Diffusion Transformer (DiT) for image-to-video: the built-in model's second backbone.

After DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers", facebookresearch/DiT
`models.py`: patchify, adaLN-Zero blocks, zero-initialised final layer) extended to video the way Latte
(Ma et al. 2024) and Open-Sora factorise it: each block attends over space (tokens of one frame), then over
time (one patch position across frames), then an MLP. ``attention="full"`` instead attends over all
t*h*w tokens at once (CogVideoX-style), which costs (t h w)^2.

Positions enter through 3D rotary embeddings (RoPE, Su et al. 2021) on (t, y, x): the head dimension is
split into three groups of frequency pairs, one per axis. Because RoPE makes q.k depend only on position
*differences*, the same rotation serves spatial attention (t equal, so the t-part cancels), temporal attention
(y, x cancel) and full 3D attention; the model runs at any number of frames.

adaLN-Zero: every residual branch is gated by a zero-initialised vector computed from the conditioning, so
at initialisation each block, temporal attention included, is the identity.

Layouts::

    x (b, 3, t, H, W) + first frame (b, 3, H, W)
      -> cat (b, 6, t, H, W) -> patches 'b c t (h p) (w q) -> b t (h w) (p q c)' -> Linear -> (b, t, n, d)
      -> blocks -> adaLN, cat input patch, Linear (zero init) -> (b, t, n, p q 3) -> (b, 3, t, H, W)
      [warp_head: + WarpHead(first frame; affine from the conditioning, flow from a second zero-init Linear)]
      [warp_mask: + a third Linear's mask; returns Proposal(F, moved first frame, mask) for the Denoiser to blend]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ...errors import ConfigError, InputError
from ...nn.attention import attention
from ...nn.rope import apply_rope, rope_3d
from .heads import NULL_MOTION, ConditionEmbedding, WarpHead, build, require

HEAD_DIM = 32  # target head width; heads = max(1, dim // 32), fixed because head counts leave no trace in shapes


def num_heads(dim: int) -> int:
    return max(1, dim // HEAD_DIM)


@dataclass
class DiTConfig:
    dim: int = 96  # token width
    depth: int = 4  # number of (spatial attn, temporal attn, MLP) blocks
    patch: int = 4  # pixels per token side: a 64x64 frame is 16x16 = 256 tokens
    mlp_ratio: int = 2  # MLP hidden width = mlp_ratio * dim (2, not DiT's 4: CPU budget)
    emb_dim: int = 128  # conditioning vector (noise level + motion + speed + frame index)
    num_motions: int = NULL_MOTION + 1  # motion classes + the null label for guidance
    attention: str = "factorised"  # "factorised" (space then time) or "full" (one 3D attention, no temporal weights)
    warp_head: bool = False  # add backbone.WarpHead: the output also moves the first frame's pixels
    warp_mask: bool = False  # (with warp_head) blend the moved frame into D by a predicted per-pixel mask

    @classmethod
    def from_state_dict(cls, shapes: dict) -> "DiTConfig":
        """Read the config off tensor shapes, key -> shape (and "full" attention off the absence of any temporal
        weight)."""
        what = "DiT"
        w = require(shapes, "patch_embed.weight", what)  # (dim, 6 p^2)
        patch = int(round((w[1] / 6) ** 0.5))
        depth = 0
        while f"blocks.{depth}.mlp.0.weight" in shapes:
            depth += 1
        mlp = require(shapes, "blocks.0.mlp.0.weight", what)  # (ratio dim, dim)
        emb = require(shapes, "embed.motion_embed.weight", what)
        return cls(dim=w[0], depth=depth, patch=patch, mlp_ratio=mlp[0] // w[0],
                   emb_dim=emb[1], num_motions=emb[0],
                   attention="factorised" if any(".temporal." in k for k in shapes) else "full",
                   warp_head="warp.affine.weight" in shapes, warp_mask="mask_out.weight" in shapes)


class SelfAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.heads = num_heads(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rope):
        # x: (n, s, d); rope: (cos, sin) of the angles, each (s, head_dim/2)
        q, k, v = rearrange(self.qkv(x), "n s (three heads e) -> three n heads s e", three=3, heads=self.heads)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return self.proj(rearrange(attention(q, k, v), "n heads s e -> n s (heads e)"))  # softmax(q k^T / sqrt(e)) v


def modulate(x, shift, scale):
    """adaLN: LayerNorm(x) * (1 + scale) + shift (DiT eq. in Sec. 3.2)."""
    return x * (1 + scale) + shift


class Block(nn.Module):
    """adaLN-Zero block: spatial attention, temporal attention, MLP, each gated (gate zero at init)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.dim
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.spatial = SelfAttention(d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.temporal = SelfAttention(d) if cfg.attention == "factorised" else None
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(approximate="tanh"), nn.Linear(cfg.mlp_ratio * d, d))
        self.ada = nn.Linear(cfg.emb_dim, 9 * d)  # (shift, scale, gate) x 3 branches
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        self.full = cfg.attention == "full"

    def forward(self, x, c, rope, t: int):
        # x: (b t) n d, c: (b t) d, rope: (cos, sin) of the rotation angles, each (t n, head_dim/2)
        bt, n, d = x.shape
        cos, sin = rope
        mods = self.ada(F.silu(c))[:, None].chunk(9, dim=-1)  # 9 x (b t) 1 d
        s1, sc1, g1, s2, sc2, g2, s3, sc3, g3 = mods
        h = modulate(self.norm1(x), s1, sc1)
        if self.full:  # one attention over all t*n tokens of a clip
            h = rearrange(h, "(b t) n d -> b (t n) d", t=t)
            h = rearrange(self.spatial(h, rope), "b (t n) d -> (b t) n d", t=t)
            x = x + g1 * h
        else:
            x = x + g1 * self.spatial(h, (cos[:n], sin[:n]))  # within a frame only (y, x) differences matter
            h = rearrange(modulate(self.norm2(x), s2, sc2), "(b t) n d -> (b n) t d", t=t)
            along_t = (cos.reshape(t, n, -1)[:, 0], sin.reshape(t, n, -1)[:, 0])  # (t, e): time at one patch
            h = rearrange(self.temporal(h, along_t), "(b n) t d -> (b t) n d", n=n)
            x = x + g2 * h
        return x + g3 * self.mlp(modulate(self.norm3(x), s3, sc3))


class DiT(nn.Module):
    Config = DiTConfig

    def __init__(self, config: DiTConfig | None = None):
        super().__init__()
        self.config = cfg = config or DiTConfig()
        if cfg.attention not in ("factorised", "full"):
            raise ConfigError(f"DiT attention must be 'factorised' or 'full', got {cfg.attention!r}")
        self.embed = ConditionEmbedding(cfg.emb_dim, cfg.num_motions)
        self.patch_embed = nn.Linear(6 * cfg.patch**2, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(cfg.emb_dim, 2 * cfg.dim)
        # the output layer also sees the raw input patch (noisy + first frame): a long skip, so low-noise
        # denoising does not depend on squeezing every pixel through the token width
        self.out = nn.Linear(cfg.dim + 6 * cfg.patch**2, 3 * cfg.patch**2)
        zero = [self.ada_out, self.out]
        if cfg.warp_head:
            self.warp = WarpHead(cfg.emb_dim, mask=cfg.warp_mask)
            self.flow_out = nn.Linear(cfg.dim + 6 * cfg.patch**2, 2 * cfg.patch**2)  # residual flow per pixel
            zero.append(self.flow_out)
        if cfg.warp_mask:
            if not cfg.warp_head:
                raise ConfigError("dit.warp_mask needs dit.warp_head = true (the mask blends the head's moved frame)")
            self.mask_out = nn.Linear(cfg.dim + 6 * cfg.patch**2, cfg.patch**2)  # mask logit per pixel
        for m in zero:  # DiT: zero-initialised final layer
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        if cfg.warp_mask:
            nn.init.zeros_(self.mask_out.weight)
            # an even blend at the start (m = 0.5), not the U-Net's MASK_INIT: from m = 0.018 the DiT's mask rose
            # only to 0.07 in 1000 fine-tuning steps (its layer-normed features have no constant part to move
            # the logit with), though the gradient asked for more all along
            nn.init.zeros_(self.mask_out.bias)

    @property
    def multiple(self) -> int:
        """Frame sides must be multiples of the patch size (4 for the shipped weights); RoPE positions the tokens,
        so any such height and width works, square or not."""
        return self.config.patch

    def forward(self, x, c_noise, *, first_frame, motion, speed):
        b, _, t, H, W = x.shape
        p = self.config.patch
        if H % p or W % p:
            raise InputError(f"DiT needs height and width divisible by the patch size {p}, got {H}x{W}")
        h, w = H // p, W // p
        c = self.embed(c_noise, motion, speed, t)  # (b t) d
        cond = first_frame[:, :, None].expand(-1, -1, t, -1, -1).to(x.dtype)
        z = rearrange(torch.cat([x, cond], dim=1), "b c t (h p) (w q) -> (b t) (h w) (p q c)", p=p, q=p)
        patches = z
        z = self.patch_embed(z)  # (b t) n d
        # RoPE tables once per call (every block and head shares them): (t n, head_dim/2) each, float32
        rope = rope_3d(t, h, w, self.config.dim // num_heads(self.config.dim), dtype=torch.float32, device=x.device)
        for block in self.blocks:
            z = block(z, c, rope, t)
        shift, scale = self.ada_out(F.silu(c))[:, None].chunk(2, dim=-1)
        z = torch.cat([modulate(self.norm_out(z), shift, scale), patches], dim=-1)
        out = rearrange(self.out(z), "bt (h w) (p q c) -> bt c (h p) (w q)", h=h, p=p, q=p)  # (b t) 3 H W
        if self.config.warp_head:
            def unpatch(y):  # (b t) (h w) (p q c) -> (b t) c H W
                return rearrange(y, "bt (h w) (p q c) -> bt c (h p) (w q)", h=h, p=p, q=p)
            mask_logit = unpatch(self.mask_out(z)) if self.config.warp_mask else None
            return self.warp.output(out, first_frame, c, unpatch(self.flow_out(z)), mask_logit, t)
        return rearrange(out, "(b t) c H W -> b c t H W", t=t)

    @classmethod
    def from_state_dict(cls, sd, source: str | None = None) -> "DiT":
        """Build the model the tensors describe (on the meta device) and load them strictly, in float32."""
        return build(cls, DiTConfig, sd, source)
