"""Speed of the motion primitives: backward warp, softmax splatting, and a 48-frame camera move, at 512x512 and
1024x576, on CPU (and CUDA when available). Splatting is also timed against grid_sample's backward warp of the same
image in the same process, and printed as a ratio (machine-independent).

    python benchmarks/motion.py [--frames 48] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: use this repository's i2v
from i2v.motion.camera import render_camera_move
from i2v.motion.warp import backward_warp, forward_splat

SIZES = ((512, 512), (576, 1024))  # (h, w)


def timeit(fn, repeats: int, sync) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench(device: str, frames: int, repeats: int) -> None:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    print(f"\n{device} ({torch.get_num_threads()} threads)" if device == "cpu" else f"\n{device} ({torch.cuda.get_device_name()})")
    print(f"{'size':>10} {'warp fps':>10} {'softmax fps':>12} {'average fps':>12} {'splat/warp':>11} "
          f"{'camera {0} frames s'.format(frames):>19} {'camera fps':>11}")
    for h, w in SIZES:
        img = torch.rand(1, 3, h, w, generator=g).to(device)
        flow = (torch.randn(1, 2, h, w, generator=g) * 3).to(device)
        metric = torch.rand(1, 1, h, w, generator=g).to(device)
        t_warp = timeit(lambda: backward_warp(img, flow), repeats, sync)
        t_soft = timeit(lambda: forward_splat(img, flow, "softmax", metric), repeats, sync)
        t_avg = timeit(lambda: forward_splat(img, flow, "average"), repeats, sync)
        photo = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
        yy, xx = np.mgrid[0:h, 0:w]
        depth = (3.0 - 2.0 * yy / h).astype(np.float32)  # a ground plane ...
        depth[((xx - w / 2) / (w / 5)) ** 2 + ((yy - h / 2) / (h / 4)) ** 2 < 1] = 0.8  # ... and a near subject
        t0 = time.perf_counter()
        render_camera_move(photo, depth, move="orbit", frames=frames, device=device, progress=False, verbose=False)
        sync()
        t_cam = time.perf_counter() - t0
        print(f"{w:>5}x{h:<4} {1 / t_warp:>10.1f} {1 / t_soft:>12.1f} {1 / t_avg:>12.1f} {t_soft / t_warp:>10.1f}x "
              f"{t_cam:>19.2f} {frames / t_cam:>11.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}")
    bench("cpu", args.frames, args.repeats)
    if torch.cuda.is_available():
        bench("cuda", args.frames, args.repeats)


if __name__ == "__main__":
    main()
