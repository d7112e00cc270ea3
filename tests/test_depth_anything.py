"""Depth Anything V2 (i2v.models.depth_anything.model) against independent references:

- golden cases made by the original code (DepthAnything/Depth-Anything-V2) at reduced width with random weights:
  every ``dav2-*`` directory in ../shared/reference plus those in ``I2V_DAV2_CASES`` (os.pathsep-separated), loaded
  from the file on disk through the public loader (``i2v.load``), config inferred from shapes;
- the key manifests of the released vits / vitb / vitl files (every key and shape from the meta device, counts);
- transformers' ``DepthAnythingForDepthEstimation`` (a test extra, an independent implementation of V2) at the same
  random weights, converted through the rename table of benchmarks/depth.py;
- bad inputs, and the conversion to the camera's depth (analytic).
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from conftest import ROOT, case_dirs, shared_path
from i2v.errors import CheckpointError, ConfigError, InputError
from i2v.models.depth_anything.model import (Config, DepthAnythingV2, estimate_depth, feature_layers, preprocess,
                                             resize_size)
from i2v.motion.depth import to_camera_depth


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref|: an error relative to the reference's scale, element by element."""
    a, ref = torch.as_tensor(a).double(), torch.as_tensor(ref).double()
    assert a.shape == ref.shape, (a.shape, ref.shape)
    return ((a - ref).abs().max() / ref.abs().max()).item()


# ---------------------------------------------------------------------------------------------------------------
# Golden cases from the original code
# ---------------------------------------------------------------------------------------------------------------

CASES = case_dirs("dav2-", "I2V_DAV2_CASES")


def _case(case_dir):
    from safetensors.torch import load_file

    case = json.loads((case_dir / "case.json").read_text()) if (case_dir / "case.json").exists() else {}
    weights = case_dir / case["weights"] if "weights" in case else next(case_dir.glob("*.pth"))
    return case, weights, load_file(str(case_dir / "expected.safetensors"))


@pytest.fixture(scope="module", params=CASES or [None], ids=[p.name for p in CASES] or ["no-cases"])
def golden(request):
    if request.param is None:
        shared_path("reference", "dav2-tiny")  # skips with the reason
    case, weights, expected = _case(request.param)
    import i2v
    from i2v.checkpoints import open_state_dict

    width = open_state_dict(weights).shapes["pretrained.cls_token"][-1]
    heads = case.get("num_heads")
    # the rule (width / 64) is what the loader must find by itself; give heads only to a case that breaks it
    options = {} if heads is None or heads == width // 64 else {"heads": heads}
    model = i2v.load(weights, **options)
    return case, model, expected


def test_golden_loads_with_the_config_of_the_case(golden):
    case, model, expected = golden
    assert isinstance(model, DepthAnythingV2)
    cfg = model.cfg
    for key, value in (("depth", cfg.blocks), ("embed_dim", cfg.width), ("num_heads", cfg.heads),
                       ("patch_size", cfg.patch_size), ("features", cfg.features)):
        if key in case:
            assert value == case[key], key
    if "out_channels" in case:
        assert list(cfg.out_channels) == case["out_channels"]
    if "intermediate_layers" in case:  # chosen from the block count, as the original's per-encoder table
        assert list(cfg.layers) == case["intermediate_layers"]
    if "img_size" in case:
        assert cfg.pos_grid == case["img_size"] // cfg.patch_size


def test_golden_preprocessing(golden):
    case, model, expected = golden
    bgr = expected["inputs.image_bgr"].numpy()
    ref = expected["inputs.tensor"]
    input_size = case.get("input_size", min(ref.shape[-2:]))
    x = preprocess(np.ascontiguousarray(bgr[..., ::-1]), input_size)  # BGR file pixels -> RGB, as i2v holds them
    assert x.shape == ref.shape and x.dtype == torch.float32
    assert rel_err(x, ref) <= 1e-4


def test_golden_features_and_depth(golden):
    case, model, expected = golden
    x = expected["inputs.tensor"]
    with torch.inference_mode():
        feats = model.features(x)
        depth = model(x)
    n = sum(1 for k in expected if k.startswith("features.") and k.endswith(".tokens"))
    assert n == len(feats) == 4
    for i, (tokens, cls) in enumerate(feats):
        assert rel_err(tokens, expected[f"features.{i}.tokens"]) <= 1e-4, i
        assert rel_err(cls, expected[f"features.{i}.cls"]) <= 1e-4, i
    assert rel_err(depth, expected["depth"]) <= 1e-4
    assert expected["depth"].std() > 0.05 * expected["depth"].abs().mean()  # a real map, not a constant


