"""The learned motion priors where users meet them: `i2v flow --method raft`, `i2v interpolate --flow raft`, and the
Python functions they mirror, against RAFT run directly (tests/test_raft.py checks RAFT itself against the
original code)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from conftest import shared_path
from i2v.cli import main
from i2v.motion.flow import estimate_flow, read_flo


@pytest.fixture(scope="module")
def raft_case():
    case = shared_path("reference", "raft-small")
    e = load_file(str(case / "expected.safetensors"))
    a, b = (e[f"inputs.image{i}"][0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy() for i in (1, 2))
    return case / "raft.pth", a, b


def test_cli_flow_raft_writes_what_raft_estimates(tmp_path, raft_case):
    from i2v.models.raft.raft import RAFT, estimate

    ckpt, a, b = raft_case
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    code = main(["flow", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "f.flo"),
                 "--method", "raft", "--checkpoint", str(ckpt), "--iters", "3", "--threads", "1"])
    assert code == 0
    want = estimate(RAFT.from_pretrained(ckpt), a, b, iters=3)
    np.testing.assert_allclose(read_flo(tmp_path / "f.flo"), want, atol=1e-4)
    np.testing.assert_allclose(estimate_flow(a, b, "raft", checkpoint=ckpt, iters=3), want, atol=1e-4)


@pytest.mark.parametrize("argv, words", [
    (["--method", "raft"], "needs --checkpoint"),
    (["--method", "dis", "--checkpoint", "x.pth"], "needs no weights"),
    (["--method", "raft", "--checkpoint", "CKPT", "--iters", "0"], "--iters must be >= 1"),
])
def test_cli_flow_option_errors(tmp_path, raft_case, capsys, argv, words):
    ckpt, a, b = raft_case
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    argv = [str(ckpt) if x == "CKPT" else x for x in argv]
    assert main(["flow", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "f.flo"), *argv]) == 1
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and not (tmp_path / "f.flo").exists()


def test_cli_interpolate_with_raft_flows(tmp_path, raft_case):
    from i2v.interpolate import interpolate_frames

    ckpt, a, b = raft_case
    (tmp_path / "in").mkdir()
    for i, f in enumerate((a, b)):
        Image.fromarray(f).save(tmp_path / "in" / f"{i}.png")
    code = main(["interpolate", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--factor", "2",
                 "--flow", "raft", "--flow-checkpoint", str(ckpt), "--flow-iters", "2", "--threads", "1"])
    assert code == 0
    got = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "out").iterdir())])
    want = interpolate_frames(np.stack([a, b]), 2, flow="raft", flow_checkpoint=ckpt, flow_iters=2, progress=False)
    assert got.shape == (3, *a.shape) and np.array_equal(got, want)
    dis = interpolate_frames(np.stack([a, b]), 2, progress=False)
    assert not np.array_equal(dis[1], want[1])  # the flow really came from RAFT


# ------------------------------------------------------------------------------------------- depth

@pytest.fixture(scope="module")
def dav2_case():
    import json

    case = shared_path("reference", "dav2-tiny")
    e = load_file(str(case / "expected.safetensors"))
    size = json.loads((case / "case.json").read_text()).get("input_size", 266)
    return case / "depth_anything_v2_tiny.pth", e, size


def test_cli_depth_writes_the_original_infer_image(tmp_path, dav2_case):
    ckpt, e, size = dav2_case
    rgb = e["inputs.image_bgr"].numpy()[:, :, ::-1]
    Image.fromarray(np.ascontiguousarray(rgb)).save(tmp_path / "teddy.png")
    assert main(["depth", str(tmp_path / "teddy.png"), "-o", str(tmp_path / "d.npy"), "--checkpoint", str(ckpt),
                 "--input-size", str(size), "--viz", str(tmp_path / "viz.png"), "--threads", "1"]) == 0
    got, want = np.load(tmp_path / "d.npy"), e["depth_full"].numpy()
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
    viz = np.asarray(Image.open(tmp_path / "viz.png"))
    assert viz.shape == (*want.shape, 3) and viz.std() > 10
    assert main(["depth", str(tmp_path / "teddy.png"), "-o", str(tmp_path / "d.png"), "--checkpoint", str(ckpt),
                 "--input-size", str(size)]) == 0
    png = np.asarray(Image.open(tmp_path / "d.png")).astype(np.float64)
    assert np.abs(png - want / want.max() * 255).max() <= 1.01  # d / max d, 8 bits: brighter = nearer


def test_cli_camera_with_a_depth_model(tmp_path, dav2_case, capsys):
    ckpt, e, size = dav2_case
    rgb = np.ascontiguousarray(e["inputs.image_bgr"].numpy()[::2, ::2, ::-1])
    Image.fromarray(rgb).save(tmp_path / "teddy.png")
    assert main(["camera", str(tmp_path / "teddy.png"), "--depth-model", str(ckpt), "--move", "orbit", "--frames", "3",
                 "-o", str(tmp_path / "cam"), "--threads", "1"]) == 0
    assert "Depth Anything V2" in capsys.readouterr().out
    frames = sorted((tmp_path / "cam").iterdir())
    assert len(frames) == 3 and np.array_equal(np.asarray(Image.open(frames[0])), rgb)  # frame 0 is the photo
    assert not np.array_equal(np.asarray(Image.open(frames[2])), rgb)


def test_a_raft_file_is_not_a_depth_model(tmp_path, capsys):
    raft = shared_path("reference", "raft-small", "raft.pth")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["depth", str(tmp_path / "a.png"), "-o", str(tmp_path / "d.npy"), "--checkpoint", str(raft)]) == 1
    err = capsys.readouterr().err
    assert "RAFT" in err and err.count("\n") == 1 and not (tmp_path / "d.npy").exists()


# ------------------------------------------------------------------------------------------- motion transfer

def test_cinemagraph_takes_its_motion_from_a_clip(tmp_path):
    """A clip that pans 2 px/frame right gives a field of (+2, 0) inside the brushed box and 0 outside; the loop it
    drives equals the loop driven by that field given directly."""
    import json

    from i2v.motion.eulerian import cinemagraph, motion_from_video

    rng = np.random.default_rng(0)
    tex = np.asarray(Image.fromarray((rng.random((40, 60, 3)) * 255).astype(np.uint8)).resize((240, 160), Image.BICUBIC))
    clip = np.stack([np.roll(tex, 2 * k, axis=1) for k in range(5)])[:, :, 40:200]  # (5, 160, 160, 3)
    (tmp_path / "clip").mkdir()
    for k, f in enumerate(clip):
        Image.fromarray(f).save(tmp_path / "clip" / f"{k}.png")
    photo = clip[0]
    Image.fromarray(photo).save(tmp_path / "photo.png")
    (tmp_path / "brush.json").write_text(json.dumps({"regions": [{"box": [40, 40, 120, 120], "direction": 0,
                                                                  "speed": 1, "feather": 0}]}))
    mask = np.zeros((160, 160), np.float32)
    mask[40:120, 40:120] = 1
    m = motion_from_video(clip, 160, 160, mask, "dis", progress=False)
    assert np.abs(m[60:100, 60:100, 0] - 2).mean() < 0.1 and np.abs(m[60:100, 60:100, 1]).mean() < 0.1
    assert np.abs(m[mask == 0]).max() == 0
    assert main(["cinemagraph", str(tmp_path / "photo.png"), "--motion-from", str(tmp_path / "clip"),
                 "--motion", str(tmp_path / "brush.json"), "--frames", "4", "-o", str(tmp_path / "loop"),
                 "--threads", "1"]) == 0
    got = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "loop").iterdir())])
    want = (cinemagraph(photo, motion_from_video(clip, 160, 160, _brush_mask(tmp_path / "brush.json"), "dis",
                                                 progress=False), frames=4, progress=False)
            .clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy())
    assert np.array_equal(got, want)  # the command derived the same mask from the brush and the same field


def _brush_mask(path):
    from i2v.motion.eulerian import brush_to_motion

    b = brush_to_motion(path, 160, 160)
    return (np.hypot(b[..., 0], b[..., 1]) > 1e-6).astype(np.float32)
