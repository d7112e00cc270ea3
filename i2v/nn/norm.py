"""Normalisation layers.

``GroupNorm32``: GroupNorm (Wu & He 2018) with 32 groups::

    y = (x - mean_g) / sqrt(var_g + eps) * gamma_c + beta_c      (mean, var over each group of channels x pixels)

Inputs in fp16/bf16 are normalised in float32 (as the original LDM/sgm ``GroupNorm32`` does: the variance of
large activations overflows fp16). float32 is normalised with the subtraction first, as written above:
PyTorch's fused CPU kernel computes ``x * s + (beta - mean * s)``, which cancels badly when a group's mean is
large against its spread (tiny feature maps: a group of 2 values at SVD's 1x1 bottleneck in the small test
model) and shifted the float32 sampling result ~5x further from the float64 reference. So the group mean is
subtracted first (one cheap pass) and the fused kernel normalises the centred values. float64 goes straight
to the fused kernel. The eps differs per model and block: in SVD's U-Net 1e-5 in the ResNet blocks, 1e-6 in the
transformers' input norm (see DESIGN.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    def __init__(self, num_channels: int, eps: float = 1e-5, num_groups: int = 32):
        super().__init__(num_groups, num_channels, eps=eps, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float64:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        xg = x.float().reshape(x.shape[0], self.num_groups, -1)  # (n, groups, c/groups * spatial)
        centred = (xg - xg.mean(dim=-1, keepdim=True)).view(x.shape)  # mean_g is now ~0: nothing left to cancel
        w, b = self.weight.float(), self.bias.float()
        return F.group_norm(centred, self.num_groups, w, b, self.eps).to(x.dtype)
