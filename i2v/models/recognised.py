"""Formats i2v recognises but does not run (no torch), so ``i2v inspect`` can say what a file is and an
``i2v animate --checkpoint`` given one of them can say why it will not work."""

from __future__ import annotations

from .family import Match, has


def _sequential(keys) -> bool:
    return bool(keys) and all(k.split(".")[0].isdigit() for k in keys)


def detect(keys, shapes, metadata) -> Match | None:
    if has(keys, "model.diffusion_model.input_blocks.0.0.", "conditioner.embedders.1.model."):
        return Match("stable-diffusion", "sdxl", "Stable Diffusion XL, original single file (an image model)")
    if has(keys, "model.diffusion_model.input_blocks.0.0.", "cond_stage_model.transformer."):
        return Match("stable-diffusion", "sd1", "Stable Diffusion 1.x, original single file (CLIP text encoder; an image model)")
    if has(keys, "model.diffusion_model.input_blocks.0.0.", "cond_stage_model.model."):
        return Match("stable-diffusion", "sd2", "Stable Diffusion 2.x, original single file (OpenCLIP text encoder; an image model)")
    if _sequential(keys):
        first = shapes.get("0.weight")
        if first is not None and len(first) == 4 and first[1] == 3:
            return Match("taesd", "encoder", "tiny autoencoder encoder (madebyollin/taesd: taesd, taef1/taef2, taesana, ...)")
        if "0.weight" not in keys and "1.weight" in keys:
            last = shapes.get(f"{max(int(k.split('.')[0]) for k in keys)}.weight")
            if last is not None and len(last) == 4 and last[0] == 3:
                return Match("taesd", "decoder", "tiny autoencoder decoder (madebyollin/taesd)")
    return None
