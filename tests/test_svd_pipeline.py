"""The SVD pipeline and CLI as a user runs them: half precision, bad input, the animate/decode round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from conftest import shared_path
from i2v.cli import main
from i2v.errors import ConfigError, InputError, NumericalError
from i2v.image import to_tensor
from i2v.pipelines.svd import SVDPipeline, fit_image

QUIET = {"log": lambda *a: None}


def _case():
    d = shared_path("reference", "svd-sgm-tiny")
    with safe_open(str(d / "expected.safetensors"), framework="pt") as f:
        E = {k: f.get_tensor(k) for k in ("inputs.image", "cond.crossattn", "cond.concat")}
    return d / "checkpoint.safetensors", E


def _heads():
    return {"unet_head_channels": 16, "clip_head_width": 32}  # the tiny case's (case.json); 64/80 in released files


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_half_precision_is_finite_and_close_on_the_conditioning(dtype):
    ckpt, E = _case()
    pipe = SVDPipeline.from_pretrained(ckpt, dtype=dtype, **_heads(), **QUIET)
    with torch.no_grad():
        emb = pipe.clip.embed(E["inputs.image"].to(dtype)).double()
    assert (emb - E["cond.crossattn"][:, 0]).abs().max() <= 3e-2 * E["cond.crossattn"].abs().max()  # ref: float64
    frames = pipe(E["inputs.image"], frames=1, steps=1, min_cfg=1.0, max_cfg=1.0, seed=0, progress=False)
    assert pipe.clip is None and pipe.cond_encoder is None  # freed after conditioning
    assert frames.shape == (1, 3, 64, 64) and frames.dtype == torch.float32
    assert torch.isfinite(frames).all() and 0 <= frames.min() and frames.max() <= 1


def test_float16_overflow_names_the_stage():
    ckpt, _ = _case()
    pipe = SVDPipeline.from_pretrained(ckpt, dtype=torch.float16, parts=("vae",), **QUIET)
    with torch.no_grad():
        pipe.vae.decoder.conv_in.weight.mul_(3e4)  # activations beyond float16's 65504
    with pytest.raises(NumericalError, match=r"VAE decoding of frames 0\.\.0.*bfloat16"):
        pipe.decode(torch.randn(1, 4, 8, 8), progress=False)


def test_bad_arguments_fail_before_any_work():
    pipe = SVDPipeline(**QUIET)  # no modules at all: validation comes first
    img = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ConfigError, match="frames must be an integer >= 1"):
        pipe(img, frames=0, steps=2)
    with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
        pipe(img, frames=2, steps=0)
    with pytest.raises(ConfigError, match="unknown sampler"):
        pipe(img, frames=2, steps=2, sampler="nope")
    with pytest.raises(InputError, match="at least 64 px"):
        pipe(torch.zeros(1, 3, 32, 128), frames=2, steps=2)
    with pytest.raises(ConfigError, match="is not a device: use cpu"):
        SVDPipeline.from_pretrained("svd.safetensors", device="gpu0", **QUIET)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            SVDPipeline.from_pretrained("svd.safetensors", device="cuda", **QUIET)


def test_image_inputs_and_fitting(tmp_path):
    notes = []
    x = fit_image(torch.zeros(1, 3, 80, 100), log=notes.append)
    assert x.shape == (1, 3, 64, 64) and "centre-cropped to 64x64" in notes[0]
    assert fit_image(torch.zeros(1, 3, 576, 1024), log=notes.append).shape == (1, 3, 576, 1024) and len(notes) == 1
    assert fit_image(torch.zeros(1, 3, 720, 1280), log=notes.append).shape == (1, 3, 576, 1024)
    assert fit_image(torch.zeros(1, 3, 300, 300), width=128, height=192, log=notes.append).shape == (1, 3, 192, 128)
    assert fit_image(torch.zeros(1, 3, 100, 2000), log=notes.append).shape == (1, 3, 64, 1024)  # never below 64
    with pytest.raises(ConfigError, match="multiple of 64"):
        fit_image(torch.zeros(1, 3, 300, 300), width=100)
    # files: RGBA is composited over white (documented), garbage is refused
    rgba = np.zeros((64, 64, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    white = torch.ones(1, 3, 64, 64, dtype=torch.float64)
    assert torch.equal(to_tensor(tmp_path / "a.png", (-1.0, 1.0), torch.float64), white)
    assert torch.equal(to_tensor(rgba, (-1.0, 1.0), torch.float64), white)  # an RGBA array the same way as a file
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.png"):
        to_tensor(tmp_path / "bad.png")
    with pytest.raises(InputError, match=r"\(h, w, 3\)"):
        to_tensor(np.zeros((4, 4, 5), np.uint8))


def test_cli_animate_then_decode_the_saved_latents(tmp_path, capsys):
    ckpt, E = _case()
    img = ((E["inputs.image"][0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    common = ["--checkpoint", str(ckpt), "--unet-head-channels", "16", "--clip-head-width", "32"]
    args = ["animate", str(tmp_path / "in.png"), *common, "--frames", "2", "--steps", "1", "--min-cfg", "1",
            "--max-cfg", "1", "--seed", "3", "--save-latents", str(tmp_path / "lat.safetensors"), "-o", str(tmp_path / "a")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "peak RAM" in out and "wrote" in out
    assert main(["decode", str(tmp_path / "lat.safetensors"), *common, "--decode-chunk-size", "2",
                 "-o", str(tmp_path / "b")]) == 0
    a = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "a").glob("*.png"))]
    b = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "b").glob("*.png"))]
    assert len(a) == len(b) == 2 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert a[0].std() > 0  # not a blank frame
    # the output exists now: refused without --overwrite, and nothing is touched
    before = (tmp_path / "a" / "frame_00000.png").read_bytes()
    assert main(args) == 1
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "a" / "frame_00000.png").read_bytes() == before
    # bad input is one line, exit status 1
    assert main(["animate", str(tmp_path / "missing.png"), *common, "-o", str(tmp_path / "c.mp4")]) == 1
    assert "missing.png" in capsys.readouterr().err
    assert main(["animate", str(tmp_path / "in.png"), *common, "--frames", "0", "-o", str(tmp_path / "c.mp4")]) == 1
    assert main(["decode", str(tmp_path / "in.png"), *common, "-o", str(tmp_path / "d.mp4")]) == 1
    assert "latents file" in capsys.readouterr().err


def test_encoders_are_freed_after_conditioning_and_reloaded_when_needed():
    ckpt, E = _case()
    pipe = SVDPipeline.from_pretrained(ckpt, **_heads(), **QUIET)
    frames = pipe(E["inputs.image"], frames=1, steps=1, min_cfg=1.0, max_cfg=1.0, seed=5, progress=False)
    assert frames.shape == (1, 3, 64, 64)
    assert pipe.clip is None and pipe.cond_encoder is None and pipe.vae.encoder is None  # freed
    cond, _ = pipe.condition(E["inputs.image"], 1, cond_noise=torch.zeros(1, 3, 64, 64), cond_aug=0.0)  # re-read
    ref = E["cond.crossattn"][:, 0]
    assert (cond["crossattn"][0].double() - ref).abs().max() <= 1e-4 * ref.abs().max()
