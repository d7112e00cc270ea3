"""Loading Stable Video Diffusion: the original single file and the diffusers folder, strict and lazy.

Single file (``svd.safetensors``, ``svd_xt.safetensors``, ``svd_xt_1_1.safetensors``; 2446 tensors). Every key
falls under exactly one rule of :data:`SINGLE_FILE_PARTS` (loaded into a module whose attribute names are the
key minus the prefix) or :data:`SINGLE_FILE_SKIPS` (never read); any other key is an error::

    model.diffusion_model.*                              -> unet          (SVDUNet)
    first_stage_model.*                                  -> vae           (encoder + temporal decoder)
    conditioner.embedders.0.open_clip.model.visual.*     -> clip          (OpenCLIP ViT-H/14 image tower)
    conditioner.embedders.3.encoder.{encoder,quant_conv} -> cond_encoder  (the VAE encoder used for 'concat')
    conditioner.embedders.0.open_clip.model.<not visual> -> skipped: text tower (token_embedding, transformer,
                                                            ln_final, text_projection, positional_embedding,
                                                            logit_scale); sgm builds the whole OpenCLIP model but
                                                            SVD only calls ``model.visual``
    conditioner.embedders.3.encoder.{decoder,post_quant_conv} -> skipped: the conditioning autoencoder only
                                                            encodes (AutoencoderKLModeOnly.encode); its image
                                                            decoder is never run

Two VAE encoders: the concat conditioning uses ``conditioner.embedders.3.encoder`` (with its ``quant_conv``) --
that is what sgm's ``VideoPredictionEmbedderWithEncoder`` runs and what diffusers converts into ``vae/``.
``first_stage_model.encoder`` (no quant_conv) is the first stage's own encoder; it is loaded for
``SVDPipeline.encode`` (image -> latents x 0.18215) and is not used by sampling.

Diffusers folder: ``unet/`` (UNetSpatioTemporalConditionModel), ``vae/`` (AutoencoderKLTemporalDecoder) and
``image_encoder/`` (transformers CLIPVisionModelWithProjection), each with config.json and safetensors; renamed
to the original names by this family's tables, :data:`UNET_DIFFUSERS_RENAMES` and :data:`VAE_DIFFUSERS_RENAMES`
(the CLIP tower's table lives with the shared encoder, :data:`i2v.models.encoders.clip_vision.TRANSFORMERS_RENAMES`).
The diffusers VAE encoder is the conditioning encoder, so ``vae`` and ``cond_encoder`` are the same module there.

Tensors are read lazily (:func:`i2v.checkpoints.open_state_dict`): only those of the requested parts, one at a
time, converted to the requested dtype/device and assigned to modules built on the meta device
(:func:`i2v.checkpoints.load_into`; no second copy in RAM).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from ...checkpoints import load_model, open_state_dict
from ...errors import CheckpointError, ConfigError
from ..encoders.clip_vision import ClipVision, ClipVisionConfig, transformers_to_open_clip, _transformers_config
from .vae import SVDVAE, SVDVAEConfig

PARTS = ("unet", "vae", "clip", "cond_encoder")

# part -> (prefix, keep(rest) -> bool). The prefix is stripped; the rest is the module's own key.
SINGLE_FILE_PARTS = {
    "unet": ("model.diffusion_model.", lambda r: True),
    "vae": ("first_stage_model.", lambda r: True),
    "clip": ("conditioner.embedders.0.open_clip.model.visual.", lambda r: True),
    "cond_encoder": ("conditioner.embedders.3.encoder.", lambda r: r.startswith(("encoder.", "quant_conv."))),
}
# reason -> predicate on the full key
SINGLE_FILE_SKIPS = {
    "OpenCLIP text tower (SVD embeds images only)":
        lambda k: k.startswith("conditioner.embedders.0.open_clip.model.")
        and not k.startswith("conditioner.embedders.0.open_clip.model.visual."),
    "decoder of the conditioning autoencoder (it only encodes)":
        lambda k: k.startswith(("conditioner.embedders.3.encoder.decoder.", "conditioner.embedders.3.encoder.post_quant_conv.")),
}


def split_single_file(keys, source: str) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """Assign every key of a single-file checkpoint: ({part: {own_key: file_key}}, {skip reason: [file keys]}).
    Raises CheckpointError naming the file when keys are unknown or a part is missing (another model)."""
    parts = {p: {} for p in SINGLE_FILE_PARTS}
    skipped = {r: [] for r in SINGLE_FILE_SKIPS}
    unknown = []
    for k in keys:
        for part, (prefix, keep) in SINGLE_FILE_PARTS.items():
            if k.startswith(prefix) and keep(k[len(prefix):]):
                parts[part][k[len(prefix):]] = k
                break
        else:
            reason = next((r for r, pred in SINGLE_FILE_SKIPS.items() if pred(k)), None)
            (skipped[reason] if reason else unknown).append(k)
    missing = [p for p in parts if not parts[p]]
    if missing or unknown or "decoder.conv_out.time_mix_conv.weight" not in parts["vae"]:
        found = Counter(".".join(k.split(".")[:2]) for k in keys)
        what = ", ".join(f"{n} x {p}.*" for p, n in found.most_common(6))
        hint = ""
        if "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in keys:
            hint = " It looks like a Stable Diffusion 1.x image checkpoint."
        elif any(k.startswith("conditioner.embedders.0.transformer.") for k in keys):
            hint = " It looks like an SDXL image checkpoint."
        parts_txt = ", ".join(f"{SINGLE_FILE_PARTS[p][0]}*" for p in missing) or "the temporal VAE decoder"
        raise CheckpointError(
            f"{source}: not a Stable Video Diffusion checkpoint: expected tensors under model.diffusion_model., "
            f"first_stage_model. (with a temporal decoder), conditioner.embedders.0.open_clip.model.visual. and "
            f"conditioner.embedders.3.encoder.; missing {parts_txt}"
            f"{f'; {len(unknown)} unknown tensors such as {unknown[0]}' if unknown else ''}. Found: {what}.{hint}")
    return parts, skipped


def _shapes(sd) -> dict:
    return sd.shapes if hasattr(sd, "shapes") else {k: tuple(v.shape) for k, v in sd.items()}


def build_vae(sd, source: str, dtype=None, device=None) -> SVDVAE:
    """An SVDVAE with the config of ``sd``'s shapes (own key names), built on meta and filled strictly."""
    cfg = SVDVAEConfig.from_state_dict(_shapes(sd), where=source)
    return load_model(SVDVAE, cfg, sd, source=source, dtype=dtype, device=device).requires_grad_(False)


