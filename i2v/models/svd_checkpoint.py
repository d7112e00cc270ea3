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

Diffusers folder: ``unet/`` (SVD-A's :meth:`SVDUNet.from_diffusers`), ``vae/`` (AutoencoderKLTemporalDecoder) and
``image_encoder/`` (transformers CLIPVisionModelWithProjection), each with config.json and safetensors; renamed
to our names by :data:`VAE_DIFFUSERS_RENAMES` and :data:`CLIP_TRANSFORMERS_RENAMES`. The diffusers VAE encoder
is the conditioning encoder, so ``vae`` and ``cond_encoder`` are the same module there.

Safetensors are read lazily: only the tensors of the requested parts are read, one at a time, converted to the
requested dtype/device and assigned to modules built on the meta device (no second copy in RAM).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import read_safetensors_header
from ..errors import CheckpointError
from .clip_vision import ClipVision, ClipVisionConfig
from .svd_vae import SVDVAE, SVDVAEConfig

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


def load_strict(model: nn.Module, sd: dict, source: str, prefix: str = "") -> nn.Module:
    """Assign ``sd`` to a meta-built ``model`` after checking names and shapes; errors name file and tensor."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unused = [k for k in sd if k not in expected]
    bad = [k for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    if missing:
        shown = ", ".join(f"{prefix}{k} {list(expected[k])}" for k in missing[:4])
        raise CheckpointError(f"{source}: {len(missing)} tensor(s) needed by {type(model).__name__} are missing: "
                              f"{shown}{' ...' if len(missing) > 4 else ''} (file incomplete or of another model)")
    if unused:
        raise CheckpointError(f"{source}: {len(unused)} tensor(s) not used by the {type(model).__name__} inferred from "
                              f"the shapes: {', '.join(prefix + k for k in unused[:4])}")
    if bad:
        k = bad[0]
        raise CheckpointError(f"{source}: tensor {prefix}{k} has shape {list(sd[k].shape)}, expected {list(expected[k])} "
                              f"for the model inferred from the other tensors ({len(bad)} misshaped)")
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def build_vae(sd: dict, source: str) -> SVDVAE:
    cfg = SVDVAEConfig.from_state_dict(sd, where=source)
    with torch.device("meta"):
        model = SVDVAE(cfg)
    return load_strict(model, sd, source)


def build_clip(sd: dict, source: str, head_width: int | None = None, act: str = "gelu") -> ClipVision:
    cfg = ClipVisionConfig.from_state_dict(sd, head_width=head_width, act=act, where=source)
    with torch.device("meta"):
        model = ClipVision(cfg)
    return load_strict(model, sd, source)


def build_unet(sd: dict, source: str, head_channels: int = 64):
    from .svd_unet import SVDUNet  # SVD-A's module: attribute names = keys under model.diffusion_model.

    return SVDUNet.from_state_dict(sd, prefix="", num_head_channels=head_channels, source=source)


class _LazyFile:
    """Read selected tensors of one safetensors file, converting each as it is read."""

    def __init__(self, path: Path, dtype, device):
        from safetensors import safe_open

        self.path, self.dtype, self.device = path, dtype, device
        self.f = safe_open(str(path), framework="pt", device="cpu")

    def read(self, mapping: dict[str, str]) -> dict[str, torch.Tensor]:
        out = {}
        for own, key in mapping.items():
            try:
                t = self.f.get_tensor(key)
            except Exception as e:  # noqa: BLE001 -- safetensors raises its own error types
                raise CheckpointError(f"{self.path}: tensor {key} cannot be read ({e}): file corrupt or truncated") from None
            if t.is_floating_point() and self.dtype is not None:
                t = t.to(self.dtype)
            out[own] = t.to(self.device)
        return out


def load_single_file(path, parts=PARTS, dtype=torch.float32, device="cpu", unet_head_channels: int = 64,
                     clip_head_width: int | None = None) -> dict[str, nn.Module]:
    """Modules for the requested ``parts`` of an original single-file SVD checkpoint (see module docstring)."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".sft"):
        raise CheckpointError(f"{path}: expected a .safetensors file (the released SVD files are safetensors) "
                              f"or a diffusers folder with unet/, vae/, image_encoder/")
    header = read_safetensors_header(path)  # checks completeness: truncated files fail here
    split, _skipped = split_single_file(list(header), str(path))
    f = _LazyFile(path, dtype, device)
    out = {}
    for part in parts:
        if part == "vae_decoder":  # the temporal decoder alone (``i2v decode``)
            sd = f.read({k: v for k, v in split["vae"].items() if k.startswith(("decoder.", "post_quant_conv."))})
            out[part] = build_vae(sd, f"{path} [first_stage_model.decoder.*]")
            continue
        if part not in split:
            raise ValueError(f"unknown part {part!r}; valid: {', '.join(PARTS)}, vae_decoder")
        sd = f.read(split[part])
        src = f"{path} [{SINGLE_FILE_PARTS[part][0]}*]"
        if part == "unet":
            out[part] = build_unet(sd, str(path), unet_head_channels)
        elif part == "clip":
            out[part] = build_clip(sd, src, clip_head_width)
        else:
            out[part] = build_vae(sd, src)
        del sd
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


# transformers CLIPVisionModelWithProjection -> ours; q/k/v projections are packed into in_proj afterwards.
CLIP_TRANSFORMERS_RENAMES = [
    (r"^vision_model\.embeddings\.class_embedding$", "class_embedding"),
    (r"^vision_model\.embeddings\.patch_embedding\.weight$", "conv1.weight"),
    (r"^vision_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
    (r"^vision_model\.pre_layrnorm\.", "ln_pre."),
    (r"^vision_model\.post_layernorm\.", "ln_post."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"transformer.resblocks.\1.attn.out_proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.", r"transformer.resblocks.\1.attn.\2_proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"transformer.resblocks.\1.ln_1."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"transformer.resblocks.\1.ln_2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.", r"transformer.resblocks.\1.mlp.c_fc."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.", r"transformer.resblocks.\1.mlp.c_proj."),
    (r"^visual_projection\.weight$", "proj"),
]


def clip_from_transformers(sd: dict, source: str) -> dict:
    """Rename a CLIPVisionModelWithProjection state dict to :class:`ClipVision` names: pack q/k/v into
    ``in_proj_weight``/``in_proj_bias``, transpose the projection (Linear (out, in) -> matrix (in, out))."""
    out, unknown = {}, []
    for k, v in sd.items():
        if k == "vision_model.embeddings.position_ids":
            continue  # a constant arange buffer older files carry
        for pat, rep in CLIP_TRANSFORMERS_RENAMES:
            if re.match(pat, k):
                out[re.sub(pat, rep, k)] = v
                break
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} tensors are not part of a CLIPVisionModelWithProjection, "
                              f"e.g. {unknown[0]}")
    if "proj" in out:
        out["proj"] = out["proj"].t().contiguous()
    for layer in sorted({m.group(1) for k in out for m in [re.match(r"transformer\.resblocks\.(\d+)\.attn\.q_proj", k)] if m}):
        p = f"transformer.resblocks.{layer}.attn."
        for kind, new in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
            try:
                out[p + new] = torch.cat([out.pop(f"{p}{x}_proj.{kind}") for x in "qkv"])
            except KeyError:
                raise CheckpointError(f"{source}: layer {layer} lacks one of its q/k/v projection {kind}s") from None
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


