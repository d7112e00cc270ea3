"""The shipped built-in weights: they load strictly (config from shapes), fit the size budget, and generation is
deterministic by seed; the model card's claims about them hold."""

from pathlib import Path

import numpy as np
import pytest
import torch

from i2v.checkpoints import read_safetensors_header
from i2v.errors import ConfigError
from i2v.pipelines.builtin import BuiltinPipeline, prepare_image, weights_dir

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "i2v" / "assets" / "example.png"



def test_shipped_weights_exist_and_fit_the_budget():
    files = sorted(weights_dir().glob("builtin_*.safetensors"))
    assert [f.name for f in files] == ["builtin_dit.safetensors", "builtin_unet.safetensors"]
    assert sum(f.stat().st_size for f in files) <= 25 * 2**20
    for f in files:
        assert {info.dtype for info in read_safetensors_header(f).values()} == {"F16"}


@pytest.mark.parametrize("backbone", ["unet", "dit"])
def test_generation_is_deterministic_by_seed(backbone):
    pipe = BuiltinPipeline.load(backbone)
    assert (pipe.frames, pipe.size, pipe.metadata["backbone"]) == (16, 64, backbone)
    # size=64: the model's own 64x64 output (the default renders at the photo's size: test_builtin_fullres.py)
    a = pipe(EXAMPLE, motion="pan-left", steps=3, seed=5, progress=False, size=64)
    b = pipe(EXAMPLE, motion="pan-left", steps=3, seed=5, progress=False, size=64)
    c = pipe(EXAMPLE, motion="pan-left", steps=3, seed=6, progress=False, size=64)
    assert a.shape == (16, 3, 64, 64) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert (a[1:] - c[1:]).abs().mean() > 1e-3
    # frame 0 is the input image, centre-cropped and resized (independently: PIL's box filter)
    from PIL import Image
    with Image.open(EXAMPLE) as im:
        ref = np.asarray(im.convert("RGB").resize((64, 64), Image.BOX), dtype=np.float32) / 255
    assert np.abs(a[0].permute(1, 2, 0).numpy() - ref).mean() < 0.02


def test_options_and_errors():
    pipe = BuiltinPipeline.load("unet")
    out = pipe(EXAMPLE, motion="zoom-in", steps=2, frames=5, upscale=2, sampler="euler", progress=False, size=64)
    assert out.shape == (5, 3, 128, 128)
    a = pipe(EXAMPLE, motion="pan-left", steps=2, frames=3, seed=1, progress=False)  # the default, 128x128 photo
    assert a.shape == (3, 3, 128, 128) and torch.equal(a, pipe(EXAMPLE, motion="pan-left", steps=2, frames=3, seed=1,
                                                               progress=False))
    with pytest.raises(ConfigError, match="zoom-in"):
        pipe(EXAMPLE, motion="zoom", steps=2)
    with pytest.raises(ConfigError, match="flow"):
        pipe(EXAMPLE, steps=2, sampler="flow_euler")
    with pytest.raises(ConfigError, match="frames"):
        pipe(EXAMPLE, steps=2, frames=1)


def test_prepare_image_centre_crops():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 255  # the centred square is white, the sides black
    x = prepare_image(img, 16)
    assert x.shape == (3, 16, 16) and x.min() == 1.0
