"""i2v: an image-to-video engine written from primitives in PyTorch.

Public API (small on purpose):
- :func:`i2v.load`: any supported checkpoint file or folder -> a pipeline (built-in, SVD, Wan) or a module
  (VAE, CLIP, T5, RAFT, Depth Anything, RIFE), through the registry (:mod:`i2v.registry`).
- :mod:`i2v.diffusion`: schedules, preconditioning (``Denoiser``), samplers, guidance.
- :mod:`i2v.video`: ``save`` / ``load`` videos, GIFs and frame folders.
- :mod:`i2v.checkpoints`: the loading toolkit (lazy, strict, safe).

Importing ``i2v`` does not import torch (the command line starts fast); the submodules above are imported on
first use.
"""

__version__ = "0.1.0"

from .errors import I2VError  # noqa: E402,F401

_SUBMODULES = ("diffusion", "video", "checkpoints", "registry")


def load(path, *, dtype=None, device="cpu", **options):
    """Load a checkpoint file or folder through its model family (see :func:`i2v.registry.load`)."""
    from .registry import load as registry_load

    return registry_load(path, dtype=dtype, device=device, **options)


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