def _read_all(path: Path, dtype, device) -> dict[str, torch.Tensor]:
    header = read_safetensors_header(path)
    return _LazyFile(path, dtype, device).read({k: k for k in header})


def load_diffusers_vae(folder, dtype=torch.float32, device="cpu") -> SVDVAE:
    folder = Path(folder)
    cfg = _read_config(folder)
    if cfg.get("_class_name", "AutoencoderKLTemporalDecoder") != "AutoencoderKLTemporalDecoder":
        raise CheckpointError(f"{folder}/config.json: expected _class_name AutoencoderKLTemporalDecoder (SVD's VAE), "
                              f"found {cfg.get('_class_name')}")
    path = _folder_weights(folder, ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"))
    return build_vae(vae_from_diffusers(_read_all(path, dtype, device), str(path)), str(path))


def load_diffusers_clip(folder, dtype=torch.float32, device="cpu") -> ClipVision:
    folder = Path(folder)
    cfg = _read_config(folder)
    path = _folder_weights(folder, ("model.safetensors", "model.fp16.safetensors"))
    heads = cfg.get("num_attention_heads")
    width = cfg.get("hidden_size")
    if not heads or not width:
        raise CheckpointError(f"{folder}/config.json: expected hidden_size and num_attention_heads (a CLIP vision config)")
    act = cfg.get("hidden_act", "gelu")
    if act not in ("gelu", "quick_gelu"):
        raise CheckpointError(f"{folder}/config.json: hidden_act {act!r} is not supported (gelu or quick_gelu)")
    eps = cfg.get("layer_norm_eps", 1e-5)
    if abs(eps - 1e-5) > 1e-12:
        raise CheckpointError(f"{folder}/config.json: layer_norm_eps {eps} differs from OpenCLIP's 1e-5")
    return build_clip(clip_from_transformers(_read_all(path, dtype, device), str(path)), str(path),
                      head_width=width // heads, act=act)


def load_diffusers_folder(folder, parts=PARTS, dtype=torch.float32, device="cpu") -> dict[str, nn.Module]:
    """Modules from a diffusers StableVideoDiffusionPipeline folder (unet/, vae/, image_encoder/)."""
    folder = Path(folder)
    for sub in ("unet", "vae", "image_encoder"):
        if not (folder / sub).is_dir():
            raise CheckpointError(f"{folder}: expected a diffusers SVD folder with unet/, vae/ and image_encoder/; "
                                  f"{sub}/ is missing")
    out = {}
    if "unet" in parts:
        from .svd_unet import SVDUNet

        out["unet"] = SVDUNet.from_diffusers(folder / "unet", dtype=dtype, device=device)
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
