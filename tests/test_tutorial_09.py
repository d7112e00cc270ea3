"""Runs tutorials/09_learned_flow_and_depth.py in small settings (a subprocess, as a user would), checks its figures,
and checks the numbers it prints against values computed here independently: OpenCV's DIS and numpy for the flow
errors, the ORIGINAL RAFT code's flow (../shared/reference/raft-large, made by princeton-vl/RAFT on the same
resized pair with the same weights) for RAFT's errors, the ORIGINAL Depth Anything V2 code's depth
(../shared/reference/dav2-tiny, Teddy at input size 266) for the depth statistics, and the closed forms of the
camera conversion (z = 1 / (d / max d + 1 / (R - 1)), median 1) and of a sideways camera slide (shift f b / z).
A second run without ../shared checks that the tutorial falls back to synthetic data and random models."""

import math
import re

import cv2
import numpy as np
import pytest

from conftest import run_tutorial, shared_path
from i2v.motion.flow import read_flo

FIGURES = ("09_correlation.png", "09_correlation_patches.png", "09_gru_update.png", "09_iterations.png",
           "09_raft_vs_dis.png", "09_depth_camera.png")
SMALL_HW = (130, 316)  # the tutorial's small Sintel size = the RAFT reference case's (cv2.INTER_AREA)


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    return run_tutorial("09_learned_flow_and_depth.py", tmp_path_factory.mktemp("tutorial09"), FIGURES)


def number(pattern, text):
    m = re.search(pattern, text)
    assert m, f"not printed: {pattern}"
    return [float(g) for g in m.groups()]


def sintel_small():
    """alley_1 frames 2, 3 (BGR) and the true flow, resized here with OpenCV as the tutorial says."""
    seq = shared_path("data", "flow", "sintel", "alley_1")
    h, w = SMALL_HW
    imgs = [cv2.resize(cv2.imread(str(seq / "clean" / n)), (w, h), interpolation=cv2.INTER_AREA)
            for n in ("frame_0002.png", "frame_0003.png")]
    gt = read_flo(seq / "gt" / "frame_0002.flo")
    gt = cv2.resize(gt, (w, h), interpolation=cv2.INTER_AREA) * np.float32([w / gt.shape[1], h / gt.shape[0]])
    return imgs, gt.astype(np.float64)


def epe(flow, gt):
    return float(np.linalg.norm(np.asarray(flow, np.float64) - gt, axis=-1).mean())


def test_tutorial_runs_small_and_draws_its_figures(printed):
    assert "RANDOM weights" in printed  # the reference weights are random, and the tutorial says so
    assert "RAFT after iteration 12" in printed and "orbit by 10 degrees with the fallback prior" in printed


def test_flow_errors_match_opencv_dis_and_the_original_raft(printed, tmp_path):
    imgs, gt = sintel_small()
    # DIS: grey images as cv2.imread(IMREAD_GRAYSCALE) makes them from a colour PNG (written here, read back)
    grey = []
    for k, img in enumerate(imgs):
        cv2.imwrite(str(tmp_path / f"{k}.png"), img)
        grey.append(cv2.imread(str(tmp_path / f"{k}.png"), cv2.IMREAD_GRAYSCALE))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(grey[0], grey[1], None)
    e_dis, e_raft, zero = number(r"DIS medium ([\d.]+) px, RAFT \(12 iterations\) ([\d.]+) px, zero flow ([\d.]+) px",
                                 printed)
    assert zero == pytest.approx(np.linalg.norm(gt, axis=-1).mean(), abs=1.5e-4)
    assert e_dis == pytest.approx(epe(dis, gt), abs=1.5e-4)
    # RAFT: the original code's flow on the same pair (its inputs are this resize, bit for bit) with the same file
    from safetensors.numpy import load_file

    ref = load_file(shared_path("reference", "raft-large", "expected.safetensors"))
    rgb = np.stack([cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for im in imgs]).astype(np.float32)
    assert np.array_equal(ref["inputs.image1"][0].transpose(1, 2, 0), rgb[0])  # the same input, so the same case
    assert e_raft == pytest.approx(epe(ref["flow_up"][0].transpose(1, 2, 0), gt), abs=1e-3)
    left, right, top, bottom = 2, 2, 3, 3  # case.json's pad_ltrb
    iter1 = ref["flow_iter1_padded"][0, :, top:-bottom, left:-right].transpose(1, 2, 0)
    (e1,) = number(r"RAFT after iteration  1: end-point error ([\d.]+) px", printed)
    assert e1 == pytest.approx(epe(iter1, gt), abs=1.5e-3)


def test_depth_and_camera_numbers_match_the_original_and_the_closed_forms(printed):
    from safetensors.numpy import load_file

    d = load_file(shared_path("reference", "dav2-tiny", "expected.safetensors"))["depth_full"].astype(np.float64)
    teddy = shared_path("data", "stereo", "teddy")
    disp = cv2.imread(str(teddy / "disp2.pgm"), cv2.IMREAD_UNCHANGED).astype(np.float64) / 4
    lo, hi, mean, r = number(r"inverse depth min ([\d.-]+), max ([\d.-]+), mean ([\d.-]+); correlation with the true "
                             r"disparity ([\d.-]+)", printed)
    assert (lo, hi, mean) == pytest.approx((d.min(), d.max(), d.mean()), abs=1.5e-4)
    known = disp > 0
    assert r == pytest.approx(np.corrcoef(d[known], disp[known])[0, 1], abs=1.5e-3)
    # to_camera_depth's stated shift, written out here: z = 1 / (d / max d + 1 / (R - 1)), then z / median z
    R = 10.0
    z = 1 / (np.maximum(d, 0) / d.max() + 1 / (R - 1))
    z /= np.median(z)
    near, far, ratio = number(r"camera depth: nearest ([\d.]+), farthest ([\d.]+) \(ratio ([\d.]+)", printed)
    assert (near, far, ratio) == pytest.approx((z.min(), z.max(), z.max() / z.min()), abs=2e-4)
    # truck-right by b median depths: a pinhole camera with a 60 degree horizontal field of view, f = (w/2)/tan(30)
    f = d.shape[1] / 2 / math.tan(math.radians(30))
    b, f_printed, slow, fast = number(r"truck-right by ([\d.]+) median depths, f = ([\d.]+) px: .*?, ([\d.]+) px "
                                      r"\(farthest\) to ([\d.]+) px \(nearest\)", printed)
    assert f_printed == pytest.approx(f, abs=6e-3)
    assert (slow, fast) == pytest.approx((f * b / z.max(), f * b / z.min()), abs=2e-3)


def test_tutorial_runs_without_shared(tmp_path, monkeypatch):
    """No ../shared (a fresh clone): synthetic images, random models built in the script, said plainly."""
    monkeypatch.setenv("I2V_SHARED", str(tmp_path / "absent"))
    for var in ("I2V_RAFT_WEIGHTS", "I2V_DAV2_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    out = run_tutorial("09_learned_flow_and_depth.py", tmp_path, FIGURES)
    assert "a randomly initialised RAFT large" in out and "a randomly initialised tiny Depth Anything V2" in out
    assert "a synthetic pair" in out and "the synthetic scene" in out
    # the synthetic pair's zero-flow error is known exactly: 3 px everywhere, 10 px on the moving square
    h, w = 136, 320
    s = h // 3
    expected = (3 * (h * w - s * s) + 10 * s * s) / (h * w)
    (zero,) = number(r"zero flow end-point error ([\d.]+) px", out)
    assert zero == pytest.approx(expected, abs=1.5e-4)
