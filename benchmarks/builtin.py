"""Benchmark the built-in model on this machine: seconds to generate 16 frames at 64x64 with 20 steps per
backbone (target: under 5 s on 2 CPU cores) and training steps per second at the shipped presets.

    python benchmarks/builtin.py [--threads 2] [--repeats 3] [--train-steps 5]

Run it from the repository root (it reads configs/builtin_*.toml and weights/); in a checkout without an
installed i2v, prefix ``PYTHONPATH=.``.

Times vary with the machine and its load, so each figure is also printed as a ratio to a reference workload
run in the same process (a float32 512x512 matmul chain, ~1 GFLOP): compare ratios between machines, seconds
only on one machine.
"""

from __future__ import annotations

import argparse
import time

import torch


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


def bench_generate(backbone: str, repeats: int, steps: int = 20) -> float:
    from i2v.pipelines.builtin import BuiltinPipeline
    pipe = BuiltinPipeline.load(backbone)
    image = torch.rand(64, 64, 3).numpy()
    pipe(image, motion="zoom-in", steps=2, progress=False)  # warm-up
    best = float("inf")
    for r in range(repeats):
        t = time.perf_counter()
        pipe(image, motion="pan-left", steps=steps, seed=r, progress=False)
        best = min(best, time.perf_counter() - t)
    return best


def bench_train(backbone: str, steps: int) -> float:
    import tempfile

    from i2v.train import load_config, train
    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(f"configs/builtin_{backbone}.toml",
                          [f"train.steps={steps + 2}", f"train.out_dir='{d}'", "train.checkpoint_every=100000"])
        times = train(cfg, progress=False, log=lambda *a: None)["times"]
    return (len(times) - 2) / (times[-1] - times[1])  # steps 3.. (the first pay for allocation, texture loading)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ref = reference_seconds()
    print(f"torch {torch.__version__}, {args.threads} threads; reference workload {ref * 1000:.1f} ms")
    print(f"{'backbone':<8} {'generate 16f/20 steps':>22} {'vs 5 s target':>14} {'/ reference':>12} "
          f"{'train steps/s':>14} {'/ reference':>12}")
    for b in ("unet", "dit"):
        sec = bench_generate(b, args.repeats)
        sps = bench_train(b, args.train_steps)
        print(f"{b:<8} {sec:>20.2f} s {sec / 5:>13.2f}x {sec / ref:>12.0f} {sps:>14.3f} {sps * ref:>12.4f}")


if __name__ == "__main__":
    main()
