"""tutorials/06_train_your_own.py runs end to end in small mode, draws its figures, and its evaluation table's
static baseline equals PSNR computed here with scikit-image on the same held-out clips."""

import re

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from conftest import run_tutorial
from i2v.data.procedural import MOTIONS, clip_seed, make_clip


def test_tutorial_06_small(tmp_path):
    out = run_tutorial("06_train_your_own.py", tmp_path, ("06_data.png", "06_loss.png", "06_samples.png"))
    assert "| pan-left |" in out and "tutorial model" in out
    frames, size = map(int, re.search(r"held-out clips: (\d+) frames at (\d+)x", out).groups())
    for motion in ("pan-left", "zoom-in"):
        clip = make_clip(clip_seed("eval", 1000 * MOTIONS.index(motion)), motion=motion, frames=frames, size=size)
        static = np.mean([peak_signal_noise_ratio(clip.frames[k].astype(np.float64), clip.frames[0].astype(np.float64),
                                                  data_range=1.0) for k in range(1, frames)])
        row = re.search(rf"\| {motion} \| ([\d.]+) / ", out)
        assert float(row.group(1)) == pytest.approx(static, abs=0.006), motion
    with Image.open(tmp_path / "06_samples.png") as im:
        assert im.width > 32
