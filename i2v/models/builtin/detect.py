"""Recognising the built-in model's files (no torch) by their safetensors metadata, as ``i2v train`` writes it:
``model.safetensors`` / ``weights/builtin_*.safetensors`` have ``format = i2v.builtin``; training checkpoints
(``checkpoint.safetensors``) hold ``model.*``, ``ema.*`` and ``opt.*`` tensors with ``step`` and ``config``."""

from __future__ import annotations

import json

from ..family import Match, has


def detect(keys, shapes, metadata) -> Match | None:
    if metadata.get("format") == "i2v.builtin":
        backbone = metadata.get("backbone", "?")
        return Match("builtin", backbone, f"i2v's built-in image-to-video model ({backbone} backbone, trained by "
                     "`i2v train`)", {k: metadata[k] for k in ("prediction", "frames", "size", "step", "sigma_min")
                                       if k in metadata})
    if "step" in metadata and "config" in metadata and has(keys, "model.", "ema."):
        try:
            backbone = json.loads(metadata["config"]).get("backbone", "?")
        except ValueError:
            backbone = "?"
        return Match("builtin", "training-checkpoint", f"a training checkpoint of the built-in model ({backbone}; "
                     "continue with `i2v train --resume`)", {"step": metadata["step"]})
    return None


def load(path, match: Match, dtype=None, device="cpu", **options):
    if match.variant == "training-checkpoint":
        from ...errors import CheckpointError

        raise CheckpointError(f"{path}: {match.description}; `i2v train` also writes model.safetensors beside it: "
                              "load that one")
    from ...pipelines.builtin import BuiltinPipeline

    return BuiltinPipeline.load(path=path, device=device)
