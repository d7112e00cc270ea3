"""tutorials/06_train_your_own.py runs end to end in small mode and draws its figures."""

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_tutorial_06_small(tmp_path):
    env = dict(os.environ, I2V_TUTORIAL_SMALL="1", I2V_TUTORIAL_OUT=str(tmp_path), PYTHONPATH=str(ROOT),
               OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "tutorials" / "06_train_your_own.py")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("06_data.png", "06_loss.png", "06_samples.png"):
        with Image.open(tmp_path / name) as im:
            assert im.width > 32 and im.height > 32
    assert "| pan-left |" in r.stdout and "tutorial model" in r.stdout
