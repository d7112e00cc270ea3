"""Frame interpolation: RIFE 4.25 against the original code's outputs, flow-based against real ground truth
(Middlebury, UCF101), and the clip-level behaviour (timing, loops, cuts, duplicates, errors) against scenes
whose true in-between frames are known."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from conftest import SHARED, case_dirs, shared_path
from i2v import video
from i2v.cli import main
from i2v.commands.common import add_output_arguments, write_video
from i2v.errors import CheckpointError, ConfigError, InputError
from i2v.interpolate import flow_based as fb
from i2v.interpolate import interpolate_frames, is_scene_cut, output_times
from i2v.models.rife import ifnet as rife

RIFE_CASES = case_dirs("rife-", "I2V_RIFE_CASES")



def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def to_u8(x: torch.Tensor) -> np.ndarray:
    return (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


# ---------------------------------------------------------------- RIFE 4.25 golden (original code's outputs)


@pytest.mark.parametrize("case_dir", RIFE_CASES or [None], ids=[p.name for p in RIFE_CASES] or ["none"])
def test_rife_reproduces_reference(case_dir):
    from safetensors.torch import load_file

    if case_dir is None:  # no rife-* case anywhere: skip with the reason
        shared_path("reference", "rife-4.25")
        pytest.skip("no ../shared/reference/rife-* directory and I2V_RIFE_CASES is empty")

    case = json.loads((case_dir / "case.json").read_text())
    model = rife.load(case_dir / "flownet.pkl")  # as a user would: torch pickle, module. prefix, weights_only
    ref = load_file(str(case_dir / "expected.safetensors"))
    img0, img1 = ref["inputs.img0"].float(), ref["inputs.img1"].float()
    assert case["cases"], "case.json lists no cases"
    for c in case["cases"]:
        out = rife.interpolate(model, img0, img1, c["t"], c["scale"])
        for name in ("frame", "flow", "mask"):
            want = ref[f"{c['key']}.{name}"].float()
            rel = ((out[name] - want).abs().max() / want.abs().max()).item()
            assert rel <= 1e-4, f"{case_dir.name} {c['key']}.{name}: relative error {rel:.2e}"
    # the clip-level glue (RIFEInterpolator: device, dtype, padding, clamping) gives the same frames
    from i2v.interpolate.rife import RIFEInterpolator

    c = case["cases"][-1]
    frame = RIFEInterpolator(case_dir / "flownet.pkl", scale=c["scale"])(img0, img1, [c["t"]])[0]
    want = ref[f"{c['key']}.frame"].float().clamp(0, 1)
    assert ((frame - want).abs().max() / want.abs().max()).item() <= 1e-4


def _rife_sd():
    path = shared_path("reference", "rife-4.25", "flownet.pkl")
    return path, torch.load(path, weights_only=True)


def test_rife_pads_to_the_multiple_and_crops_back():
    path, _ = _rife_sd()
    model = rife.load(path)
    x0, x1 = torch.rand(1, 3, 70, 150), torch.rand(1, 3, 70, 150)
    out = rife.interpolate(model, x0, x1, 0.5)
    assert out["frame"].shape == (1, 3, 70, 150) and out["flow"].shape == (1, 4, 70, 150)
    # zero padding at the right/bottom to 128 x 256, then the crop: same as running the padded input
    full = model(torch.nn.functional.pad(x0, (0, 106, 0, 58)), torch.nn.functional.pad(x1, (0, 106, 0, 58)), 0.5)
    torch.testing.assert_close(out["frame"], full["frame"][..., :70, :150])
    assert rife.pad_multiple(model, 1.0) == 128 and rife.pad_multiple(model, 0.25) == 256


@pytest.mark.parametrize("edit, words", [
    (lambda sd: {k.replace("encode.cnn3", "encode.cnn3x"): v for k, v in sd.items()}, "unknown version"),
    (lambda sd: {k: (v[:, :2] if k == "module.encode.cnn3.weight" else v[:2] if k == "module.encode.cnn3.bias" else v)
                 for k, v in sd.items()} | {"module.encode.cnn3.weight": torch.zeros(16, 8, 4, 4),
                                            "module.encode.cnn3.bias": torch.zeros(8)}, "4.13-4.21"),
    (lambda sd: {k: v for k, v in sd.items() if not k.startswith("module.encode")}, "4.0-4.6"),
    (lambda sd: {k: v for k, v in sd.items() if k != "module.block3.convblock.2.beta"}, "missing"),
    (lambda sd: sd | {"module.teacher.conv0.0.0.weight": torch.zeros(1)}, "unexpected"),
    (lambda sd: sd | {"module.block2.lastconv.0.bias": torch.zeros(51)}, "wrong shape"),
])
def test_rife_rejects_other_checkpoints_clearly(tmp_path, edit, words):
    _, sd = _rife_sd()
    p = tmp_path / "flownet.pkl"
    torch.save(edit(dict(sd)), p)
    with pytest.raises(CheckpointError) as e:
        rife.load(p)
    assert words in str(e.value) and str(p) in str(e.value)
    if words in ("4.13-4.21", "4.0-4.6"):
        assert "4.25" in str(e.value)  # says which versions are supported


def test_cli_wrong_rife_version_is_one_line(tmp_path, capsys):
    _, sd = _rife_sd()
    p = tmp_path / "old.pkl"
    torch.save({k: v for k, v in sd.items() if not k.startswith("module.encode")}, p)
    frames = tmp_path / "in"
    video.save(np.zeros((2, 32, 32, 3), np.uint8), frames)
    assert main(["interpolate", str(frames), "-o", str(tmp_path / "o.mp4"), "--method", "rife", "--checkpoint", str(p)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "4.0-4.6" in err and "4.25" in err


# ---------------------------------------------------------------- flow-based, real ground truth


def _triplets(name: str, files: tuple[str, str, str]):
    root = shared_path("data", "interp", name)
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        yield tuple(video.load_image(d / f) for f in files)


@pytest.mark.parametrize("name, files, floor", [
    ("middlebury-other", ("frame10.png", "frame10i11.png", "frame11.png"), 34.2),
    ("ucf101", ("frame0.png", "frame1.png", "frame2.png"), 33.4),
])
def test_flow_interpolation_psnr_on_real_ground_truth(name, files, floor):
    ours, dissolve = [], []
    for i0, gt, i1 in _triplets(name, files):
        ours.append(psnr(to_u8(fb.interpolate_pair(i0, i1, (0.5,))[0]), gt))
        dissolve.append(psnr(((i0.astype(np.float64) + i1) / 2).round(), gt))
    assert len(ours) in (12, 21)
    assert np.mean(ours) >= floor, f"{name}: mean PSNR {np.mean(ours):.2f} dB < {floor}"
    assert np.mean(ours) > np.mean(dissolve) + 2  # and well above cross-dissolve (28.0 / 30.5)


def _moving_square(shift: int):
    """A textured square over a textured background, moved right by ``shift`` px (true frames at any shift)."""
    bg = video.load_image(shared_path("data", "interp", "middlebury-other", "RubberWhale", "frame10.png"))[100:228, 100:292]
    fg = video.load_image(SHARED / "data" / "interp" / "middlebury-other" / "Beanbags" / "frame10.png")[200:248, 300:348]
    im = bg.copy()
    im[40:88, 60 + shift:108 + shift] = fg
    return im


def test_occlusion_maps_flag_the_truly_occluded_strips():
    i0, i1 = _moving_square(0), _moving_square(16)
    f01, f10 = fb.bidirectional_flow(i0, i1)
    occ0, occ1 = fb.occlusion(f01, f10)[0, 0], fb.occlusion(f10, f01)[0, 0]
    assert occ0[40:88, 108:124].mean() > 0.7  # background covered by the square in frame 1
    assert occ1[40:88, 60:76].mean() > 0.7  # background uncovered in frame 1
    far = torch.ones_like(occ0, dtype=torch.bool)
    far[20:108, 40:144] = False
    assert occ0[far].mean() < 0.05 and occ1[far].mean() < 0.05


def test_projected_flows_beat_linear_approximation_at_occlusions():
    i0, gt, i1 = _moving_square(0), _moving_square(8), _moving_square(16)
    err = {}
    for inter in fb.INTERMEDIATE:
        out = to_u8(fb.interpolate_pair(i0, i1, (0.5,), intermediate=inter)[0]).astype(np.float64)
        err[inter] = psnr(out, gt)
    assert err["splat"] > err["linear"] + 2, err
    assert err["splat"] > 33


def test_holes_fall_back_to_time_weighted_average():
    img0, img1 = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    flow = torch.full((1, 2, 8, 8), 100.0)  # every sample leaves the image: both weights vanish
    out = fb.blend(img0, img1, flow, -flow, 0.25, intermediate="linear")
    assert out["holes"].all()
    torch.testing.assert_close(out["frame"], torch.full_like(out["frame"], 0.25))


# ---------------------------------------------------------------- clip level


def _panning(n: int, step: int, width: int = 128):
    """Frames of a real texture panned circularly by ``step`` px per frame (wraps after width/step frames)."""
    tex = video.load_image(shared_path("data", "interp", "middlebury-other", "RubberWhale", "frame10.png"))[100:196, 100:100 + width]
    return np.stack([np.roll(tex, -step * i, axis=1) for i in range(n)]), tex


def test_factor_and_fps_timelines():
    np.testing.assert_allclose(output_times(3, 4), np.arange(9) / 4)
    np.testing.assert_allclose(output_times(3, 2, loop=True), np.arange(6) / 2)
    np.testing.assert_allclose(output_times(3, None, 24, 60), np.arange(6) * 0.4)
    frames, _ = _panning(3, 4)
    out = interpolate_frames(frames, 3, progress=False)
    assert out.shape == (7,) + frames.shape[1:]
    np.testing.assert_array_equal(out[::3], frames)  # the input frames are kept exactly
    out4 = interpolate_frames(frames[:2], 4, progress=False)  # t = 1/4, 1/2, 3/4 between two frames 4 px apart
    for k in (1, 2, 3):
        true = np.roll(frames[0], -k, axis=1)  # the true frame at t = k/4 of the pan
        assert psnr(out4[k][:, 8:-8], true[:, 8:-8]) > 40, k  # holding: 22-30 dB, dissolving: 11-31 dB


def test_loop_has_no_seam(tmp_path):
    frames, _ = _panning(8, 16)  # 8 x 16 px = 128 px: frame 0 follows frame 7 exactly like any other step
    src = tmp_path / "in"
    video.save(frames, src)
    mad = lambda a, b: np.abs(a.astype(np.float64) - b).mean()  # noqa: E731
    for loop in (True, False):
        out_path = tmp_path / f"out_{loop}"
        args = ["interpolate", str(src), "-o", str(out_path), "--factor", "2"] + (["--loop"] if loop else [])
        assert main(args) == 0
        out, _ = video.load(out_path)
        steps = [mad(out[i], out[i + 1]) for i in range(len(out) - 1)]
        seam = mad(out[-1], out[0])
        if loop:
            assert len(out) == 16
            assert min(steps) * 0.8 <= seam <= max(steps) * 1.2, (seam, steps)
        else:  # the test can fail: without --loop the wrap is a double step
            assert len(out) == 15 and seam > max(steps) * 1.5


def test_scene_cuts_on_real_frames():
    pairs = list(_triplets("middlebury-other", ("frame10.png", "frame10i11.png", "frame11.png")))
    pairs_u = list(_triplets("ucf101", ("frame0.png", "frame1.png", "frame2.png")))
    for i0, _, i1 in pairs + pairs_u:  # consecutive frames of one shot, real motion: never a cut
        assert not is_scene_cut(i0, i1)
    import cv2

    firsts = [p[0] for p in pairs] + [cv2.resize(p[0], (640, 480)) for p in pairs_u]
    for i in range(len(firsts)):  # frames of different sequences (528 pairs): always a cut
        for j in range(i + 1, len(firsts)):
            assert is_scene_cut(firsts[i], firsts[j]), (i, j)
    a, b = pairs[0], next(p for p in pairs[3:] if p[0].shape == pairs[0][0].shape)
    clip = np.stack([a[0], a[2], b[0], b[2]])
    out, info = interpolate_frames(clip, 2, progress=False, return_info=True)
    assert info["cuts"] == [(1, 2)]
    np.testing.assert_array_equal(out[3], a[2])  # across the cut the frame is held, not morphed
    dissolve = ((a[0].astype(np.float64) + a[2]) / 2).round()
    assert psnr(out[1], a[1]) > psnr(dissolve, a[1]) + 1  # within a shot it is interpolated


def test_duplicate_frame_is_reinterpolated():
    frames, _ = _panning(4, 6)
    true2 = frames[2].copy()
    frames[2] = frames[1]  # a dropped frame, repeated by the encoder
    out, info = interpolate_frames(frames, 2, progress=False, return_info=True)
    assert info["duplicates"] == [2]
    assert psnr(out[4][:, 8:-8], true2[:, 8:-8]) > 30  # the slot now holds the motion, not a stall
    assert psnr(frames[2][:, 8:-8], true2[:, 8:-8]) < 25


def test_interpolate_option_on_every_video_output(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_output_arguments(parser)
    args = parser.parse_args(["-o", str(tmp_path / "v"), "--fps", "6", "--interpolate", "4"])
    frames, _ = _panning(2, 8)
    write_video(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255, args)
    assert "24 fps" in capsys.readouterr().out
    out, _ = video.load(tmp_path / "v")
    assert len(out) == 5
    assert psnr(out[2][:, 8:-8], np.roll(frames[0], -4, axis=1)[:, 8:-8]) > 30
    assert parser.parse_args(["-o", "x.mp4"]).interpolate == 1  # default: off
    from i2v.commands.common import check_output

    for argv, words in ((["--interpolate", "0"], r"between 1 \(off\) and 32"), (["--interpolate", "1000"], r"between 1 \(off\) and 32"), (["--interpolate", "2", "--interpolate-method", "rife"], "checkpoint")):
        with pytest.raises(ConfigError, match=words):  # refused before any long work
            check_output(parser.parse_args(["-o", str(tmp_path / "new.mp4"), *argv]))


# ---------------------------------------------------------------- bad input


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    one = tmp_path / "one"
    video.save(np.zeros((1, 16, 16, 3), np.uint8), one)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    from PIL import Image

    Image.new("RGB", (16, 16)).save(mixed / "a.png")
    Image.new("RGB", (20, 16)).save(mixed / "b.png")
    two = tmp_path / "two"
    video.save(np.zeros((2, 16, 16, 3), np.uint8), two)
    cases = [([str(bad)], "cannot be read"), ([str(one)], "at least 2 frames"), ([str(mixed)], "different sizes"),
             ([str(two), "--factor", "1"], "between 2 and 64"), ([str(two), "--factor", "100000"], "between 2 and 64"), ([str(two), "--method", "rife"], "--checkpoint"),
             ([str(two), "--fps", "30", "--input-fps", "-1"], "fps"),
             ([str(two), "-o", str(two), "--overwrite"], "never overwritten")]
    for argv, words in cases:
        assert main(["interpolate", "-o", str(tmp_path / "out.mp4"), *argv]) == 1, argv
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err, (argv, err)
    with pytest.raises(InputError, match="different sizes"):
        interpolate_frames([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)])
    with pytest.raises(ConfigError, match="method"):
        interpolate_frames(np.zeros((2, 8, 8, 3), np.uint8), method="magic")
    assert not (tmp_path / "out.mp4").exists()
