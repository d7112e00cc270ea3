"""RAFT (i2v/models/raft/raft.py) against the original code's reference runs in ../shared/reference/raft-*.

Each case directory holds ``raft.pth`` (random weights in a released file's key layout, ``module.`` prefix) and
``expected.safetensors`` made by princeton-vl/RAFT; new case directories (other widths, other inputs) are picked up
from ../shared/reference and from I2V_RAFT_CASES without code changes. Full-size layouts are checked on the meta
device against ../shared/reference/raft-full-keys.json.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import case_dirs, shared_path

from i2v.checkpoints import check_keys
from i2v.errors import CheckpointError, ConfigError, InputError
from i2v.models.raft.raft import SKIP, Config, CorrPyramid, OnDemandCorr, RAFT, estimate, pad, unpad

CASES = case_dirs("raft-", "I2V_RAFT_CASES")
TOL = 1e-3  # px, float32
PARAMS_M = {"large": 5.26, "small": 0.99}  # the figures (millions)


def hwc_uint8(t: torch.Tensor) -> np.ndarray:
    """(1, 3, h, w) float 0..255 with integer values -> (h, w, 3) uint8, as a user's image."""
    assert torch.equal(t, t.round()), "the case's inputs are not whole grey levels"
    return t[0].permute(1, 2, 0).to(torch.uint8).numpy()


@pytest.fixture(scope="module", params=CASES or [None], ids=[p.name for p in CASES] or ["no-cases"])
def case(request):
    """(case dir, case.json, expected tensors, model loaded through i2v.load, its forward output)."""
    from safetensors.torch import load_file

    import i2v

    d = request.param
    if d is None:
        pytest.skip("no raft-* case directories in ../shared/reference or I2V_RAFT_CASES (absent in a fresh clone)")
    if not (d / "raft.pth").exists():
        pytest.skip(f"needs the reference case {d} (../shared beside the repository; absent in a fresh clone)")
    torch.set_num_threads(1)
    meta = json.loads((d / "case.json").read_text())
    exp = load_file(d / "expected.safetensors")
    model = i2v.load(d / "raft.pth")  # the registry -> models/raft/detect.py -> RAFT.from_pretrained
    a, p = pad(exp["inputs.image1"])
    b, _ = pad(exp["inputs.image2"])
    with torch.no_grad():
        out = model(a, b, iters=meta["iters"], return_all=True)
    return d, meta, exp, model, (a, b, p), out


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


def test_golden(case):
    d, meta, exp, model, (a, b, p), out = case
    assert isinstance(model, RAFT) and model.config.small == (meta["model"] == "small")
    assert not model.training
    assert max_err(a, exp["padded.image1"]) == 0 and max_err(b, exp["padded.image2"]) == 0  # replicate, centred
    assert len(out["flow_predictions"]) == meta["iters"]
    assert max_err(out["flow_low"], exp["flow_low"]) <= TOL
    assert max_err(out["flow_predictions"][0], exp["flow_iter1_padded"]) <= TOL
    assert max_err(out["flow_up"], exp["flow_up_padded"]) <= TOL
    assert max_err(unpad(out["flow_up"], p), exp["flow_up"]) <= TOL
    assert float(exp["flow_up"].abs().max()) > 3  # the reference moves: a zero flow would not pass


def test_estimate_user_api(case):
    """uint8 (h, w, 3) images in, (h, w, 2) float32 out in i2v's convention: the reference's cropped flow."""
    d, meta, exp, model, _, _ = case
    flow = estimate(model, hwc_uint8(exp["inputs.image1"]), hwc_uint8(exp["inputs.image2"]), iters=meta["iters"])
    ref = exp["flow_up"][0].permute(1, 2, 0).numpy()
    assert flow.dtype == np.float32 and flow.shape == ref.shape
    assert np.abs(flow - ref).max() <= TOL


def test_alternate_corr_equals_all_pairs(case):
    """The on-demand lookup (no volume) reproduces the original's all-pairs result."""
    d, meta, exp, model, (a, b, p), out = case
    with torch.no_grad():
        alt = model(a, b, iters=meta["iters"], alternate_corr=True)
    assert max_err(alt["flow_low"], exp["flow_low"]) <= TOL
    assert max_err(alt["flow_up"], exp["flow_up_padded"]) <= TOL