def test_golden_infer_image_bgr_and_estimate_depth_rgb(golden):
    case, model, expected = golden
    bgr = expected["inputs.image_bgr"].numpy()
    input_size = case.get("input_size", min(expected["inputs.tensor"].shape[-2:]))
    full = model.infer_image(bgr, input_size)  # the original's entry point: cv2.imread's BGR
    assert full.shape == bgr.shape[:2] and full.dtype == np.float32
    assert rel_err(torch.from_numpy(full), expected["depth_full"]) <= 1e-3
    rgb = estimate_depth(model, np.ascontiguousarray(bgr[..., ::-1]), input_size)  # i2v's entry point: RGB
    np.testing.assert_array_equal(rgb, full)


def test_golden_fails_without_the_original_position_interpolation(golden):
    """The check can fail: with the 0.1 offset removed (transformers' ``size=`` resize) the depth is off."""
    case, model, expected = golden
    x = expected["inputs.tensor"]
    grid = (x.shape[-2] // model.cfg.patch_size, x.shape[-1] // model.cfg.patch_size)
    if grid[0] == grid[1] == model.cfg.pos_grid:
        pytest.skip("this case runs at the trained grid: no interpolation")
    import dataclasses

    model.pretrained.cfg = dataclasses.replace(model.cfg, interpolate_offset=0.0)
    try:
        with torch.inference_mode():
            assert rel_err(model(x), expected["depth"]) > 1e-4
    finally:
        model.pretrained.cfg = model.cfg


# ---------------------------------------------------------------------------------------------------------------
# The released files' key layouts, from the meta device
# ---------------------------------------------------------------------------------------------------------------

RELEASED = {  # run.py's model_configs; parameter counts of the released files
    "vits": dict(width=384, heads=6, blocks=12, layers=(2, 5, 8, 11), features=64, out=(48, 96, 192, 384), m=24.8),
    "vitb": dict(width=768, heads=12, blocks=12, layers=(2, 5, 8, 11), features=128, out=(96, 192, 384, 768), m=97.5),
    "vitl": dict(width=1024, heads=16, blocks=24, layers=(4, 11, 17, 23), features=256, out=(256, 512, 1024, 1024),
                 m=335.3),
}


@pytest.mark.parametrize("encoder", list(RELEASED))
def test_full_size_key_manifest(encoder):
    from i2v.checkpoints import check_keys

    manifest = json.loads(shared_path("reference", "dav2-full-keys.json").read_text())[encoder]
    shapes = {k: tuple(v) for k, v in manifest.items()}
    cfg = Config.from_state_dict(shapes)
    want = RELEASED[encoder]
    assert (cfg.width, cfg.heads, cfg.blocks, cfg.layers, cfg.features, cfg.out_channels) == \
           (want["width"], want["heads"], want["blocks"], want["layers"], want["features"], want["out"])
    assert cfg.encoder == encoder and cfg.ffn == "mlp" and cfg.pos_grid == 37 and cfg.mlp_hidden == 4 * cfg.width
    with torch.device("meta"):
        model = DepthAnythingV2(cfg)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    skipped = check_keys(own, shapes, source=f"dav2-full-keys.json[{encoder}]", model="DepthAnythingV2")
    assert skipped == {} and len(own) == len(shapes)  # every key used, none skipped
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 1) == want["m"]


def test_feature_layers_rule():
    assert feature_layers(12) == (2, 5, 8, 11) and feature_layers(24) == (4, 11, 17, 23)
    assert feature_layers(40) == (9, 19, 29, 39)
    assert feature_layers(8) == (1, 3, 5, 7)  # another depth: the last block of each quarter
    with pytest.raises(CheckpointError, match="4 different blocks"):
        feature_layers(3)


# ---------------------------------------------------------------------------------------------------------------
# Parity with transformers' DepthAnythingForDepthEstimation at the same random weights
# ---------------------------------------------------------------------------------------------------------------


def _bench():
    spec = importlib.util.spec_from_file_location("bench_depth", ROOT / "benchmarks" / "depth.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TINY = dict(width=128, blocks=4, heads=2, mlp_hidden=512, pos_grid=7, layers=(0, 1, 2, 3), features=32,
            out_channels=(24, 48, 96, 128))


