"""Tutorial 02 runs end to end in its small setting and draws its figure."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_tutorial_02_runs_small(tmp_path):
    env = {**os.environ, "I2V_TUTORIAL_SMALL": "1", "I2V_TUTORIAL_OUT": str(tmp_path),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, str(ROOT / "tutorials" / "02_svd_step_by_step.py")], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "U-Net input (4, 8, 8, 8)" in r.stdout and "frames (2, 3, 64, 64)" in r.stdout
    fig = np.asarray(Image.open(tmp_path / "svd_tiny_frames.png"))
    assert fig.shape == (128, 3 * 128, 3) and fig.std() > 0  # input + 2 frames, drawn at 2x
