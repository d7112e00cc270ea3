"""Frames per second of 2x interpolation (one new frame per input pair), flow-based and RIFE 4.25.

Printed against reference runs in the same process, so the ratios mean something on any machine:
- cross-dissolve (0.5 a + 0.5 b): the cheapest possible "interpolation";
- one ``grid_sample`` backward warp of a frame: the unit every flow-based method and every RIFE block pays.

RIFE's speed does not depend on its weights, so random weights are used unless ``--checkpoint`` is given.

    python benchmarks/interpolate.py                     # CPU, 640x480 and 1280x720
    python benchmarks/interpolate.py --device cuda --repeats 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from i2v.interpolate import flow_based as fb
from i2v.interpolate.rife import RIFEInterpolator
from i2v.models.rife import ifnet as rife_model
from i2v.motion.warp import backward_warp


def frames(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random texture and the same texture moved by (6, 3) px: a realistic load for DIS."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, h // 8 + 2, w // 8 + 2, generator=g)
    x = torch.nn.functional.interpolate(x, size=(h + 16, w + 16), mode="bicubic", align_corners=False).clamp(0, 1)
    a = (x[0, :, 8:8 + h, 8:8 + w] * 255).round().byte().permute(1, 2, 0).numpy()
    b = (x[0, :, 5:5 + h, 2:2 + w] * 255).round().byte().permute(1, 2, 0).numpy()
    return a, b


def rate(fn, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return repeats / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--checkpoint", default=None, help="RIFE 4.25 flownet.pkl (default: random weights)")
    p.add_argument("--sizes", default="640x480,1280x720")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = None if args.checkpoint else rife_model.IFNet().eval()
    rife = RIFEInterpolator(args.checkpoint, device=dev, model=model)
    print(f"device {dev}, torch threads {torch.get_num_threads()}, repeats {args.repeats}; frames/s for 2x (one new frame per pair)")
    print(f"{'size':>10} {'method':<28} {'fps':>8} {'x dissolve':>11} {'x 1 warp':>9}")
    for size in args.sizes.split(","):
        w, h = map(int, size.split("x"))
        a, b = frames(h, w)
        ta, tb = (torch.from_numpy(v).permute(2, 0, 1)[None].float().div(255).to(dev) for v in (a, b))
        flow = torch.randn(1, 2, h, w, device=dev)
        ref_dissolve = rate(lambda: (0.5 * ta + 0.5 * tb).clamp(0, 1).mul(255).byte().cpu(), args.repeats * 5, sync)
        ref_warp = rate(lambda: backward_warp(ta, flow), args.repeats * 5, sync)
        runs = {
            "cross-dissolve (reference)": ref_dissolve,
            "grid_sample warp (reference)": ref_warp,
            "flow dis-fine, splat": rate(lambda: fb.interpolate_pair(a, b, (0.5,)), args.repeats, sync),
            "flow dis (medium), linear": rate(lambda: fb.interpolate_pair(a, b, (0.5,), flow="dis", intermediate="linear"),
                                              args.repeats, sync),
            "  of which DIS-fine flow x2": rate(lambda: fb.bidirectional_flow(a, b), args.repeats, sync),
            "rife 4.25 scale 1.0": rate(lambda: rife(ta, tb, (0.5,)), args.repeats, sync),
        }
        for name, fps in runs.items():
            print(f"{size:>10} {name:<28} {fps:8.2f} {fps / ref_dissolve:11.4f} {fps / ref_warp:9.3f}")


if __name__ == "__main__":
    main()
