"""i2v: an image-to-video engine written from primitives in PyTorch.

Public API (small on purpose):
- :mod:`i2v.diffusion`: schedules, preconditioning (``Denoiser``), samplers, guidance.
- :mod:`i2v.video`: ``save`` / ``load`` videos, GIFs and frame folders.
- :mod:`i2v.checkpoints`: safe checkpoint reading.
"""

__version__ = "0.1.0"

from . import diffusion, video  # noqa: E402,F401
from .errors import I2VError  # noqa: E402,F401