@pytest.mark.parametrize("variant", ["relative", "swiglu (vitg MLP)", "metric head"])
def test_parity_with_transformers(variant):
    pytest.importorskip("transformers", minversion="5.0",  # the rename table targets its q_proj/o_proj names
                        reason="parity needs the test extra (transformers >= 5): pip install -e '.[test]'")
    bench = _bench()
    kw = dict(TINY)
    if variant.startswith("swiglu"):
        kw.update(ffn="swiglu", mlp_hidden=344)  # transformers' rule: (int(4 C * 2 / 3) + 7) // 8 * 8
    if variant == "metric head":
        kw.update(max_depth=20.0)
    cfg = Config(**kw)
    ours, theirs = bench.pair(cfg, image_size=cfg.pos_grid * cfg.patch_size, seed=3)
    # the trained grid, square: transformers resizes pos_embed with size= (not the original's scale_factor)
    x = torch.randn(2, 3, 98, 98, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = theirs(pixel_values=x).predicted_depth
        out = ours(x)
        hidden = theirs.backbone(x).feature_maps
        feats = ours.features(x)
    assert out.shape == ref.shape == (2, 98, 98)
    assert ref.std() > 0.05 * ref.abs().mean()
    assert rel_err(out, ref) <= 1e-4
    for (tokens, cls), h in zip(feats, hidden):  # (b, 1 + n, C) with the class token first
        assert rel_err(tokens, h[:, 1:]) <= 1e-4 and rel_err(cls, h[:, 0]) <= 1e-4


def test_parity_with_transformers_on_a_non_square_odd_grid():
    """On another grid transformers resizes pos_embed with ``size=``; with the original's rule patched into it
    (scale_factor (g' + 0.1) / g, as ../shared/README.md states), the rest -- reassembly of a 9x6 grid, the
    stride-2 level (5x3), every fusion resize -- must agree."""
    pytest.importorskip("transformers", minversion="5.0",  # the rename table targets its q_proj/o_proj names
                        reason="parity needs the test extra (transformers >= 5): pip install -e '.[test]'")
    import torch.nn.functional as F

    cfg = Config(**TINY)
    ours, theirs = _bench().pair(cfg, image_size=cfg.pos_grid * cfg.patch_size, seed=4)
    emb = theirs.backbone.embeddings
    x = torch.randn(1, 3, 126, 84, generator=torch.Generator().manual_seed(0))  # a 9x6 patch grid

    def original_rule(embeddings, height, width):
        pos, g = emb.position_embeddings, cfg.pos_grid
        gh, gw = height // cfg.patch_size, width // cfg.patch_size
        grid = pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((gh + 0.1) / g, (gw + 0.1) / g), mode="bicubic", antialias=False)
        return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)

    with torch.inference_mode():
        out = ours(x)
        assert rel_err(out, theirs(pixel_values=x).predicted_depth) > 1e-2  # transformers' own rule differs
        emb.interpolate_pos_encoding = original_rule
        assert rel_err(out, theirs(pixel_values=x).predicted_depth) <= 1e-4


