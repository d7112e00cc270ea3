"""Our Wan2.1 VAE decode against diffusers' AutoencoderKLWan: same config, same weights, one process.

CPU mode (default): a mid-size Wan2.1 VAE (base width ``--dim``, default 48 = half the release's 96), random
weights, float32; decodes ``--latent-frames`` latent frames of ``--size`` latents. Prints the outputs' relative
difference, the median wall / CPU time of one decode for each and the ratio, and the peak memory each decode
allocates above what was allocated before it (CPU: the heap in use, glibc ``mallinfo2``, sampled after every
aten op; CUDA: ``torch.cuda.max_memory_allocated``). Targets: time ratio <= 0.9, peak memory ratio <= 0.6.

    python benchmarks/wan_vae.py                         # CPU float32, dim 48, 3 latent frames of 32x32 (9 x 256x256)
    python benchmarks/wan_vae.py --threads 2 --repeats 5

``--cuda``: the release's decode on a GPU -- the full-size config (dim 96), random weights, bfloat16, 81 frames
at 480x832 (21 latent frames of 60x104); seconds and peak GiB for ours (and diffusers', unless
``--no-diffusers``). Every setting can be overridden, which is how the tests run this mode at a tiny size on CPU:

    python benchmarks/wan_vae.py --cuda
    python benchmarks/wan_vae.py --cuda --device cpu --dtype float32 --dim 8 --latent-frames 2 --size 4x4

``--seam``: the error tiled decoding introduces, for a given VAE file (Wan2.1 or 2.2): a 9-frame pan over
``--image`` resized to ``--frame-size``, encoded, then decoded untiled and with each ``--tiles`` TILE:OVERLAP
(latent pixels); prints the mean / max absolute difference in 8-bit levels and the PSNR of tiled vs untiled:

    python benchmarks/wan_vae.py --seam --vae Wan2.1_VAE.pth --image photo.png --frame-size 480x832 --device cuda

diffusers is needed only here and in the tests (an independent oracle), never by the package.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from i2v.checkpoints import load_into
from i2v.models.wan.vae import Wan21VAE, Wan21VAEConfig, diffusers_to_original


# ----------------------------------------------------------------------------------------------- peak memory

class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                                "uordblks", "fordblks", "keepcost")]


def _heap_reader():
    """A function returning the bytes malloc has handed out and not taken back (glibc >= 2.33), or None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None

    def in_use() -> int:
        m = libc.mallinfo2()
        return m.uordblks + m.hblkhd  # small chunks in the arenas + large mmap'ed ones
    return in_use


class HeapPeak(TorchDispatchMode):
    """Peak CPU heap in use while the block runs, above its start (``.peak`` bytes), sampled after every aten
    op. Independent of how malloc returns memory to the OS (unlike RSS), and it sees every tensor torch
    allocates on the CPU; an op's own scratch space freed before it returns is not seen. The first block run
    under this mode in a process allocates some memory for good (tens of MB): warm up under it too."""

    def __init__(self):
        super().__init__()
        self.in_use = _heap_reader()
        if self.in_use is None:
            raise RuntimeError("HeapPeak needs glibc's mallinfo2 (Linux, glibc >= 2.33)")

    def __enter__(self):
        self.base = self.top = self.in_use()
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.top = max(self.top, self.in_use())
        return out

    @property
    def peak(self) -> int:
        return self.top - self.base


