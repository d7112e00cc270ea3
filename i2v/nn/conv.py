"""Convolutions shared by the video models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalConv(nn.Conv3d):
    """A Conv3d over (t, h, w) whose kernel is (k, 1, 1): it mixes frames only, so it runs as a Conv2d over
    (t, h*w) with the same weights viewed as (c', c, k, 1) -- identical sums, and PyTorch's CPU Conv2d kernels are
    several times faster than its Conv3d ones. Other kernels fall back to Conv3d. (b, c, t, h, w) in and out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size[1:] != (1, 1):
            return super().forward(x)
        y = F.conv2d(x.flatten(3), self.weight.flatten(3), self.bias, padding=(self.padding[0], 0))  # (b, c', t, h*w)
        return y.unflatten(3, x.shape[3:])
