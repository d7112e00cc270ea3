"""Our SVD U-Net against diffusers' UNetSpatioTemporalConditionModel: same config, same weights, one process.

Prints the outputs' relative difference (diffusers' ResNet GroupNorm eps set to the original's 1e-5), the median
time of one forward call for each and the ratio, and the peak memory each call allocates on top of the weights
(CPU: from the PyTorch profiler's allocation events; CUDA: torch.cuda.max_memory_allocated).

    python benchmarks/svd_unet.py                                  # CPU, a 2/5-width SVD U-Net, 14 frames, 32x32 latents
    python benchmarks/svd_unet.py --channels 320 --frames 14 --size 72x128 --device cuda --dtype float16   # the real one

diffusers is needed only here and in the tests (an independent oracle), never by the package.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from i2v.models.svd.checkpoint import diffusers_unet_to_sgm
from i2v.models.svd.unet import SVDUNet
from i2v.nn.embeddings import timestep_embedding


def build_diffusers(channels: int, cross_dim: int, head: int, seed: int = 0):
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(seed)
    chans = tuple(channels * m for m in (1, 2, 4, 4))  # SVD: (320, 640, 1280, 1280), attention on levels 0-2
    m = UNetSpatioTemporalConditionModel(
        in_channels=8, out_channels=4, block_out_channels=chans, layers_per_block=2, cross_attention_dim=cross_dim,
        num_attention_heads=tuple(c // head for c in chans), projection_class_embeddings_input_dim=768,
        addition_time_embed_dim=256).eval().requires_grad_(False)
    for name, p in m.named_parameters():  # random, non-zero everywhere
        if p.ndim > 1:
            p.normal_(0.0, p[0].numel() ** -0.5)
        else:
            p.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.1)
    for name, mod in m.named_modules():  # the original SVD U-Net's ResNet GroupNorm eps (diffusers: 1e-6)
        if isinstance(mod, torch.nn.GroupNorm) and ".resnets." in name:
            mod.eps = 1e-5
    return m


def peak_bytes(fn, device) -> int:
    """Peak memory allocated while running fn(), above what was allocated before it. CUDA: the caching
    allocator's peak. CPU: replay of the PyTorch profiler's allocation records (each op's own allocations at
    its start, each free at its time), so the figure does not depend on how malloc returns memory to the OS."""
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
        if e.name == "[memory]":  # allocations and frees outside any op (mostly frees)
            records.append((e.time_range.start, e.cpu_memory_usage))
        elif e.self_cpu_memory_usage:
            records.append((e.time_range.start, e.self_cpu_memory_usage))
    now = peak = 0
    for _, nbytes in sorted(records, key=lambda r: r[0]):
        now += nbytes
        peak = max(peak, now)
    return peak


def timed(fn, device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=128, help="model_channels (SVD: 320)")
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--size", default="32x32", help="latent HxW (SVD at 576x1024: 72x128)")
    ap.add_argument("--batch", type=int, default=1, help="videos per call (2 = a CFG batch)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1: CPU time is then a steady measure on a shared machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    h, w = (int(s) for s in args.size.split("x"))
    b, T, ctx_dim = args.batch, args.frames, 1024

    theirs = build_diffusers(args.channels, ctx_dim, head=64).to(device, dtype)
    ours = SVDUNet.from_state_dict(diffusers_unet_to_sgm(theirs.state_dict()), prefix="", num_head_channels=64)
    ours = ours.to(device, dtype)  # the weights are shared tensors until .to() copies them; same values either way
    n_params = sum(p.numel() for p in ours.parameters())

    g = torch.Generator().manual_seed(0)
    sample = torch.randn(b, T, 8, h, w, generator=g).to(device, dtype)
    sigma = torch.tensor(1.5)
    t = (0.25 * sigma.log()).to(device)  # c_noise
    ehs = torch.randn(b, 1, ctx_dim, generator=g).to(device, dtype)
    ids = torch.tensor([[6.0, 127.0, 0.02]] * b, device=device)
    y = torch.cat([timestep_embedding(ids[:, i], 256) for i in range(3)], dim=1).to(dtype)  # (b, 768)

    def run_theirs():
        return theirs(sample, t, ehs, ids, return_dict=False)[0]

    def run_ours():
        return ours(sample.flatten(0, 1), t.repeat(b * T), ehs.repeat_interleave(T, 0), y.repeat_interleave(T, 0), T)

    with torch.inference_mode():
        ref, out = run_theirs().flatten(0, 1), run_ours()  # also warms both up
        diff = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
        times = {"ours": [], "diffusers": []}
        for _ in range(args.repeats):  # interleaved, so background load hits both alike
            times["diffusers"].append(timed(run_theirs, device))
            times["ours"].append(timed(run_ours, device))
        mem = {"diffusers": peak_bytes(run_theirs, device), "ours": peak_bytes(run_ours, device)}

    print(f"SVD U-Net, model_channels={args.channels} ({n_params / 1e6:.0f} M parameters), {b}x{T} frames of "
          f"{h}x{w} latents, {args.dtype} on {device}, threads={torch.get_num_threads()}, {args.repeats} repeats")
    print(f"output relative difference ours vs diffusers: {diff:.2e}")
    wall = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
    for k in ("diffusers", "ours"):
        print(f"{k:>10}: median wall {wall[k]:.3f} s, CPU {cpu[k]:.3f} s   peak memory {mem[k] / 2**20:.1f} MiB")
    print(f"ours/diffusers: wall time {wall['ours'] / wall['diffusers']:.3f}, CPU time {cpu['ours'] / cpu['diffusers']:.3f}, "
          f"peak memory {mem['ours'] / mem['diffusers']:.3f}")

if __name__ == "__main__":
    main()
