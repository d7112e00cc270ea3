"""`i2v inspect` and i2v.registry.inspect / identify: tensor summaries and model families.

Counts are checked against the file libraries themselves (safetensors.safe_open, torch.load), formats against
real files in ../shared and against key sets that diffusers / transformers models really produce. Hostile and
broken files are made in tmp_path; the malicious pickles are only ever handed to i2v, never loaded here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from i2v import checkpoints
from i2v.checkpoints import TensorInfo
from i2v.registry import identify, inspect
from i2v.cli import main
from i2v.errors import CheckpointError

from conftest import shared_path


# ------------------------------------------------------------------------------ real files in ../shared


def test_svd_single_file():
    path = shared_path("reference", "svd-sgm-tiny", "checkpoint.safetensors")
    info = inspect(path)
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        numel = sum(torch.Size(f.get_slice(k).get_shape()).numel() for k in keys)
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    assert (info.match.family, info.match.variant) == ("svd", "single-file") and info.container == "safetensors"
    assert info.tensors == len(keys) == 1912
    assert info.parameters == numel
    assert dtypes == {"F32"} and info.dtypes == {"float32": 1912}
    assert not info.module_prefix


@pytest.mark.parametrize("parts, fmt, prefix", [
    (("reference", "rife-4.25", "flownet.pkl"), ("rife", "4.25"), True),
    (("reference", "raft-small", "raft.pth"), ("raft", "small"), True),
    (("weights", "taesd", "taef2_encoder.pth"), ("taesd", "encoder"), False),
    (("weights", "taesd", "taef2_decoder.pth"), ("taesd", "decoder"), False),
    (("weights", "taesd", "taesana_encoder.pth"), ("taesd", "encoder"), False),
])
def test_torch_files(parts, fmt, prefix):
    path = shared_path(*parts)
    info = inspect(path)
    sd = torch.load(path, map_location="cpu", weights_only=True)  # the oracle for counts
    assert (info.match.family, info.match.variant) == fmt
    assert info.tensors == len(sd)
    assert info.parameters == sum(v.numel() for v in sd.values())
    assert sum(info.dtypes.values()) == len(sd) and set(info.dtypes) == {str(v.dtype)[6:] for v in sd.values()}
    assert info.module_prefix == prefix


def test_real_full_size_svd_key_list():
    """The real svd_xt.safetensors key list (2446 tensors, recorded in ../shared)."""
    listing = json.loads(shared_path("reference", "svd-full-keys.json").read_text())["tensors"]
    index = {k: TensorInfo("F32", tuple(shape)) for k, shape in listing.items()}
    assert len(index) == 2446
    assert (identify(index).family, identify(index).variant) == ("svd", "single-file")


# ------------------------------------------------------------------------------ key sets of real model classes


def index_of(module: torch.nn.Module) -> dict[str, TensorInfo]:
    return {k: TensorInfo(str(v.dtype), tuple(v.shape)) for k, v in module.state_dict().items()}


def test_diffusers_svd_folder_parts():
    diffusers = pytest.importorskip("diffusers", reason="oracle needs the test extra: pip install -e '.[test]'")
    with torch.device("meta"):
        unet = diffusers.UNetSpatioTemporalConditionModel(
            block_out_channels=(32, 64), num_attention_heads=(2, 2), cross_attention_dim=32, layers_per_block=1,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"))
        vae = diffusers.AutoencoderKLTemporalDecoder(block_out_channels=(32, 64), layers_per_block=1)
        image_unet = diffusers.UNet2DConditionModel(block_out_channels=(32, 64, 64, 64), cross_attention_dim=32)
        image_vae = diffusers.AutoencoderKL(block_out_channels=(32, 64))
    assert identify(index_of(unet)).variant == "diffusers-unet"
    assert identify(index_of(vae)).variant == "diffusers-vae"
    assert identify(index_of(image_unet)) is None  # an image U-Net is not SVD's
    assert identify(index_of(image_vae)) is None


def test_transformers_clip_vision():
    transformers = pytest.importorskip("transformers", reason="oracle needs the test extra: pip install -e '.[test]'")
    cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, projection_dim=16, image_size=32, patch_size=8)
    with torch.device("meta"):
        model = transformers.CLIPVisionModelWithProjection(cfg)
    assert (identify(index_of(model)).family, identify(index_of(model)).variant) == ("clip-vision", "transformers")


def test_sd_single_files_are_told_apart_from_svd():
    unet = {"model.diffusion_model.input_blocks.0.0.weight": TensorInfo("F16", (320, 4, 3, 3)),
            "first_stage_model.decoder.conv_in.weight": TensorInfo("F16", (512, 4, 3, 3))}
    sd1 = {**unet, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": TensorInfo("F16", (49408, 768))}
    sd2 = {**unet, "cond_stage_model.model.token_embedding.weight": TensorInfo("F16", (49408, 1024))}
    assert identify(sd1).variant == "sd1"
    assert identify(sd2).variant == "sd2"
    assert identify(unet) is None


# ------------------------------------------------------------------------------ files made here


def test_metadata_counts_and_module_prefix(tmp_path):
    path = tmp_path / "mine.safetensors"
    save_file({"a.weight": torch.zeros(3, 4), "b": torch.zeros(2, dtype=torch.float16)}, str(path),
              metadata={"note": "made here"})
    info = inspect(path)
    assert info.match is None and info.metadata["note"] == "made here"
    assert info.tensors == 2 and info.parameters == 14 and info.dtypes == {"float32": 1, "float16": 1}

    pt = tmp_path / "dp.pt"
    torch.save({"module.x": torch.zeros(5), "module.y": torch.zeros(2, 2, dtype=torch.int64)}, pt)
    info = inspect(pt)
    assert info.module_prefix and info.match is None and info.parameters == 9 and info.container == "torch-zip"


def test_legacy_pickle_and_lightning_ckpt(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2, 3)}, legacy, _use_new_zipfile_serialization=False)
    info = inspect(legacy)
    assert info.container == "torch-pickle" and info.tensors == 1 and info.parameters == 6
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"block0.conv0.0.0.weight": torch.ones(1), "block0.convblock.0.beta": torch.ones(1),
                               "block1.conv0.0.0.weight": torch.ones(1)}, "global_step": 3}, ckpt)
    assert inspect(ckpt).match.family == "rife"


def test_safetensors_content_under_another_suffix(tmp_path):
    path = tmp_path / "really_safetensors.ckpt"
    save_file({"x": torch.ones(4)}, str(path))
    info = inspect(path)
    assert info.container == "safetensors" and info.tensors == 1


class _RunsCode:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):  # unpickling this would call os.system(...)
        return (os.system, (f"echo pwned > {self.target}",))


class _PlainObject:
    def __init__(self):
        self.weight = torch.ones(2)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    sentinel = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "payload": _RunsCode(sentinel)}, path)
    with pytest.raises(CheckpointError, match="refused") as e:
        inspect(path)
    assert "system" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="refused"):
        checkpoints.load_state_dict(path)
    assert not sentinel.exists()


def test_pickle_with_a_class_instance_is_refused(tmp_path):
    path = tmp_path / "obj.pth"
    torch.save({"model": _PlainObject()}, path)
    with pytest.raises(CheckpointError, match="refused.*_PlainObject"):
        inspect(path)


def _write(path, data):
    path.write_bytes(data)
    return path


def _truncated_copy(src, dst, fraction=0.5):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.mark.parametrize("make, match", [
    (lambda d: d / "missing.safetensors", "no such file"),
    (lambda d: d, "folder"),
    (lambda d: _write(d / "empty.pt", b""), "empty file"),
    (lambda d: _write(d / "notes.pt", b"hello, not weights\n"), "not a checkpoint"),
    (lambda d: _write(d / "x.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"), "not valid JSON"),
    (lambda d: _write(d / "list.safetensors", b"\x02\x00\x00\x00\x00\x00\x00\x00[]"), "not a checkpoint"),
])
def test_bad_files_one_line_errors(tmp_path, make, match):
    with pytest.raises(CheckpointError, match=match) as e:
        inspect(make(tmp_path))
    assert "\n" not in str(e.value)


def test_truncated_files(tmp_path):
    st = tmp_path / "full.safetensors"
    save_file({"a": torch.randn(64, 64), "b": torch.randn(64)}, str(st))
    with pytest.raises(CheckpointError, match="truncated"):
        inspect(_truncated_copy(st, tmp_path / "cut.safetensors"))
    with pytest.raises(CheckpointError, match="truncated"):
        inspect(_truncated_copy(st, tmp_path / "cut_header.safetensors", fraction=0.001))
    pt = tmp_path / "full.pt"
    torch.save({"a": torch.randn(64, 64)}, pt)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        inspect(_truncated_copy(pt, tmp_path / "cut.pt"))
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": torch.randn(64, 64)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        inspect(_truncated_copy(legacy, tmp_path / "cut_legacy.pt", fraction=0.3))


def test_torch_file_without_tensors(tmp_path):
    path = tmp_path / "config.pt"
    torch.save({"lr": 0.1, "name": "x"}, path)
    with pytest.raises(CheckpointError, match="without tensors"):
        inspect(path)


# ------------------------------------------------------------------------------ the command


def test_cli_prints_the_summary(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    save_file({"vision_model.embeddings.patch_embedding.weight": torch.zeros(8, 3, 4, 4),
               "visual_projection.weight": torch.zeros(4, 8, dtype=torch.float16)}, str(path))
    assert main(["inspect", str(path), "--keys"]) == 0
    out = capsys.readouterr().out
    assert "tensors     2" in out and "float32 x1, float16 x1" in out and "parameters  416 " in out
    assert "family      clip-vision (transformers)" in out and "visual_projection.weight" in out and "[4, 8]" in out


def test_cli_folder_and_partial_failure(tmp_path, capsys):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "a.safetensors"))
    (tmp_path / "b.pt").write_text("garbage")
    assert main(["inspect", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "a.safetensors" in captured.out and "b.pt" in captured.err


def test_cli_error_is_one_line_without_traceback(tmp_path):
    sentinel = tmp_path / "PWNED"
    path = tmp_path / "evil.pkl"
    torch.save(_RunsCode(sentinel), path)
    r = subprocess.run([sys.executable, "-m", "i2v", "inspect", str(path)], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.startswith("i2v inspect: error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not sentinel.exists()


# ------------------------------------------------------------------------------ every family, through the registry

# file name pattern -> the family i2v must name (any case directory of these kinds, present or added later)
EXPECTED_FAMILY = [("checkpoint.safetensors", "svd"), ("flownet.pkl", "rife"), ("raft.pth", "raft"),
                   ("depth_anything_v2_", "depth-anything-v2"), ("diffusion_pytorch_model", "wan"),
                   ("_VAE.pth", "wan"), ("models_t5_", "t5"), ("models_clip_", "clip-vision")]


def _reference_weight_files():
    from conftest import SHARED

    root = SHARED / "reference"
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in checkpoints.WEIGHT_SUFFIXES
                  and p.name != "expected.safetensors")


@pytest.mark.parametrize("path", _reference_weight_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_reference_checkpoint_is_named_by_a_family_i2v_runs(path):
    from i2v.registry import FAMILIES

    info = inspect(path)
    assert info.match is not None, f"{path}: no family"
    assert FAMILIES[info.match.family].load is not None, info.match
    for pattern, family in EXPECTED_FAMILY:
        if pattern in path.name:
            assert info.match.family == family, (path, info.match)
            break
    else:
        pytest.fail(f"{path.name}: a reference file of a kind this test does not know; add it to EXPECTED_FAMILY")


@pytest.mark.parametrize("backbone", ["unet", "dit"])
def test_shipped_weights_are_named_with_their_backbone(backbone, capsys):
    """The real files in weights/, with the metadata `i2v train` really writes (not metadata made up here)."""
    from conftest import ROOT

    path = ROOT / "weights" / f"builtin_{backbone}.safetensors"
    info = inspect(path)
    assert (info.match.family, info.match.variant) == ("builtin", backbone)
    assert main(["inspect", str(path)]) == 0
    assert f"family      builtin ({backbone})" in capsys.readouterr().out


def test_files_the_trainer_and_the_pipelines_write_are_named(tmp_path):
    from i2v.latents import save_latents
    from i2v.train import build_model, export_model, load_config, save_checkpoint

    cfg = load_config("configs/builtin_dit.toml", ["dit.dim=32", "dit.depth=1"])
    model = build_model(cfg)
    export_model(tmp_path / "model.safetensors", model, cfg, step=3, minutes=0.1)
    opt = torch.optim.AdamW(model.parameters())
    import copy

    save_checkpoint(tmp_path / "checkpoint.safetensors", model, copy.deepcopy(model), opt, 3, cfg, 0.1)
    save_latents(tmp_path / "svd.safetensors", torch.zeros(2, 4, 8, 8), "svd", seed=1)
    save_latents(tmp_path / "wan.safetensors", torch.zeros(16, 2, 4, 4), "wan", seed=1)
    found = {p.name: (inspect(p).match.family, inspect(p).match.variant) for p in tmp_path.iterdir()}
    assert found == {"model.safetensors": ("builtin", "dit"), "checkpoint.safetensors": ("builtin", "training-checkpoint"),
                     "svd.safetensors": ("svd", "latents"), "wan.safetensors": ("wan", "latents")}


def test_an_unknown_file_lists_what_it_looked_like_and_the_families(tmp_path):
    import i2v

    path = tmp_path / "mystery.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(2), "encoder.layer.1.weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError) as e:
        i2v.load(path)
    msg = str(e.value)
    assert "2 x encoder.layer.*" in msg and "svd:" in msg and "wan:" in msg and "raft:" in msg and "\n" not in msg