def build_clip(sd, source: str, head_width: int | None = None, act: str = "gelu", dtype=None, device=None) -> ClipVision:
    cfg = ClipVisionConfig.from_state_dict(_shapes(sd), head_width=head_width, act=act, where=source)
    return load_model(ClipVision, cfg, sd, source=source, dtype=dtype, device=device).requires_grad_(False)


def build_unet(sd, source: str, head_channels: int = 64, dtype=None, device=None):
    from .unet import SVDUNet  # SVD-A's module: attribute names = keys under model.diffusion_model.

    return SVDUNet.from_state_dict(sd, prefix="", num_head_channels=head_channels, source=source, dtype=dtype,
                                   device=device)


def _part(sd, part: str):
    """The view of ``sd`` holding one part's tensors under their own names (:data:`SINGLE_FILE_PARTS`)."""
    prefix, keep = SINGLE_FILE_PARTS[part]
    return sd.strip(prefix).select(keep)


def load_single_file(path, parts=PARTS, dtype=torch.float32, device="cpu", unet_head_channels: int = 64,
                     clip_head_width: int | None = None) -> dict[str, nn.Module]:
    """Modules for the requested ``parts`` of an original single-file SVD checkpoint (see module docstring)."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".sft"):
        raise CheckpointError(f"{path}: expected a .safetensors file (the released SVD files are safetensors) "
                              f"or a diffusers folder with unet/, vae/, image_encoder/")
    sd = open_state_dict(path)  # reads the header; truncated files fail here with a clear message
    split, _skipped = split_single_file(list(sd), str(path))
    out = {}
    for part in parts:
        if part == "vae_decoder":  # the temporal decoder alone (``i2v decode``)
            decoder = _part(sd, "vae").select(lambda k: k.startswith(("decoder.", "post_quant_conv.")))
            out[part] = build_vae(decoder, f"{path} [first_stage_model.decoder.*]", dtype, device)
            continue
        if part not in split:
            raise ValueError(f"unknown part {part!r}; valid: {', '.join(PARTS)}, vae_decoder")
        sub = _part(sd, part)
        src = f"{path} [{SINGLE_FILE_PARTS[part][0]}*]"
        if part == "unet":
            out[part] = build_unet(sub, str(path), unet_head_channels, dtype, device)
        elif part == "clip":
            out[part] = build_clip(sub, src, clip_head_width, dtype=dtype, device=device)
        else:
            out[part] = build_vae(sub, src, dtype, device)
    return out


# ------------------------------------------------------------------------------------------ diffusers folders

# diffusers AutoencoderKLTemporalDecoder -> ours (regex, replacement), each applied in turn to the key.
# ``{up}`` in a replacement is the up level counted from the full resolution (diffusers counts from the deepest).
VAE_DIFFUSERS_RENAMES = [
    (r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.conv_shortcut\.", r"encoder.down.\1.block.\2.nin_shortcut."),
    (r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2."),
    (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
    (r"(en|de)coder\.mid_block\.attentions\.0\.group_norm\.", r"\1coder.mid.attn_1.norm."),
    (r"(en|de)coder\.mid_block\.attentions\.0\.to_([qkv])\.", r"\1coder.mid.attn_1.\2."),
    (r"(en|de)coder\.mid_block\.attentions\.0\.to_out\.0\.", r"\1coder.mid.attn_1.proj_out."),
    (r"encoder\.mid_block\.resnets\.0\.", r"encoder.mid.block_1."),
    (r"encoder\.mid_block\.resnets\.1\.", r"encoder.mid.block_2."),
    (r"(en|de)coder\.conv_norm_out\.", r"\1coder.norm_out."),
    (r"decoder\.time_conv_out\.", r"decoder.conv_out.time_mix_conv."),
    (r"decoder\.mid_block\.resnets\.0\.", r"decoder.mid.block_1."),
    (r"decoder\.mid_block\.resnets\.1\.", r"decoder.mid.block_2."),
    (r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.", r"decoder.up.{up}.block.\2."),
    (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", r"decoder.up.{up}.upsample."),
    # inside a decoder SpatioTemporalResBlock (applied after the block prefix was renamed)
    (r"(\.block\.\d+\.|\.block_\d\.)spatial_res_block\.conv_shortcut\.", r"\1nin_shortcut."),
    (r"(\.block\.\d+\.|\.block_\d\.)spatial_res_block\.", r"\1"),
    (r"(\.block\.\d+\.|\.block_\d\.)temporal_res_block\.norm1\.", r"\1time_stack.in_layers.0."),
    (r"(\.block\.\d+\.|\.block_\d\.)temporal_res_block\.conv1\.", r"\1time_stack.in_layers.2."),
    (r"(\.block\.\d+\.|\.block_\d\.)temporal_res_block\.norm2\.", r"\1time_stack.out_layers.0."),
    (r"(\.block\.\d+\.|\.block_\d\.)temporal_res_block\.conv2\.", r"\1time_stack.out_layers.3."),
    (r"(\.block\.\d+\.|\.block_\d\.)time_mixer\.mix_factor", r"\1mix_factor"),
]


def vae_from_diffusers(sd: dict, source: str) -> dict:
    """Rename an AutoencoderKLTemporalDecoder state dict to :class:`SVDVAE` names (Linear q/k/v/out of the
    mid attention become 1x1 conv weights)."""
    n_up = 1 + max((int(m.group(1)) for k in sd for m in [re.match(r"decoder\.up_blocks\.(\d+)\.", k)] if m), default=-1)
    out = {}
    for k, v in sd.items():
        new = k
        for pat, rep in VAE_DIFFUSERS_RENAMES:  # every rule in turn, on the already renamed key
            if "{up}" in rep:
                new = re.sub(pat, lambda m, rep=rep: m.expand(rep.replace("{up}", str(n_up - 1 - int(m.group(1))))), new)
            else:
                new = re.sub(pat, rep, new)
        if re.search(r"mid\.attn_1\.(q|k|v|proj_out)\.weight$", new) and v.ndim == 2:
            v = v[:, :, None, None]  # Linear (c, c) -> 1x1 conv (c, c, 1, 1)
        out[new] = v
    return out


def _folder_weights(folder: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    found = sorted(p.name for p in folder.glob("*.safetensors")) if folder.is_dir() else []
    if len(found) == 1:
        return folder / found[0]
    raise CheckpointError(f"{folder}: expected weights named {' or '.join(names)}"
                          f"{f', found {found}' if found else ' (folder missing or empty)'}")


def _read_config(folder: Path) -> dict:
    p = folder / "config.json"
    if not p.is_file():
        raise CheckpointError(f"{folder}: expected a diffusers/transformers folder with config.json, none found")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: not valid JSON ({e})") from None


def load_diffusers_vae(folder, dtype=torch.float32, device="cpu") -> SVDVAE:
    folder = Path(folder)
    cfg = _read_config(folder)
    if cfg.get("_class_name", "AutoencoderKLTemporalDecoder") != "AutoencoderKLTemporalDecoder":
        raise CheckpointError(f"{folder}/config.json: expected _class_name AutoencoderKLTemporalDecoder (SVD's VAE), "
                              f"found {cfg.get('_class_name')}")
    path = _folder_weights(folder, ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"))
    return build_vae(vae_from_diffusers(open_state_dict(path), str(path)), str(path), dtype, device)


def load_diffusers_clip(folder, dtype=torch.float32, device="cpu") -> ClipVision:
    """A transformers CLIPVisionModelWithProjection folder (SVD's ``image_encoder/``), through the shared tower."""
    folder = Path(folder)
    head_width, act = _transformers_config(folder, None)
    path = _folder_weights(folder, ("model.safetensors", "model.fp16.safetensors"))
    return build_clip(transformers_to_open_clip(open_state_dict(path), str(path)), str(path),
                      head_width=head_width, act=act, dtype=dtype, device=device)


def load_diffusers_folder(folder, parts=PARTS, dtype=torch.float32, device="cpu") -> dict[str, nn.Module]:
    """Modules from a diffusers StableVideoDiffusionPipeline folder (unet/, vae/, image_encoder/)."""
    folder = Path(folder)
    for sub in ("unet", "vae", "image_encoder"):
        if not (folder / sub).is_dir():
            raise CheckpointError(f"{folder}: expected a diffusers SVD folder with unet/, vae/ and image_encoder/; "
                                  f"{sub}/ is missing")
    out = {}
    if "unet" in parts:
        out["unet"] = load_diffusers_unet(folder / "unet", dtype=dtype, device=device)
    if {"vae", "cond_encoder", "vae_decoder"} & set(parts):
        vae = load_diffusers_vae(folder / "vae", dtype, device)
        out.update({p: vae for p in ("vae", "cond_encoder", "vae_decoder") if p in parts})
    if "clip" in parts:
        out["clip"] = load_diffusers_clip(folder / "image_encoder", dtype, device)
    return out


def load_svd_parts(path, parts=PARTS, dtype=torch.float32, device="cpu", unet_head_channels: int = 64,
                   clip_head_width: int | None = None) -> dict[str, nn.Module]:
    """A single file or a diffusers folder -> {part: module} for the requested parts."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or folder")
    if path.is_dir():
        return load_diffusers_folder(path, parts, dtype, device)
    return load_single_file(path, parts, dtype, device, unet_head_channels, clip_head_width)


# --------------------------------------------------------------------------------------------------------------
# diffusers format: the one rename table between diffusers' UNetSpatioTemporalConditionModel and the original

# Names inside a block, diffusers -> original (sgm). Applied to the part of a key after its block prefix.
UNET_DIFFUSERS_RENAMES = {
    # top level
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    # inside a resnet (spatial ResBlock + temporal ResBlock + mixer)
    "spatial_res_block.norm1": "in_layers.0",
    "spatial_res_block.conv1": "in_layers.2",
    "spatial_res_block.time_emb_proj": "emb_layers.1",
    "spatial_res_block.norm2": "out_layers.0",
    "spatial_res_block.conv2": "out_layers.3",
    "spatial_res_block.conv_shortcut": "skip_connection",
    "temporal_res_block.norm1": "time_stack.in_layers.0",
    "temporal_res_block.conv1": "time_stack.in_layers.2",
    "temporal_res_block.time_emb_proj": "time_stack.emb_layers.1",
    "temporal_res_block.norm2": "time_stack.out_layers.0",
    "temporal_res_block.conv2": "time_stack.out_layers.3",
    # inside a transformer (everything else keeps its name)
    "temporal_transformer_blocks": "time_stack",
    "time_pos_embed.linear_1": "time_pos_embed.0",
    "time_pos_embed.linear_2": "time_pos_embed.2",
    # down/up sampler convolutions
    "downsamplers.0.conv": "op",
    "upsamplers.0.conv": "conv",
}


def _rename(rest: str) -> str:
    for old, new in UNET_DIFFUSERS_RENAMES.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def diffusers_unet_names(keys, source: str = "the diffusers U-Net") -> dict[str, str]:
    """{diffusers key: original key} for a ``UNetSpatioTemporalConditionModel`` (no ``model.diffusion_model.``
    prefix). Block numbering follows the original: input block 0 is conv_in; each down level holds its
    resnets(+attentions) and then its downsampler; each up level its resnets(+attentions) with the upsampler
    appended to the level's last block."""
    sd = list(keys)

    def count(pat):
        return len({m.group(1) for k in sd if (m := re.match(pat, k))})

    n_down = count(r"down_blocks\.(\d+)\.")
    if n_down == 0 or "conv_in.weight" not in sd:
        raise CheckpointError(f"{source}: expected diffusers U-Net keys (conv_in.*, down_blocks.*), found e.g. "
                              f"{', '.join(list(sd)[:3])}")
    blocks = {}  # diffusers block prefix -> original block prefix
    i = 1
    for lv in range(n_down):
        for j in range(count(rf"down_blocks\.{lv}\.resnets\.(\d+)\.")):
            blocks[f"down_blocks.{lv}.resnets.{j}"] = f"input_blocks.{i}.0"
            blocks[f"down_blocks.{lv}.attentions.{j}"] = f"input_blocks.{i}.1"
            i += 1
        if f"down_blocks.{lv}.downsamplers.0.conv.weight" in sd:
            blocks[f"down_blocks.{lv}.downsamplers.0.conv"] = f"input_blocks.{i}.0.op"
            i += 1
    blocks["mid_block.resnets.0"] = "middle_block.0"
    blocks["mid_block.attentions.0"] = "middle_block.1"
    blocks["mid_block.resnets.1"] = "middle_block.2"
    i = 0
    for lv in range(count(r"up_blocks\.(\d+)\.")):
        n_res = count(rf"up_blocks\.{lv}\.resnets\.(\d+)\.")
        has_attn = any(k.startswith(f"up_blocks.{lv}.attentions.") for k in sd)
        for j in range(n_res):
            blocks[f"up_blocks.{lv}.resnets.{j}"] = f"output_blocks.{i}.0"
            blocks[f"up_blocks.{lv}.attentions.{j}"] = f"output_blocks.{i}.1"
            i += 1
        blocks[f"up_blocks.{lv}.upsamplers.0.conv"] = f"output_blocks.{i - 1}.{2 if has_attn else 1}.conv"

    out = {}
    for k in sd:
        m = re.match(r"((?:down_blocks|up_blocks)\.\d+\.(?:resnets|attentions)\.\d+|mid_block\.(?:resnets|attentions)\.\d+"
                     r"|(?:down_blocks|up_blocks)\.\d+\.(?:down|up)samplers\.0\.conv)\.(.*)", k)
        if m is None:
            new = _rename(k)
        elif m.group(1).endswith("samplers.0.conv"):
            new = f"{blocks[m.group(1)]}.{m.group(2)}"
        else:
            new = f"{blocks[m.group(1)]}.{_rename(m.group(2))}"
        out[k] = new
    return out


def diffusers_unet_to_sgm(sd: dict, source: str = "the diffusers U-Net") -> dict:
    """A diffusers U-Net state dict under the original key names (:func:`diffusers_unet_names`)."""
    return {new: sd[old] for old, new in diffusers_unet_names(list(sd), source).items()}


def diffusers_head_channels(cfg: dict, source: str = "config.json") -> int:
    """The head width from a diffusers config: block_out_channels[i] / num_attention_heads[i], equal on every level."""
    chans = cfg.get("block_out_channels")
    heads = cfg.get("num_attention_heads")
    if chans is None or heads is None:
        raise CheckpointError(f"{source}: expected block_out_channels and num_attention_heads in the U-Net config")
    heads = [heads] * len(chans) if isinstance(heads, int) else list(heads)
    widths = {c // h for c, h in zip(chans, heads)}
    if len(widths) != 1 or any(c % h for c, h in zip(chans, heads)):
        raise ConfigError(f"{source}: head widths block_out_channels/num_attention_heads = {chans}/{heads} differ per "
                          f"level; the original SVD U-Net uses one head width (num_head_channels) everywhere")
    return widths.pop()



def load_diffusers_unet(unet_dir, *, dtype=None, device=None):
    """A diffusers-format ``unet/`` folder (config.json + diffusion_pytorch_model[.fp16].safetensors) of
    ``UNetSpatioTemporalConditionModel``, renamed by :data:`UNET_DIFFUSERS_RENAMES` and loaded strictly."""
    from .unet import SVDUNet

    unet_dir = Path(unet_dir)
    cfg = _read_config(unet_dir)
    path = _folder_weights(unet_dir, ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                                      "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"))
    sd = open_state_dict(path)
    names = diffusers_unet_names(list(sd), source=str(path))
    return SVDUNet.from_state_dict(sd.rename(names.__getitem__), prefix="",
                                   num_head_channels=diffusers_head_channels(cfg, str(unet_dir / "config.json")),
                                   dtype=dtype, device=device, source=str(path))
