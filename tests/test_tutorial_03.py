"""Runs tutorials/03_flow_and_warping.py in small settings (a subprocess, as a user would), checks its figures, and
checks the numbers it prints against the same quantities computed here with OpenCV and scikit-image directly."""

import re

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from conftest import run_tutorial, shared_path
from i2v.motion.flow import read_flo


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("tutorial03")
    return run_tutorial("03_flow_and_warping.py", out_dir, ("03_flow_wheel.png", "03_occlusion_masks.png", "03_splatting.png"))


def test_tutorial_runs_small_and_draws_its_figures(printed):
    assert "softmax:" in printed and "DIS medium: end-point error" in printed


def test_tutorial_numbers_match_opencv_and_skimage(printed):
    seq = shared_path("data", "flow", "sintel", "alley_1")
    out = printed
    f = 4  # the tutorial's small setting: every 4th pixel, flow vectors divided by 4
    a = cv2.imread(str(seq / "clean" / "frame_0002.png"), cv2.IMREAD_GRAYSCALE)
    b = cv2.imread(str(seq / "clean" / "frame_0003.png"), cv2.IMREAD_GRAYSCALE)
    h, w = a.shape[0] // f * f, a.shape[1] // f * f
    a, b = np.ascontiguousarray(a[:h:f, :w:f]), np.ascontiguousarray(b[:h:f, :w:f])
    gt = read_flo(seq / "gt" / "frame_0002.flo")[:h:f, :w:f] / f
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)
    epe = np.linalg.norm(flow.astype(np.float64) - gt, axis=-1).mean()
    zero = np.linalg.norm(gt.astype(np.float64), axis=-1).mean()
    m = re.search(r"DIS medium: end-point error ([\d.]+) px \(zero flow: ([\d.]+) px\)", out)
    assert float(m.group(1)) == pytest.approx(epe, abs=1.5e-3) and float(m.group(2)) == pytest.approx(zero, abs=1.5e-3)
    # "frame 3 as is" against frame 2 on the pixels the ground truth calls visible
    rgb = [cv2.cvtColor(cv2.imread(str(seq / "clean" / n)), cv2.COLOR_BGR2RGB)[:h:f, :w:f]
           for n in ("frame_0002.png", "frame_0003.png")]
    vis = cv2.imread(str(seq / "gt" / "occlusions_0002.png"), cv2.IMREAD_GRAYSCALE)[:h:f, :w:f] <= 127
    as_is = peak_signal_noise_ratio(rgb[0][vis], rgb[1][vis], data_range=255)
    m = re.search(r"\(frame 3 as is: ([\d.]+) dB\)", out)
    assert float(m.group(1)) == pytest.approx(as_is, abs=0.006)
