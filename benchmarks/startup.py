"""Start-up time of the command line: `i2v --help`, `i2v samplers`, `i2v inspect <weights>` and `i2v flow a b`
(classical DIS) against `python -c "import cv2"`, the floor any OpenCV-based command pays. Target: <= 1.5x.

    python benchmarks/startup.py [--repeats 5]

Each command runs in a fresh interpreter (as a user's shell starts it); the best of --repeats wall times is kept,
after one warm-up run. Bytecode caching is on, as in a user's install (this sandbox sets PYTHONDONTWRITEBYTECODE,
which would make every run recompile i2v's sources; packages installed by pip ship their bytecode either way).
One process at a time, no threads to set (nothing here computes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def best_of(cmd: list[str], repeats: int) -> float:
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, env=ENV)  # warm-up: bytecode written
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, env=ENV)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as d:
        rng = np.random.default_rng(0)
        img = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(f"{d}/a.png")
        Image.fromarray(np.roll(img, 3, axis=1)).save(f"{d}/b.png")
        floor = best_of([py, "-c", "import cv2"], args.repeats)
        torch = best_of([py, "-c", "import torch"], args.repeats)
        rows = {
            "i2v --help": [py, "-m", "i2v", "--help"],
            "i2v samplers": [py, "-m", "i2v", "samplers"],
            "i2v inspect weights/builtin_unet.safetensors": [py, "-m", "i2v", "inspect", "weights/builtin_unet.safetensors"],
            "i2v flow a.png b.png (DIS, 320x240)": [py, "-m", "i2v", "flow", f"{d}/a.png", f"{d}/b.png", "-o", f"{d}/f.flo",
                                                   "--overwrite", "--threads", "1"],
        }
        print(f"reference: python -c 'import cv2' {floor:.3f} s; python -c 'import torch' {torch:.3f} s "
              f"(best of {args.repeats})")
        for name, cmd in rows.items():
            t = best_of(cmd, args.repeats)
            print(f"{name:<48} {t:6.3f} s   {t / floor:4.2f}x import cv2   (target <= 1.5x)")


if __name__ == "__main__":
    main()
