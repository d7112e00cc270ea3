"""Runs tutorials/04_camera_and_cinemagraph.py in small settings (a subprocess, as a user would) and checks its figures."""

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("04_camera_point_cloud.png", "04_camera_moves.png", "04_cinemagraph_strip.png")


def test_tutorial_runs_small_and_draws_its_figures(tmp_path):
    env = dict(os.environ, I2V_TUTORIAL_SMALL="1", I2V_TUTORIAL_OUT=str(tmp_path), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "tutorials" / "04_camera_and_cinemagraph.py")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in FIGURES:
        with Image.open(tmp_path / name) as im:
            assert im.width > 100 and im.height > 50, name
    assert "frame N == frame 0: True" in r.stdout  # the loop closes
