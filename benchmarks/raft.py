"""RAFT (i2v/models/raft/raft.py) beside OpenCV DIS, and the memory of RAFT's correlation volume.

1. Speed: RAFT large (the raft-things.pth architecture, random weights -- the time does not depend on them) at
   640x480 with 12 iterations, against DIS medium (``i2v.motion.flow.estimate_flow``) on the same frames, in one
   process, interleaved; pairs/s of each and the time ratio.
2. Memory at Sintel's 1024x436: the peak memory of building the all-pairs correlation pyramid and one lookup,
   against the on-demand lookup (``alternate_corr=True``), measured (CPU: replay of the PyTorch profiler's
   allocation records, as benchmarks/svd_unet.py; CUDA: the allocator's peak), beside the volume's size by
   formula; then the peak of a whole forward pass (2 iterations) with each.

    python benchmarks/raft.py [--threads 1] [--repeats 3] [--device cpu|cuda] [--iters 12]

Frames: Sintel alley_1 frames 2 -> 3 from ../shared/data/flow when present (resized), else a random texture
shifted by (3, 2) px.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: use this repository's i2v
from i2v.models.raft.raft import DOWN, LEVELS, Config, CorrPyramid, OnDemandCorr, RAFT, estimate, padding
from i2v.motion.flow import estimate_flow

SINTEL = Path(__file__).resolve().parents[2] / "shared" / "data" / "flow" / "sintel" / "alley_1" / "clean"


def frames(w: int, h: int) -> tuple[np.ndarray, np.ndarray, str]:
    import cv2

    if (SINTEL / "frame_0002.png").exists():
        a, b = (cv2.resize(cv2.imread(str(SINTEL / f"frame_000{i}.png"))[:, :, ::-1], (w, h),
                           interpolation=cv2.INTER_AREA) for i in (2, 3))
        return np.ascontiguousarray(a), np.ascontiguousarray(b), "Sintel alley_1 2->3"
    rng = np.random.default_rng(0)
    a = cv2.GaussianBlur(rng.integers(0, 256, (h + 8, w + 8, 3), dtype=np.uint8), (5, 5), 1.5)
    return a[4:-4, 4:-4].copy(), a[2:-6, 1:-7].copy(), "random texture shifted by (3, 2) px"


def random_raft(device) -> RAFT:
    """Full-size large RAFT with PyTorch's default init and randomised batch-norm statistics."""
    torch.manual_seed(0)
    model = RAFT(Config())
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.normal_(0, 0.1)
        elif name.endswith("running_var"):
            buf.uniform_(0.5, 1.5)
    return model.eval().to(device)


def peak_bytes(fn, device) -> int:
    """Peak memory allocated while running fn(), above what was allocated before (see benchmarks/svd_unet.py)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = []
    for e in prof.events():
        if e.name == "[memory]":
            records.append((e.time_range.start, e.cpu_memory_usage))
        elif e.self_cpu_memory_usage:
            records.append((e.time_range.start, e.self_cpu_memory_usage))
    now = peak = 0
    for _, n in sorted(records, key=lambda r: r[0]):
        now += n
        peak = max(peak, now)
    return peak


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def volume_bytes(h: int, w: int) -> int:
    """Bytes of the float32 pyramid C^0..C^3 for an h x w image (after padding to multiples of 8)."""
    l, r, t, b = padding(h, w)
    h8, w8 = (h + t + b) // DOWN, (w + l + r) // DOWN
    total, (hh, ww) = 0, (h8, w8)
    for _ in range(LEVELS):
        total += h8 * w8 * hh * ww * 4
        hh, ww = hh // 2, ww // 2
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: steady on a shared machine); OpenCV gets the same number")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    import cv2

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    device = torch.device(args.device)
    model = random_raft(device)
    n_params = sum(p.numel() for p in model.parameters())
    a, b, what = frames(640, 480)
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f", threads={torch.get_num_threads()}"))

    # 1. speed at 640x480
    run_raft = lambda: estimate(model, a, b, iters=args.iters)  # noqa: E731
    run_dis = lambda: estimate_flow(a, b, method="dis", preset="medium")  # noqa: E731
    run_raft(), run_dis()  # warm-up
    t_raft, t_dis = [], []
    for _ in range(args.repeats):  # interleaved, so background load hits both alike
        t_raft.append(timed(run_raft, device))
        t_dis.append(timed(run_dis, torch.device("cpu")))
    tr, td = statistics.median(t_raft), statistics.median(t_dis)
    print(f"\n640x480 ({what}), median of {args.repeats}:")
    print(f"  RAFT large ({n_params / 1e6:.2f} M parameters, {args.iters} iterations, {device}): {tr:.3f} s = "
          f"{1 / tr:.2f} pairs/s")
    print(f"  OpenCV DIS medium (CPU, {cv2.getNumThreads()} threads): {td * 1000:.1f} ms = {1 / td:.1f} pairs/s")
    print(f"  RAFT / DIS time: {tr / td:.0f}x")

    # 2. correlation memory at 1024x436
    h, w = 436, 1024
    l, r, t, bt = padding(h, w)
    h8, w8 = (h + t + bt) // DOWN, (w + l + r) // DOWN
    g = torch.Generator().manual_seed(0)
    f1, f2 = (torch.randn(1, 256, h8, w8, generator=g).to(device) for _ in range(2))
    coords = (torch.rand(1, 2, h8, w8, generator=g) * torch.tensor([w8, h8]).view(1, 2, 1, 1)).to(device)
    with torch.inference_mode():
        m_all = peak_bytes(lambda: CorrPyramid(f1, f2, 4)(coords), device)
        m_alt = peak_bytes(lambda: OnDemandCorr(f1, f2, 4)(coords), device)
        t_all = timed(lambda: CorrPyramid(f1, f2, 4)(coords), device)
        t_alt = timed(lambda: OnDemandCorr(f1, f2, 4)(coords), device)
    print(f"\n{w}x{h} (Sintel; padded to {w + l + r}x{h + t + bt}, features {w8}x{h8}x256):")
    print(f"  all-pairs pyramid by formula: {volume_bytes(h, w) / 2**20:.0f} MiB "
          f"(level 0: {(h8 * w8) ** 2 * 4 / 2**20:.0f} MiB)")
    print(f"  measured peak, build + 1 lookup: all-pairs {m_all / 2**20:.0f} MiB, on-demand {m_alt / 2**20:.1f} MiB "
          f"(ratio {m_all / max(m_alt, 1):.0f}x); time all-pairs {t_all:.2f} s, on-demand {t_alt:.2f} s per lookup")
    img = torch.rand(1, 3, h + t + bt, w + l + r, generator=g).to(device) * 255
    with torch.inference_mode():
        fw = {alt: peak_bytes(lambda: model(img, img, iters=2, alternate_corr=alt), device) for alt in (False, True)}
    print(f"  whole forward (2 iterations) peak: all-pairs {fw[False] / 2**20:.0f} MiB, on-demand "
          f"{fw[True] / 2**20:.0f} MiB (ratio {fw[False] / fw[True]:.2f}x)")
    for hh, ww in ((720, 1280), (1080, 1920)):
        print(f"  by formula at {ww}x{hh}: all-pairs pyramid {volume_bytes(hh, ww) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
