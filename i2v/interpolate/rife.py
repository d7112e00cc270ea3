"""RIFE as an interpolator: load a released ``flownet.pkl`` once, then frames at any t between two frames.

The network is :mod:`i2v.models.rife.ifnet` (RIFE 4.25, IFNet_HDv3); this module is the thin glue that turns uint8
frames into (1, 3, H, W) tensors, pads them to the model's multiple, and runs the chosen times.
"""

from __future__ import annotations

import os

import torch

from ..errors import ConfigError
from ..image import to_tensor
from ..models.rife import ifnet as rife_model


class RIFEInterpolator:
    """``RIFEInterpolator(checkpoint, device, scale)(img0, img1, times)`` -> list of (1, 3, h, w) frames.

    ``scale``: resolution factor of the flow estimation (1.0 up to 1080p; 0.5 for 4K, which runs every block
    at half the resolution). ``model`` may be given instead of a checkpoint (e.g. random weights for teaching)."""

    def __init__(self, checkpoint: str | os.PathLike | None = None, device="cpu", scale: float = 1.0,
                 model: rife_model.IFNet | None = None, dtype: torch.dtype = torch.float32):
        if model is None and checkpoint is None:
            raise ConfigError("RIFE needs a checkpoint: pass checkpoint='flownet.pkl' (CLI: --checkpoint flownet.pkl), "
                              "the train_log/flownet.pkl of the Practical-RIFE 4.25 release")
        if scale not in rife_model.SCALES:
            raise ConfigError(f"RIFE scale must be one of {rife_model.SCALES}, got {scale}")
        self.model = model.to(device).eval() if model is not None else rife_model.load(checkpoint, device, dtype)
        self.device, self.scale = torch.device(device), scale
        self.dtype = next(self.model.parameters()).dtype

    def _tensor(self, img) -> torch.Tensor:
        return to_tensor(img, dtype=self.dtype, device=self.device)  # (1, 3, h, w) in [0, 1]

    @torch.no_grad()
    def __call__(self, img0, img1, times=(0.5,)) -> list[torch.Tensor]:
        x0, x1 = self._tensor(img0), self._tensor(img1)
        return [rife_model.interpolate(self.model, x0, x1, float(t), self.scale)["frame"].float().clamp(0, 1).cpu()
                for t in times]
