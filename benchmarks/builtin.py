"""Benchmark the built-in model on this machine: seconds to generate 16 frames at 64x64 with 20 steps per
backbone (target: under 5 s on 2 CPU cores), training steps per second at the shipped presets, the
full-resolution default against the 64x64 path, and the default thread count against one thread.

    python benchmarks/builtin.py [--threads 2] [--repeats 3] [--train-steps 5] [--skip-train]

Run it from the repository root (it reads configs/builtin_*.toml and weights/); in a checkout without an
installed i2v, prefix ``PYTHONPATH=.``.

Times vary with the machine and its load, so each figure is also printed as a ratio to a reference run in the
same process: the first table against a float32 512x512 matmul chain (~1 GFLOP; compare ratios between
machines, seconds only on one machine), the others against the 64x64 path or one thread:

- **full resolution** (one thread, 16 frames, 20 steps, the U-Net and the DiT): ``pipe(photo)`` on a 640x480
  photo (motion at 64x48, rendered at 640x480) against ``pipe(photo, size=64)``, the model's own 64x64 output:
  seconds (target <= 2x) and the peak resident memory during each call (sampled every 2 ms; the process's
  memory before the call, weights and torch included, is in both);
- **threads**: generation at 64x64 with ``i2v.runtime.default_threads()`` (the default of every command)
  against ``--threads 1`` (target <= 1.2x: the default must not oversubscribe a busy machine).
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import torch

from i2v.runtime import default_threads, set_threads


def reference_seconds(repeats: int = 3) -> float:
    a = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x = a
        for _ in range(4):  # 4 x 2 * 512^3 = 1.07 GFLOP
            x = (x @ a) / 512**0.5
        best = min(best, time.perf_counter() - t)
    return best


def best_seconds(fn, repeats: int) -> float:
    fn(0)  # warm-up
    best = float("inf")
    for r in range(repeats):
        t = time.perf_counter()
        fn(r)
        best = min(best, time.perf_counter() - t)
    return best


def bench_generate(backbone: str, repeats: int, steps: int = 20) -> float:
    from i2v.pipelines.builtin import BuiltinPipeline
    pipe = BuiltinPipeline.load(backbone)
    image = torch.rand(64, 64, 3).numpy()
    return best_seconds(lambda r: pipe(image, motion="pan-left", steps=steps, seed=r, progress=False), repeats)


def bench_train(backbone: str, steps: int) -> float:
    import tempfile

    from i2v.train import load_config, train
    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(f"configs/builtin_{backbone}.toml",
                          [f"train.steps={steps + 2}", f"train.out_dir='{d}'", "train.checkpoint_every=100000"])
        times = train(cfg, progress=False, log=lambda *a: None)["times"]
    return (len(times) - 2) / (times[-1] - times[1])  # steps 3.. (the first pay for allocation, texture loading)


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; elsewhere the peak so far, from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource
        import sys
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024


def peak_rss_during(fn) -> int:
    """The largest resident set size seen while ``fn()`` runs (sampled every 2 ms by a second thread)."""
    peak, done = [rss_bytes()], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    try:
        fn()
    finally:
        done.set()
        w.join()
    return max(peak[0], rss_bytes())


def test_photo():
    """A 640x480 photograph: scikit-image's coffee (600x400), resized."""
    import cv2
    import skimage.data
    return cv2.resize(skimage.data.coffee(), (640, 480), interpolation=cv2.INTER_CUBIC)


def bench_fullres(backbone: str, repeats: int, steps: int = 20):
    """(seconds 64x64, seconds full, peak RSS 64x64, peak RSS full) on the 640x480 photo, 16 frames."""
    from i2v.pipelines.builtin import BuiltinPipeline
    pipe = BuiltinPipeline.load(backbone)
    photo = test_photo()
    runs = {"64": dict(size=64), "full": {}}
    # memory first, the small path first: freed memory may stay resident and would count for the next call
    mem = {k: peak_rss_during(lambda kw=kw: pipe(photo, motion="rotate-cw", steps=steps, progress=False, **kw))
           for k, kw in runs.items()}
    sec = {k: best_seconds(lambda r, kw=kw: pipe(photo, motion="rotate-cw", steps=steps, seed=r, progress=False,
                                                 **kw), repeats) for k, kw in runs.items()}
    return sec["64"], sec["full"], mem["64"], mem["full"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=default_threads(),
                    help=f"threads for the first table (default: i2v's default here, {default_threads()})")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=5)
    ap.add_argument("--skip-train", action="store_true", help="leave out the training steps/s column")
    args = ap.parse_args()

    set_threads(args.threads)
    ref = reference_seconds()
    print(f"torch {torch.__version__}, {args.threads} threads; reference workload {ref * 1000:.1f} ms")
    print(f"{'backbone':<8} {'generate 16f/20 steps':>22} {'vs 5 s target':>14} {'/ reference':>12} "
          f"{'train steps/s':>14} {'/ reference':>12}")
    for b in ("unet", "dit"):
        sec = bench_generate(b, args.repeats)
        if args.skip_train:
            print(f"{b:<8} {sec:>20.2f} s {sec / 5:>13.2f}x {sec / ref:>12.0f}")
            continue
        sps = bench_train(b, args.train_steps)
        print(f"{b:<8} {sec:>20.2f} s {sec / 5:>13.2f}x {sec / ref:>12.0f} {sps:>14.3f} {sps * ref:>12.4f}")

    set_threads(1)
    print("\nfull resolution: 640x480 photo, 16 frames, 20 steps, 1 thread; ratio = full / 64x64 (target <= 2x)")
    print(f"{'backbone':<8} {'64x64 s':>9} {'full s':>9} {'time ratio':>11} {'64x64 peak':>11} {'full peak':>10} "
          f"{'memory ratio':>13}")
    for b in ("unet", "dit"):
        s64, sfull, m64, mfull = bench_fullres(b, args.repeats)
        print(f"{b:<8} {s64:>9.2f} {sfull:>9.2f} {sfull / s64:>10.2f}x {m64 / 2**20:>7.0f} MiB "
              f"{mfull / 2**20:>6.0f} MiB {mfull / m64:>12.2f}x")

    n = default_threads()
    print(f"\nthreads: generation at 64x64, the default ({n} threads on {os.cpu_count()} cores) vs 1 thread "
          f"(target <= 1.2x)")
    print(f"{'backbone':<8} {'1 thread s':>11} {f'{n} threads s':>12} {'ratio':>7}")
    for b in ("unet", "dit"):
        set_threads(1)
        one = bench_generate(b, args.repeats)
        set_threads(n)
        many = bench_generate(b, args.repeats)
        print(f"{b:<8} {one:>11.2f} {many:>12.2f} {many / one:>6.2f}x")


if __name__ == "__main__":
    main()
