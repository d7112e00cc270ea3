"""The evaluation's metrics and baselines, checked against independent computations (scikit-image's PSNR,
exact pixel shifts), so the table's static and oracle rows mean what they say."""

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from i2v.data.procedural import PAN_PX, make_clip
from i2v.evaluate import eval_clips, evaluate, format_table, oracle_prediction, samples_figure, static_prediction
from i2v.metrics import flicker, psnr, warping_error



def test_psnr_matches_scikit_image():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 16, 16, 3)), rng.random((3, 16, 16, 3))
    expect = np.mean([peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(a, b)])
    assert psnr(a, b) == pytest.approx(expect, rel=1e-9)


def test_oracle_and_static_baselines_independently():
    clip = make_clip(9, motion="pan-left", speed=1 / PAN_PX, frames=5, size=32, sprites=0)  # 1 px per frame, +x
    oracle, static = oracle_prediction(clip), static_prediction(clip)
    for k in range(5):
        assert np.array_equal(static[k], clip.frames[0])
        rolled = np.roll(clip.frames[0], k, axis=1)  # content moved k pixels right
        np.testing.assert_allclose(oracle[k][:, k:], rolled[:, k:], atol=1e-5)
        np.testing.assert_allclose(oracle[k][:, k:], clip.frames[k][:, k:], atol=1e-5)


def test_temporal_metrics():
    still = np.repeat(np.random.default_rng(1).random((1, 32, 32, 3)), 4, axis=0).astype(np.float32)
    assert flicker(still) == 0 and warping_error(still) < 1e-6
    clip = make_clip(9, motion="pan-right", speed=1 / PAN_PX, frames=4, size=64, sprites=0)
    # a pure 1-px pan: large frame differences, but the flow explains them
    assert warping_error(clip.frames) < 0.25 * flicker(clip.frames)
    noise = clip.frames + np.random.default_rng(2).normal(0, 0.05, clip.frames.shape).astype(np.float32)
    assert warping_error(noise) > 2 * warping_error(clip.frames)


def test_evaluate_baselines_table():
    report = evaluate({}, clips_per_class=1, motions=("static", "pan-down"), progress=False)
    clip = next(c for c in eval_clips(1, motions=("pan-down",)))
    expect = np.mean([peak_signal_noise_ratio(clip.frames[k], clip.frames[0], data_range=1.0) for k in range(1, 16)])
    assert report.scores["static"]["pan-down"][0] == pytest.approx(expect, rel=1e-6)
    assert report.scores["static"]["static"][0] == pytest.approx(100.0)  # perfect: MSE floor 1e-10
    assert report.scores["oracle"]["pan-down"][0] > expect + 5
    table = format_table(report)
    assert "| pan-down |" in table and "gain over static" in table and "ground truth" in table


def test_kept_clips_and_samples_figure(tmp_path):
    kept = {}
    evaluate({}, clips_per_class=1, motions=("static", "pan-left"), progress=False, keep=kept)
    clip = next(c for c in eval_clips(1, motions=("pan-left",)))
    assert set(kept) == {"static", "pan-left"} and np.array_equal(kept["pan-left"]["truth"], clip.frames)
    path = samples_figure(kept, tmp_path / "s.png", motions=("pan-left",), every=5, scale=1)
    fig = np.asarray(Image.open(path).convert("RGB"))
    # rows: truth, oracle (static is left out); columns frames 0, 5, 10, 15 after a 150 px label column
    truth3 = (np.clip(clip.frames[10], 0, 1) * 255).round().astype(np.uint8)
    assert np.array_equal(fig[0:64, 150 + 2 * 66:150 + 2 * 66 + 64], truth3)
    assert fig.shape == (2 * 66 + 6, 150 + 4 * 66, 3)
    assert not list(tmp_path.glob("*.tmp*"))


def test_cli_eval_json_figure_and_merge(tmp_path, capsys):
    """`i2v eval` end to end on a tiny freshly initialised model: the table, --json, --figure, --merge."""
    from i2v.cli import main
    from i2v.train import build_model, export_model, load_config

    cfg = load_config("configs/builtin_dit.toml", ["dit.dim=32", "dit.depth=1", "data.frames=4", "data.size=32"])
    export_model(tmp_path / "model.safetensors", build_model(cfg), cfg, step=0, minutes=0.0)
    j, fig = tmp_path / "d.json", tmp_path / "d.png"
    assert main(["eval", "--weights", str(tmp_path / "model.safetensors"), "--clips-per-class", "1", "--steps", "2",
                 "--json", str(j), "--figure", str(fig)]) == 0
    out = capsys.readouterr().out
    assert "| pan-left |" in out and "dit (" in out and fig.exists() and j.exists()
    assert main(["eval", "--merge", str(j)]) == 0
    assert "gain over static" in capsys.readouterr().out
