"""Tutorial 01 runs as plain Python in small settings, writes its figures, and its printed numbers agree with
the analytic answers it states (noise std = sigma; perfect samples of the toy mixture have a mean nearest-mode
distance of s * sqrt(pi / 2))."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ["01_forward_noising.png", "01_sampler_trajectories.png", "01_samples_vs_steps.png"]


def test_tutorial_01_runs_small_and_writes_its_figures(tmp_path):
    env = {**os.environ, "I2V_TUTORIAL_SMALL": "1", "I2V_TUTORIAL_OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "tutorials" / "01_noise_and_samplers.py")], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    for name in FIGURES:
        path = tmp_path / name
        assert path.exists(), f"{name} not written; stdout:\n{out}"
        assert path.stat().st_size < 1_000_000
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        assert img.shape[0] > 100 and img.shape[1] > 200 and img.std() > 10, f"{name} looks blank"

    # forward noising: the measured std of x - x0 is sigma
    for sigma, measured in re.findall(r"sigma\s+([\d.]+): .*std\(x - x0\) = ([\d.]+)", out):
        assert float(measured) == pytest.approx(float(sigma), rel=0.05, abs=1e-9)

    # the quality table: at its largest step count dpmpp_2m is within 15% of the ideal nearest-mode distance
    table = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", out, flags=re.M)
    assert table, out
    ideal = 0.15 * math.sqrt(math.pi / 2)
    steps, euler, dpmpp_2m, ancestral = table[-1]
    assert abs(float(dpmpp_2m) - ideal) < 0.15 * ideal, table
    first = table[0]
    assert float(first[2]) > float(dpmpp_2m)  # fewer steps, worse samples

