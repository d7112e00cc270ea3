"""Runs tutorials/03_flow_and_warping.py in small settings (a subprocess, as a user would) and checks its figures."""

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("03_flow_wheel.png", "03_occlusion_masks.png", "03_splatting.png")


def test_tutorial_runs_small_and_draws_its_figures(tmp_path):
    env = dict(os.environ, I2V_TUTORIAL_SMALL="1", I2V_TUTORIAL_OUT=str(tmp_path), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "tutorials" / "03_flow_and_warping.py")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in FIGURES:
        with Image.open(tmp_path / name) as im:
            assert im.width > 100 and im.height > 50, name
    assert "softmax:" in r.stdout and "DIS medium: end-point error" in r.stdout
