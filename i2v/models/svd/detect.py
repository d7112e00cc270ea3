"""Recognising Stable Video Diffusion files (no torch): the original single file (svd.safetensors,
svd_xt*.safetensors), the diffusers folder and its unet/ and vae/ files, and latents saved by i2v."""

from __future__ import annotations

import json
from pathlib import Path

from ..family import Match, has


def detect(keys, shapes, metadata) -> Match | None:
    if metadata.get("format") == "i2v-svd-latents":
        return Match("svd", "latents", "SVD latents saved by `i2v animate --save-latents` (decode with `i2v decode`)",
                     {k: metadata[k] for k in ("checkpoint", "frames", "seed") if k in metadata})
    if has(keys, "model.diffusion_model.input_blocks.1.0.time_stack.", "conditioner.embedders.3.encoder."):
        return Match("svd", "single-file", "Stable Video Diffusion, original single file (svd.safetensors, "
                     "svd_xt*.safetensors): video U-Net, VAE with temporal decoder, OpenCLIP image embedder",
                     {"model_channels": shapes["model.diffusion_model.input_blocks.0.0.weight"][0]})
    if has(keys, "down_blocks.0.resnets.0.spatial_res_block.", "down_blocks.0.resnets.0.temporal_res_block."):
        return Match("svd", "diffusers-unet", "SVD video U-Net in diffusers layout (unet/ of a diffusers folder, "
                     "UNetSpatioTemporalConditionModel)", {})
    if has(keys, "encoder.conv_in.", "decoder.time_conv_out."):
        return Match("svd", "diffusers-vae", "SVD VAE in diffusers layout (vae/ of a diffusers folder, "
                     "AutoencoderKLTemporalDecoder)", {})
    return None


def detect_folder(path: Path) -> Match | None:
    """A diffusers StableVideoDiffusionPipeline folder: unet/, vae/, image_encoder/ (model_index.json optional)."""
    if all((path / sub).is_dir() for sub in ("unet", "vae", "image_encoder")):
        cls = ""
        if (path / "model_index.json").is_file():
            try:
                cls = json.loads((path / "model_index.json").read_text()).get("_class_name", "")
            except ValueError:
                cls = ""
        if cls and cls != "StableVideoDiffusionPipeline":
            return None
        return Match("svd", "diffusers-folder", "Stable Video Diffusion diffusers folder (unet/, vae/, image_encoder/)", {})
    return None


def load(path, match: Match, dtype=None, device="cpu", **options):
    if match.variant not in ("single-file", "diffusers-folder"):
        from ...errors import CheckpointError

        raise CheckpointError(f"{path}: {match.description}; give the whole single file or diffusers folder")
    from ...pipelines.svd import SVDPipeline

    return SVDPipeline.from_pretrained(path, dtype=dtype or "float32", device=device, **options)