def test_on_demand_lookup_matches_volume_in_chunks():
    """Both lookups on random features, coordinates reaching outside the frame (zero padding) and fractional
    positions; tiny chunks so the chunking is exercised."""
    g = torch.Generator().manual_seed(0)
    f1, f2 = torch.randn(2, 16, 17, 21, generator=g), torch.randn(2, 16, 17, 21, generator=g)
    coords = torch.rand(2, 2, 17, 21, generator=g) * torch.tensor([30.0, 26.0]).view(1, 2, 1, 1) - 5
    full = CorrPyramid(f1, f2, radius=3)(coords)
    lazy = OnDemandCorr(f1, f2, radius=3, chunk_bytes=2 * 8 * 8 * 16 * 4 * 37)(coords)  # 37 pixels a chunk
    assert full.shape == (2, 4 * 49, 17, 21)
    assert max_err(full, lazy) < 1e-5
    # one value by hand: level 0, pixel (row 3, col 4), window offset (dx, dy) = (-3, +2) -> channel 0*7 + 5
    x, y = float(coords[0, 0, 3, 4]) - 3, float(coords[0, 1, 3, 4]) + 2
    x0, y0 = math.floor(x), math.floor(y)
    ref = 0.0
    for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
        for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            if 0 <= xi < 21 and 0 <= yi < 17:
                ref += wx * wy * float(f1[0, :, 3, 4] @ f2[0, :, yi, xi]) / 4.0  # / sqrt(16)
    assert abs(float(full[0, 5, 3, 4]) - ref) < 1e-4


@pytest.mark.parametrize("variant", ["large", "small"])
def test_full_size_layout(variant):
    """The released files' keys and shapes (raft-things.pth / raft-small.pth) map from the meta device with
    nothing unused but the documented num_batches_tracked; parameter counts as stated."""
    manifest = json.loads(shared_path("reference", "raft-full-keys.json").read_text())[variant]
    shapes = {k.removeprefix("module."): tuple(v) for k, v in manifest.items()}
    cfg = Config.from_state_dict(shapes)
    assert cfg.small == (variant == "small")
    assert cfg == (Config.small_model() if variant == "small" else Config())
    with torch.device("meta"):
        model = RAFT(cfg)
    skipped = check_keys({k: tuple(v.shape) for k, v in model.state_dict().items()}, shapes,
                         source=f"raft-full-keys.json[{variant}]", model="RAFT", skip=SKIP)
    assert all(k.endswith("num_batches_tracked") for v in skipped.values() for k in v)
    assert len(model.state_dict()) + sum(len(v) for v in skipped.values()) == len(manifest)
    n = sum(p.numel() for p in model.parameters())  # each tensor once (norm3 is downsample.1, as in the original)
    assert round(n / 1e6, 2) == PARAMS_M[variant]
    # the manifest's parameter tensors (not running statistics or counters) -- norm3 and downsample.1 both listed
    listed = sum(math.prod(v) for k, v in shapes.items() if not k.endswith(("running_mean", "running_var",
                                                                              "num_batches_tracked")))
    assert listed == sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert round(listed / 1e6, 2) == PARAMS_M[variant]


@pytest.mark.parametrize("cfg", [
    Config(encoder_widths=(32, 32, 48, 64), feature_dim=64, hidden_dim=32, context_dim=48, corr_radius=2,
           corr_widths=(40, 24), flow_widths=(16, 8), motion_dim=34, flow_head_dim=24, mask_dim=16),
    Config(small=True, encoder_widths=(16, 16, 32, 48), feature_dim=40, hidden_dim=24, context_dim=16,
           corr_radius=1, corr_widths=(20,), flow_widths=(8, 8), motion_dim=18, flow_head_dim=12, mask_dim=0)],
    ids=["large-layout", "small-layout"])
def test_config_from_other_widths(cfg, tmp_path):
    """Every width and the radius come from the shapes: a file of another width loads with its own config."""
    with torch.device("meta"):
        model = RAFT(cfg)
    torch.save({f"module.{k}": torch.zeros(v.shape, dtype=v.dtype) for k, v in model.state_dict().items()},
               tmp_path / "raft-other.pth")
    assert RAFT.from_pretrained(tmp_path / "raft-other.pth").config == cfg


def test_float16_file_upcasts(case, tmp_path):
    d, meta, exp, _, _, _ = case
    sd = torch.load(d / "raft.pth", weights_only=True)
    path = tmp_path / "raft-fp16.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, path)
    model = RAFT.from_pretrained(path)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    flow = estimate(model, hwc_uint8(exp["inputs.image1"]), hwc_uint8(exp["inputs.image2"]), iters=meta["iters"])
    ref = exp["flow_up"][0].permute(1, 2, 0).numpy()
    assert np.isfinite(flow).all()
    assert np.abs(flow - ref).max() < 0.25 and np.abs(flow - ref).mean() < 0.05  # fp16 rounding of the weights


