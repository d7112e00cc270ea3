"""Tutorial 02 runs end to end in its small setting, draws its figure, and prints the preconditioning, the
schedule and the guidance ramp as the formulas give them (computed here independently)."""

import math
import re

import numpy as np
from PIL import Image

from conftest import run_tutorial


def test_tutorial_02_runs_small_and_its_numbers_are_the_formulas(tmp_path):
    out = run_tutorial("02_svd_step_by_step.py", tmp_path, ("svd_tiny_frames.png",))
    assert "U-Net input (4, 8, 8, 8)" in out and "frames (2, 3, 64, 64)" in out
    fig = np.asarray(Image.open(tmp_path / "svd_tiny_frames.png"))
    assert fig.shape == (128, 3 * 128, 3) and fig.std() > 0  # input + 2 frames, drawn at 2x

    # EDM-v preconditioning at SVD's sigma_max (Karras et al. 2022, Table 1 with sigma_data = 1)
    m = re.search(r"sigma_0=([\d.]+): c_skip=([-\d.e+]+) c_out=([-\d.]+) c_in=([-\d.e+]+) c_noise=([-\d.]+)", out)
    s = float(m.group(1))
    assert s == 700.0
    expected = (1 / (s**2 + 1), -s / math.sqrt(s**2 + 1), 1 / math.sqrt(s**2 + 1), 0.25 * math.log(s))
    for printed, value in zip(m.groups()[1:], expected):
        assert float(printed) == float(f"{value:{'.2e' if abs(value) < 1e-2 else '.3f'}}")
    # the second of 4 Karras sigmas, eq. 5 with rho 7 between 0.002 and 700
    rho = 7.0
    sigma_1 = (700 ** (1 / rho) + (1 / 3) * (0.002 ** (1 / rho) - 700 ** (1 / rho))) ** rho
    assert f"(sigma 700 -> {sigma_1:.1f})" in out
    # the per-frame guidance ramp linspace(1.0, 2.5, T) of SVD's LinearPredictionGuider, T = 4
    assert "CFG scale per frame: [1.0, 1.5, 2.0, 2.5]" in out