def peak_bytes(fn, device: torch.device) -> int:
    """Peak memory fn() allocates above what was allocated before it (on the CPU, after a warm-up call of fn
    under the meter, see HeapPeak)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    for _ in range(2):
        with HeapPeak() as meter:
            fn()
    return meter.peak


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - w0, time.process_time() - c0


# ----------------------------------------------------------------------------------------------- the models

def build_pair(dim: int, device, dtype, seed: int = 0):
    """diffusers' AutoencoderKLWan (Wan2.1 layout, base width ``dim``) with random non-zero weights, and ours
    holding the same tensors (renamed by i2v's diffusers rename table)."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    theirs = AutoencoderKLWan(base_dim=dim).eval().requires_grad_(False)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if name.endswith("gamma"):
                p.normal_(1.0, 0.1)
            elif p.ndim > 1:
                p.normal_(0.0, p[0].numel() ** -0.5)
            else:
                p.normal_(0.0, 0.02)
    theirs = theirs.to(device, dtype)
    res_blocks = len(theirs.decoder.up_blocks[0].resnets) - 1
    sd = {diffusers_to_original(k, res_blocks, residual=False): v for k, v in theirs.state_dict().items()}
    with torch.device("meta"):
        ours = Wan21VAE(Wan21VAEConfig(dim=dim))
    load_into(ours, sd)
    return theirs, ours.eval()


def seam(a) -> list[dict]:
    """Tiled vs untiled decode of a real clip (see the module docstring)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from i2v.models.wan.vae import load_vae

    device, dtype = torch.device(a.device or "cpu"), getattr(torch, a.dtype or "float32")
    vae = load_vae(a.vae, dtype=dtype, device=device)
    h, w = (int(s) for s in a.frame_size.split("x"))
    pan = 8  # pixels the camera moves per frame
    image = Image.open(a.image or Path(__file__).resolve().parents[1] / "i2v" / "assets" / "example.png")
    image = image.convert("RGB").resize((w + 8 * pan, h), Image.BICUBIC)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1  # (3, h, w + 64) in [-1, 1]
    clip = torch.stack([x[:, :, pan * i:pan * i + w] for i in range(9)], dim=1)[None].to(device)  # (1, 3, 9, h, w)
    with torch.inference_mode():
        z = vae.encode(clip)
        full = vae.decode(z)
        print(f"Wan{vae.version} VAE {a.vae}: 9 frames of {h}x{w} -> latent {tuple(z.shape[2:])}, "
              f"{a.dtype or 'float32'} on {device}, threads={torch.get_num_threads()}")
        rows = []
        for spec in a.tiles:
            tile, overlap = (int(v) for v in spec.split(":"))
            d = (vae.decode(z, tile=tile, tile_overlap=overlap) - full).abs() * 127.5  # 8-bit levels
            psnr = 10 * torch.log10(255.0 ** 2 / (d.double() ** 2).mean()).item()
            rows.append({"tile": tile, "overlap": overlap, "mean": d.mean().item(), "max": d.max().item(), "psnr": psnr,
                         "over_1": (d > 1).float().mean().item()})
            r = rows[-1]
            print(f"  tile {tile:3d} overlap {overlap:2d} latent px: mean {r['mean']:.2f}, max {r['max']:.1f} levels; "
                  f"{100 * r['over_1']:.1f}% of values off by > 1 level; PSNR {psnr:.1f} dB")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuda", action="store_true",
                    help="the release's decode: dim 96, bfloat16 on cuda, 21 latent frames of 60x104 (81 x 480x832)")
    ap.add_argument("--dim", type=int, default=None, help="base width (release: 96; CPU default 48)")
    ap.add_argument("--latent-frames", type=int, default=None, help="latent frames t (video frames 1 + 4(t - 1))")
    ap.add_argument("--size", default=None, help="latent HxW (video: 8x larger)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-diffusers", action="store_true", help="time ours only")
    ap.add_argument("--seam", action="store_true", help="tiled vs untiled decode error for --vae on --image")
    ap.add_argument("--vae", help="--seam: a Wan2.1_VAE.pth / Wan2.2_VAE.pth (or diffusers vae/ folder)")
    ap.add_argument("--image", help="--seam: the picture the pan is cut from (default: i2v's example image)")
    ap.add_argument("--frame-size", default="256x384", help="--seam: HxW of the clip's frames")
    ap.add_argument("--tiles", nargs="+", default=["16:4", "16:8", "32:8"], help="--seam: TILE:OVERLAP list")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1: CPU time is then a steady measure on a shared machine)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.seam:
        if not a.vae:
            ap.error("--seam needs --vae (seam errors of random weights say little about the released VAE)")
        return seam(a)
    defaults = dict(dim=96, latent_frames=21, size="60x104", device="cuda", dtype="bfloat16") if a.cuda else \
        dict(dim=48, latent_frames=3, size="32x32", device="cpu", dtype="float32")
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    device, dtype = torch.device(a.device), getattr(torch, a.dtype)
    h, w = (int(s) for s in a.size.split("x"))
    t = a.latent_frames

    theirs, ours = build_pair(a.dim, device, dtype)
    z = torch.randn(1, 16, t, h, w, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    mean, std = (torch.tensor(v, device=device, dtype=dtype).view(1, -1, 1, 1, 1) for v in (ours.MEAN, ours.STD))
    raw = z * std + mean  # diffusers' decode takes mu; its pipelines undo the normalisation before the call
    runs = {"ours": lambda: ours.decode(z)}
    if not a.no_diffusers:
        runs["diffusers"] = lambda: theirs.decode(raw, return_dict=False)[0]
    n_params = sum(p.numel() for p in ours.parameters())
    print(f"Wan2.1 VAE decode, dim {a.dim} ({n_params / 1e6:.1f} M parameters), {t} latent frames of {h}x{w} -> "
          f"{1 + 4 * (t - 1)} frames of {8 * h}x{8 * w}, {a.dtype} on {device}, threads={torch.get_num_threads()}, "
          f"{a.repeats} repeats")

    with torch.inference_mode():
        first = {k: fn() for k, fn in runs.items()}  # also warms up
        if "diffusers" in first:
            ref = first["diffusers"].double()
            diff = ((first["ours"].double() - ref).norm() / ref.norm()).item()
            print(f"output relative difference ours vs diffusers: {diff:.2e}")
        del first
        times = {k: [] for k in runs}
        for _ in range(a.repeats):  # interleaved, so background load hits both alike
            for k, fn in runs.items():
                times[k].append(timed(fn, device))
        mem = {k: peak_bytes(fn, device) for k, fn in runs.items()}

    wall = {k: statistics.median(x[0] for x in v) for k, v in times.items()}
    cpu = {k: statistics.median(x[1] for x in v) for k, v in times.items()}
    for k in runs:
        print(f"{k:>10}: median wall {wall[k]:.3f} s, CPU {cpu[k]:.3f} s   peak memory {mem[k] / 2**30:.3f} GiB")
    if "diffusers" in runs:
        print(f"ours/diffusers: wall time {wall['ours'] / wall['diffusers']:.3f}, CPU time "
              f"{cpu['ours'] / cpu['diffusers']:.3f}, peak memory {mem['ours'] / mem['diffusers']:.3f} "
              f"(targets: time <= 0.9, memory <= 0.6)")
    return {"wall": wall, "cpu": cpu, "peak": mem}


if __name__ == "__main__":
    main()
