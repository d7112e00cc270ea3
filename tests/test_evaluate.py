"""The evaluation's metrics and baselines, checked against independent computations (scikit-image's PSNR,
exact pixel shifts), so the table's static and oracle rows mean what they say."""

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from i2v.data.procedural import PAN_PX, make_clip
from i2v.evaluate import (eval_clips, evaluate, flicker, format_table, oracle_prediction, psnr, static_prediction,
                          warping_error)



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
