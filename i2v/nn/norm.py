"""Normalisation layers.

``GroupNorm32``: GroupNorm (Wu & He 2018) with 32 groups that computes in float32 when its input is fp16/bf16
(as the original LDM/sgm ``GroupNorm32`` does; the variance of large activations overflows fp16) and in the
input's dtype otherwise (float32, float64). The eps differs per model and per block: in SVD's U-Net 1e-5 in
the ResNet blocks and 1e-6 in the transformers' input norm (see DESIGN.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    def __init__(self, num_channels: int, eps: float = 1e-5, num_groups: int = 32):
        super().__init__(num_groups, num_channels, eps=eps, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            w, b = self.weight.float(), self.bias.float()
            return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