def test_file_without_num_batches_tracked(case, tmp_path):
    d, _, _, model, _, _ = case
    sd = torch.load(d / "raft.pth", weights_only=True)
    path = tmp_path / "raft-no-counters.pth"
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, path)
    other = RAFT.from_pretrained(path)
    ours, theirs = model.state_dict(), other.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_not_raft_files(tmp_path):
    dav2 = {"pretrained.cls_token": torch.zeros(1, 1, 8),
            "pretrained.patch_embed.proj.weight": torch.zeros(8, 3, 14, 14),
            "depth_head.scratch.output_conv2.0.weight": torch.zeros(4, 8, 3, 3)}
    torch.save(dav2, tmp_path / "depth_anything_v2_vits.pth")
    with pytest.raises(CheckpointError, match="not a RAFT checkpoint.*Depth Anything"):
        RAFT.from_pretrained(tmp_path / "depth_anything_v2_vits.pth")
    torch.save({"foo.weight": torch.randn(3, 3), "bar.bias": torch.randn(3)}, tmp_path / "random.pth")
    with pytest.raises(CheckpointError, match="not a RAFT checkpoint.*raft-things.pth"):
        RAFT.from_pretrained(tmp_path / "random.pth")


def test_truncated_raft_file(tmp_path):
    with torch.device("meta"):
        model = RAFT(Config.small_model())
    sd = {k: torch.zeros(v.shape) for k, v in model.state_dict().items() if "flow_head.conv2" not in k}
    torch.save(sd, tmp_path / "raft-small-broken.pth")
    with pytest.raises(CheckpointError, match="missing.*flow_head.conv2"):
        RAFT.from_pretrained(tmp_path / "raft-small-broken.pth")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return RAFT(Config.small_model()).eval()


def test_bad_inputs(tiny):
    img = np.zeros((130, 140, 3), np.uint8)
    with pytest.raises(InputError, match="one size.*resize"):
        estimate(tiny, img, np.zeros((130, 150, 3), np.uint8))
    with pytest.raises(InputError, match="grey.*RGB"):
        estimate(tiny, img[..., 0], img[..., 0])
    with pytest.raises(InputError, match="grey"):
        estimate(tiny, img[..., :1], img[..., :1])
    with pytest.raises(InputError, match="RGBA.*alpha"):
        estimate(tiny, np.zeros((130, 140, 4), np.uint8), np.zeros((130, 140, 4), np.uint8))
    with pytest.raises(InputError, match="channels first"):
        estimate(tiny, np.zeros((3, 130, 140), np.uint8), np.zeros((3, 130, 140), np.uint8))
    with pytest.raises(InputError, match="at least 121x121.*upscale"):
        estimate(tiny, np.zeros((100, 300, 3), np.uint8), np.zeros((100, 300, 3), np.uint8))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        estimate(tiny, img.astype(np.float32), img.astype(np.float32) + 7)
    with pytest.raises(ConfigError, match="iterations.*>= 1"):
        estimate(tiny, img, img, iters=0)
    with pytest.raises(ConfigError, match="iterations"):
        tiny(torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 128, 128), iters=-1)
    with pytest.raises(InputError, match="multiples of 8"):
        tiny(torch.zeros(1, 3, 130, 136), torch.zeros(1, 3, 130, 136))
    with pytest.raises(InputError, match="flow_init"):
        estimate(tiny, img, img, iters=1, flow_init=np.zeros((65, 70, 2), np.float32))
    with pytest.raises(InputError, match=r"flow_init must be \(b, 2, H/8, W/8\)"):
        tiny(torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 128, 128), flow_init=torch.zeros(1, 2, 128, 128))


def test_dtype_option(tiny, tmp_path):
    torch.save({f"module.{k}": v for k, v in tiny.state_dict().items()}, tmp_path / "raft-small.pth")
    model = RAFT.from_pretrained(tmp_path / "raft-small.pth", dtype="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and model.config == tiny.config
    with pytest.raises(ConfigError, match="unknown dtype"):
        RAFT.from_pretrained(tmp_path / "raft-small.pth", dtype="int8")


def test_warm_start_reaches_the_model(tiny, monkeypatch):
    """estimate() pads flow_init like the images and averages it over 8x8 blocks: a uniform (8, -4) px flow
    reaches forward() as (1, -0.5) 1/8-resolution pixels on the padded grid; a zero warm start changes nothing."""
    img1 = np.random.default_rng(0).integers(0, 256, (125, 131, 3), dtype=np.uint8)
    img2 = np.roll(img1, 3, axis=1)
    base = estimate(tiny, img1, img2, iters=2)
    assert base.shape == (125, 131, 2)
    assert np.array_equal(base, estimate(tiny, img1, img2, iters=2, flow_init=np.zeros((125, 131, 2), np.float32)))
    seen = {}
    forward = RAFT.forward

    def spy(self, *args, **kw):
        seen["init"] = kw["flow_init"]
        return forward(self, *args, **kw)

    monkeypatch.setattr(RAFT, "forward", spy)
    init = np.broadcast_to(np.array([8.0, -4.0], np.float32), (125, 131, 2))
    estimate(tiny, img1, img2, iters=1, flow_init=init)
    assert seen["init"].shape == (1, 2, 16, 17)
    assert torch.allclose(seen["init"][0, 0], torch.tensor(1.0))
    assert torch.allclose(seen["init"][0, 1], torch.tensor(-0.5))