def test_swiglu_file_loads_from_shapes(tmp_path):
    """A vitg-style file (SwiGLU MLP: mlp.w12 / mlp.w3) is recognised from its keys."""
    bench = _bench()
    cfg = Config(**{**TINY, "ffn": "swiglu", "mlp_hidden": 344})
    sd = bench.random_model(cfg).state_dict()
    torch.save(sd, tmp_path / "g.pth")
    model = DepthAnythingV2.from_pretrained(tmp_path / "g.pth")
    assert model.cfg == cfg
    x = torch.randn(1, 3, 42, 56)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), bench.random_model(cfg)(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    bench = _bench()
    model = bench.random_model(Config(**TINY))
    path = tmp_path_factory.mktemp("dav2") / "tiny.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_raft_file_as_depth_model():
    raft = shared_path("reference", "raft-small", "raft.pth")
    with pytest.raises(CheckpointError, match="not a Depth Anything V2 file.*RAFT"):
        DepthAnythingV2.from_pretrained(raft)


def test_other_file_as_depth_model(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="not a Depth Anything V2 file.*encoder.weight"):
        DepthAnythingV2.from_pretrained(tmp_path / "x.pth")


def test_unknown_width_needs_heads(tmp_path):
    bench = _bench()
    cfg = Config(**{**TINY, "width": 96, "heads": 2, "mlp_hidden": 384})
    torch.save(bench.random_model(cfg).state_dict(), tmp_path / "w96.pth")
    with pytest.raises(CheckpointError, match="width 96 .*pass heads=N"):
        DepthAnythingV2.from_pretrained(tmp_path / "w96.pth")
    assert DepthAnythingV2.from_pretrained(tmp_path / "w96.pth", heads=2).cfg.heads == 2
    with pytest.raises(ConfigError, match="heads=5 does not divide"):
        DepthAnythingV2.from_pretrained(tmp_path / "w96.pth", heads=5)


def test_incomplete_file_names_the_missing_tensor(tiny, tmp_path):
    model, _ = tiny
    sd = dict(model.state_dict())
    del sd["depth_head.scratch.output_conv1.bias"]
    torch.save(sd, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="output_conv1.bias"):
        DepthAnythingV2.from_pretrained(tmp_path / "cut.pth")


def test_image_smaller_than_a_patch(tiny):
    model, _ = tiny
    with pytest.raises(InputError, match="smaller than one 14x14 patch"):
        estimate_depth(model, np.zeros((10, 200, 3), np.uint8), 28)
    with pytest.raises(InputError, match="multiples of the 14-pixel patch"):
        model(torch.zeros(1, 3, 20, 28))
    with pytest.raises(ConfigError, match="input_size"):
        estimate_depth(model, np.zeros((30, 30, 3), np.uint8), 10)


def test_grey_and_rgba_are_converted_as_load_image_does(tiny, tmp_path):
    from PIL import Image

    from i2v.video import load_image

    model, _ = tiny
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (30, 44), dtype=np.uint8)
    rgba = rng.integers(0, 256, (30, 44, 4), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    for arr, file in ((grey, "g.png"), (grey[..., None], "g.png"), (rgba, "a.png")):
        from_file = estimate_depth(model, load_image(tmp_path / file), 28)
        np.testing.assert_array_equal(estimate_depth(model, arr, 28), from_file)
    with pytest.raises(InputError, match="8-bit"):
        estimate_depth(model, np.zeros((30, 30, 3), np.float32), 28)
    with pytest.raises(InputError, match="expected an image"):
        estimate_depth(model, np.zeros((30, 30, 2), np.uint8), 28)


def test_resize_size_rule():
    for h, w, s in ((375, 450, 266), (480, 640, 518), (1080, 1920, 518), (518, 518, 518), (17, 900, 100)):
        H, W = resize_size(h, w, s)
        assert H % 14 == W % 14 == 0 and min(H, W) >= s
        assert abs(H / W - h / w) <= 14 / min(H, W)  # the aspect kept to within one patch
    assert resize_size(375, 450, 266) == (266, 322)  # the golden case's (../shared/reference/dav2-tiny/case.json)


# ---------------------------------------------------------------------------------------------------------------
# Relative inverse depth -> the camera's depth
# ---------------------------------------------------------------------------------------------------------------


def test_to_camera_depth():
    d = np.linspace(0, 3, 12 * 10, dtype=np.float32).reshape(12, 10)  # 0 (sky) .. 3 (nearest)
    dm = to_camera_depth(d, depth_range=10.0)
    z = dm.depth
    assert z.dtype == np.float32 and z.shape == d.shape and dm.valid.all() and np.isfinite(z).all()
    assert math.isclose(float(np.median(z)), 1.0, rel_tol=1e-6)
    assert math.isclose(float(z.max() / z.min()), 10.0, rel_tol=1e-5)  # farthest / nearest = depth_range
    assert np.all(np.diff(z.ravel()) < 0)  # nearer (larger d) = smaller depth
    # z is proportional to 1 / (d / max d + 1 / (R - 1)): check against that formula directly
    expect = 1 / (d / 3 + 1 / 9)
    np.testing.assert_allclose(z, expect / np.median(expect), rtol=1e-6)
    with pytest.raises(ConfigError):
        to_camera_depth(d, depth_range=1.0)
    with pytest.raises(InputError, match="0 everywhere"):
        to_camera_depth(np.zeros((4, 4)))


def test_camera_move_takes_the_converted_depth(tiny):
    from i2v.motion.camera import render_camera_move

    model, _ = tiny
    img = np.random.default_rng(1).integers(0, 256, (28, 42, 3), dtype=np.uint8)
    dm = to_camera_depth(estimate_depth(model, img, 28))
    frames = render_camera_move(img, dm, move="orbit", frames=2, progress=False, verbose=False)
    assert frames.shape == (2, 3, 28, 42) and torch.isfinite(frames).all()


def test_half_stored_and_prefixed_files_load(tiny, tmp_path):
    """A float16-stored file upcasts to float32 (or loads as asked with dtype=); a DataParallel ``module.``
    prefix is dropped."""
    model, _ = tiny
    half = {f"module.{k}": v.half() for k, v in model.state_dict().items()}
    torch.save(half, tmp_path / "half.pth")
    loaded = DepthAnythingV2.from_pretrained(tmp_path / "half.pth")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    ref = {k.removeprefix("module."): v.float() for k, v in half.items()}
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in ref.items())
    bf16 = DepthAnythingV2.from_pretrained(tmp_path / "half.pth", dtype="bf16")
    img = np.random.default_rng(2).integers(0, 256, (30, 44, 3), dtype=np.uint8)
    d32, d16 = estimate_depth(loaded, img, 28), estimate_depth(bf16, img, 28)
    assert d16.dtype == np.float32 and rel_err(torch.from_numpy(d16), torch.from_numpy(d32)) < 0.1
    with pytest.raises(ConfigError, match="dtype"):
        DepthAnythingV2.from_pretrained(tmp_path / "half.pth", dtype="int8")
