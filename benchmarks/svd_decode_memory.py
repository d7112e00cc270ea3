"""Peak memory of SVD's temporal VAE decoder vs the decode chunk size (the main memory lever of decoding).

Builds the full-size decoder (SVD/SVD-XT shapes: 128 base channels, mult 1-2-4-4, random weights) and decodes
``chunk`` frames of a latent of ``--latent`` x ``--latent`` in a fresh subprocess per chunk size, reporting the
peak memory above the loaded model (CUDA allocator peak on a GPU, peak RSS on the CPU). Activations scale with
chunk x H x W, so figures at a small size extrapolate to 576x1024 by the pixel ratio.

    python benchmarks/svd_decode_memory.py --latent 16 --chunks 1 2 4
    python benchmarks/svd_decode_memory.py --device cuda --dtype float16 --latent 72x128 --chunks 1 2 4 8 14 25
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(chunk: int, h: int, w: int, device: str, dtype: str) -> dict:
    import torch

    from i2v.models.svd.vae import SVDVAE, SVDVAEConfig

    dt = getattr(torch, dtype)
    torch.manual_seed(0)
    vae = SVDVAE(SVDVAEConfig(encoder=False)).to(device, dt).eval()
    z = torch.randn(chunk, 4, h, w, device=device, dtype=dt)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter()
    with torch.no_grad():
        vae.decode(z, timesteps=chunk)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"chunk": chunk, "peak_above_model_GiB": peak / 2**30, "seconds": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latent", default="16", help="latent size h or hxw (576x1024 video = 72x128)")
    ap.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    h, w = (int(v) for v in (a.latent.split("x") if "x" in a.latent else (a.latent, a.latent)))
    if a.one is not None:
        print(json.dumps(one(a.one, h, w, a.device, a.dtype)))
        return
    print(f"full-size SVD temporal decoder, {a.dtype} on {a.device}, output {8 * h}x{8 * w}")
    print("chunk  peak above model  time    extrapolated to 576x1024")
    for c in a.chunks:
        r = subprocess.run([sys.executable, __file__, "--latent", a.latent, "--device", a.device, "--dtype", a.dtype,
                            "--one", str(c)], capture_output=True, text=True, check=True)
        d = json.loads(r.stdout.strip().splitlines()[-1])
        scale = (72 * 128) / (h * w)
        print(f"{c:5d}  {d['peak_above_model_GiB']:9.2f} GiB     {d['seconds']:6.1f} s  "
              f"{d['peak_above_model_GiB'] * scale:8.1f} GiB")


if __name__ == "__main__":
    main()
