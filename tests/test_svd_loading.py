"""Loading SVD: the full-size key map (meta device), diffusers-format parity, and bad checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import shared_path
from i2v.errors import CheckpointError
from i2v.models.svd.checkpoint import (SINGLE_FILE_PARTS, SINGLE_FILE_SKIPS, build_clip, build_unet, build_vae,
                                       load_diffusers_clip, load_diffusers_vae, split_single_file)
from i2v.pipelines.svd import SVDPipeline


def test_full_size_checkpoint_keys_all_map_with_their_shapes():
    """Build every part of the real svd_xt file on the meta device from its key list: every tensor lands in a
    parameter of the right shape; only the documented skips stay unused."""
    info = json.loads(shared_path("reference", "svd-full-keys.json").read_text())["tensors"]
    assert len(info) == 2446
    parts, skipped = split_single_file(list(info), "svd-full-keys.json")
    used = 0
    for part, mapping in parts.items():
        sd = {own: torch.empty(info[full], device="meta") for own, full in mapping.items()}
        src = f"svd-full-keys.json [{SINGLE_FILE_PARTS[part][0]}*]"
        model = {"unet": lambda: build_unet(sd, src), "clip": lambda: build_clip(sd, src),
                 "vae": lambda: build_vae(sd, src), "cond_encoder": lambda: build_vae(sd, src)}[part]()
        state = model.state_dict()
        assert set(state) == set(mapping), part  # no missing, no extra
        for own, full in mapping.items():
            assert tuple(state[own].shape) == tuple(info[full]), full
        used += len(mapping)
        if part == "unet":
            assert sum(t.numel() for t in state.values()) == pytest.approx(1.5255e9, rel=1e-3)  # 1.525 B
        if part == "clip":
            c = model.config
            assert (c.width, c.layers, c.heads, c.patch_size, c.image_size, c.embed_dim) == (1280, 32, 16, 14, 224, 1024)
        if part == "vae":
            c = model.config
            assert (c.ch, c.ch_mult, c.num_res_blocks, c.z_channels) == (128, (1, 2, 4, 4), 2, 4)
            assert model.decoder is not None and model.quant_conv is None
        if part == "cond_encoder":
            assert model.decoder is None and model.quant_conv is not None
    text, cond_dec = skipped.values()
    assert list(skipped) == list(SINGLE_FILE_SKIPS)
    assert all(".open_clip.model." in k and ".visual." not in k for k in text) and len(text) > 0
    assert all(k.startswith("conditioner.embedders.3.encoder.") for k in cond_dec) and len(cond_dec) > 0
    assert used + len(text) + len(cond_dec) == len(info)


def test_full_size_vae_and_clip_shapes_at_native_resolution():
    """576x1024 through the full-size encoders and the temporal decoder, on the meta device (no memory)."""
    info = json.loads(shared_path("reference", "svd-full-keys.json").read_text())["tensors"]
    parts, _ = split_single_file(list(info), "svd-full-keys.json")

    def sd(part):
        return {own: torch.empty(info[full], device="meta") for own, full in parts[part].items()}

    vae, cond_encoder, clip = build_vae(sd("vae"), "vae"), build_vae(sd("cond_encoder"), "enc"), build_clip(sd("clip"), "clip")
    image = torch.empty(1, 3, 576, 1024, device="meta")
    with torch.no_grad():
        assert cond_encoder.encode(image).shape == (1, 4, 72, 128)
        assert vae.encode(image).shape == (1, 4, 72, 128)
        assert vae.decode(torch.empty(2, 4, 72, 128, device="meta"), timesteps=2).shape == (2, 3, 576, 1024)
        assert clip.embed(image).shape == (1, 1024)  # = the U-Net's context_dim


def _tiny_ckpt():
    return shared_path("reference", "svd-sgm-tiny", "checkpoint.safetensors")


def _tensors(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_another_model_is_refused_with_the_file_named(tmp_path):
    sd15 = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
            "first_stage_model.decoder.conv_in.weight": torch.zeros(512, 4, 3, 3),
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(10, 8)}
    path = tmp_path / "v1-5-pruned.safetensors"
    save_file(sd15, str(path))
    with pytest.raises(CheckpointError, match=r"v1-5-pruned\.safetensors: not a Stable Video Diffusion.*Stable Diffusion 1"):
        SVDPipeline.from_pretrained(path, log=lambda *a: None)


def test_truncated_file_is_refused(tmp_path):
    data = _tiny_ckpt().read_bytes()
    path = tmp_path / "svd_xt.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"svd_xt\.safetensors.*truncated"):
        SVDPipeline.from_pretrained(path, log=lambda *a: None)


def test_missing_and_misshaped_tensors_are_named(tmp_path):
    sd = _tensors(_tiny_ckpt())
    key = "first_stage_model.decoder.mid.block_1.mix_factor"
    missing = {k: v for k, v in sd.items() if k != key}
    path = tmp_path / "missing.safetensors"
    save_file(missing, str(path))
    with pytest.raises(CheckpointError, match=r"missing\.safetensors.*decoder\.mid\.block_1\.mix_factor"):
        SVDPipeline.from_pretrained(path, parts=("vae",), log=lambda *a: None)
    key = "conditioner.embedders.0.open_clip.model.visual.ln_post.weight"
    sd[key] = torch.zeros(65)
    path = tmp_path / "misshaped.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=r"misshaped\.safetensors.*visual\.ln_post\.weight: expected \[64\], found \[65\]"):
        SVDPipeline.from_pretrained(path, parts=("clip",), clip_head_width=32, log=lambda *a: None)


def test_unknown_clip_width_asks_for_the_head_width():
    with pytest.raises(CheckpointError, match="clip_head_width"):
        SVDPipeline.from_pretrained(_tiny_ckpt(), parts=("clip",), log=lambda *a: None)


def test_dtype_and_device_are_the_users():
    pipe = SVDPipeline.from_pretrained(_tiny_ckpt(), dtype=torch.bfloat16, parts=("vae", "clip"), clip_head_width=32,
                                       log=lambda *a: None)
    for m in (pipe.vae, pipe.clip):
        assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
        assert {p.device.type for p in m.parameters()} == {"cpu"}


# ------------------------------------------------------------------------------ diffusers format (test-only oracle)

def _perturb(model, scale=0.05):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def test_diffusers_temporal_vae_parity(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ref = _perturb(diffusers.AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2, layers_per_block=2, latent_channels=4))
    ref.save_pretrained(tmp_path / "vae")
    ours = load_diffusers_vae(tmp_path / "vae")
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    z = torch.randn(6, 4, 8, 12)
    with torch.no_grad():
        a, b = ref.encode(x).latent_dist.mode(), ours.encode(x)
        assert (a - b).abs().max() <= 1e-4 * a.abs().max()
        for T in (3, 6):  # chunks of 3 and one chunk of 6 frames
            a = torch.cat([ref.decode(zc, num_frames=T).sample for zc in z.split(T)])
            b = torch.cat([ours.decode(zc, T) for zc in z.split(T)])
            assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_transformers_clip_vision_parity(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                                        image_size=64, patch_size=16, projection_dim=32, hidden_act="gelu",
                                        layer_norm_eps=1e-5)
    torch.manual_seed(0)
    ref = _perturb(transformers.CLIPVisionModelWithProjection(cfg))
    ref.save_pretrained(tmp_path / "image_encoder")
    ours = load_diffusers_clip(tmp_path / "image_encoder")
    assert ours.config.heads == 4
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = ref(pixel_values=x).image_embeds, ours.pooled(x)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_diffusers_folder_without_parts_is_refused(tmp_path):
    (tmp_path / "vae").mkdir()
    with pytest.raises(CheckpointError, match="unet/"):
        SVDPipeline.from_pretrained(tmp_path, log=lambda *a: None)
