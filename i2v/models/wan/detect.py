"""Recognising Wan files (no torch): the DiT in the original and diffusers layouts, the 2.1 / 2.2 VAEs, saved
latents, and the Wan-AI / diffusers folders. Variants follow the original ``model_type``: i2v (in_dim 36, CLIP
image k/v), flf2v (i2v + ``img_emb.emb_pos``), t2v (in_dim 16), ti2v (Wan2.2, in_dim 48)."""

from __future__ import annotations

import json
from pathlib import Path

from ..family import Match, count_indexed, has

# dim -> the released size, for the description only
SIZES = {5120: "14B", 1536: "1.3B", 3072: "5B"}


def _dit(keys, shapes) -> Match | None:
    if not has(keys, "patch_embedding.weight", "text_embedding.0.weight", "time_projection.1.weight", "head.head.weight"):
        return None
    dim, in_dim = shapes["patch_embedding.weight"][:2]
    layers = count_indexed(keys, "blocks.")
    if "img_emb.emb_pos" in keys:
        variant = "flf2v"
    elif has(keys, "img_emb.proj."):
        variant = "i2v"
    elif in_dim == 36:  # image latent concatenated, no CLIP branch: Wan2.2 I2V-A14B's experts
        variant = "i2v-no-clip"
    else:
        variant = {16: "t2v", 48: "ti2v"}.get(in_dim, f"t2v-like (in_dim {in_dim})")
    size = SIZES.get(dim, f"dim {dim}")
    return Match("wan", variant, f"Wan DiT ({variant}, {size}; original WanModel keys)",
                 {"dim": dim, "in_dim": in_dim, "layers": layers, "ffn_dim": shapes["blocks.0.ffn.0.weight"][0]
                  if "blocks.0.ffn.0.weight" in shapes else None})


def _diffusers_dit(keys, shapes) -> Match | None:
    if not has(keys, "scale_shift_table", "condition_embedder.time_embedder.linear_1.", "proj_out.weight", "blocks.0.attn1."):
        return None
    dim, in_dim = shapes["patch_embedding.weight"][:2]
    variant = "diffusers-i2v" if has(keys, "condition_embedder.image_embedder.") else "diffusers-t2v"
    return Match("wan", variant, f"Wan DiT in diffusers layout (WanTransformer3DModel, {SIZES.get(dim, f'dim {dim}')})",
                 {"dim": dim, "in_dim": in_dim, "layers": count_indexed(keys, "blocks.")})


def _vae(keys, shapes) -> Match | None:
    if not has(keys, "encoder.conv1.weight", "decoder.head.", "conv1.weight", "conv2.weight"):
        return None
    z = shapes["conv2.weight"][0]
    version = {16: "2.1", 48: "2.2"}.get(z)
    if version is None:
        return Match("wan", "vae", f"a Wan-style causal video VAE with {z} latent channels (neither 2.1's 16 nor 2.2's 48)",
                     {"z_dim": z})
    return Match("wan", f"vae-{version}", f"Wan{version} causal 3D VAE (Wan{version}_VAE.pth)",
                 {"z_dim": z, "dim": shapes["encoder.conv1.weight"][0]})


def _diffusers_vae(keys, shapes) -> Match | None:
    if not has(keys, "encoder.conv_in.weight", "decoder.norm_out.gamma", "quant_conv.weight", "post_quant_conv.weight"):
        return None
    return Match("wan", "diffusers-vae", "Wan VAE in diffusers layout (AutoencoderKLWan)",
                 {"z_dim": shapes["post_quant_conv.weight"][0]})


def detect(keys, shapes, metadata) -> Match | None:
    if metadata.get("format") == "i2v-wan-latents":
        return Match("wan", "latents", "Wan latents saved by `i2v animate --save-latents` (decode with `i2v decode`)",
                     {k: metadata[k] for k in ("checkpoint", "frames", "seed") if k in metadata})
    for test in (_dit, _diffusers_dit, _vae, _diffusers_vae):
        m = test(keys, shapes)
        if m is not None:
            return m
    return None


def detect_folder(path: Path) -> Match | None:
    """A Wan-AI release folder (config.json with a model_type beside Wan2.x_VAE.pth) or a diffusers one
    (model_index.json naming a Wan pipeline)."""
    index = path / "model_index.json"
    if index.is_file():
        try:
            cls = json.loads(index.read_text()).get("_class_name", "")
        except ValueError:
            return None
        if cls.startswith("Wan"):
            return Match("wan", "diffusers-folder", f"Wan diffusers folder ({cls})", {"pipeline": cls})
        return None
    config = path / "config.json"
    vaes = [n for n in ("Wan2.1_VAE.pth", "Wan2.2_VAE.pth") if (path / n).is_file()]
    if config.is_file() and vaes:
        try:
            cfg = json.loads(config.read_text())
        except ValueError:
            return None
        kind = cfg.get("model_type", "?")
        return Match("wan", f"folder-{kind}", f"Wan-AI release folder ({kind}, {vaes[0]})",
                     {"model_type": kind, "dim": cfg.get("dim"), "layers": cfg.get("num_layers")})
    return None


def load(path, match: Match, dtype=None, device=None, **options):
    """``i2v.load`` for Wan files: a pipeline (:class:`i2v.pipelines.wan.WanPipeline`) for a DiT file or a Wan-AI /
    diffusers folder (``vae=``, ``text_encoder=``, ``clip=``, ``tokenizer=``, ``offload=`` ... as its
    ``from_pretrained``), the VAE module for a VAE file."""
    if match.variant == "latents":
        from ...errors import CheckpointError

        raise CheckpointError(f"{path}: saved Wan latents, not a model: render them with `i2v decode {path} --vae "
                              "Wan2.1_VAE.pth -o out.mp4` (i2v.latents.load_latents reads them)")
    if match.variant.startswith("vae") or match.variant == "diffusers-vae":
        from .vae import load_vae

        if options:
            from ...errors import ConfigError

            raise ConfigError(f"{path} is a Wan VAE: i2v.load takes only dtype= and device= for it, not "
                              f"{', '.join(sorted(options))}")
        return load_vae(path, dtype=dtype, device=device or "cpu")
    from ...pipelines.wan import WanPipeline

    return WanPipeline.from_pretrained(path, dtype=dtype, device=device, **options)
