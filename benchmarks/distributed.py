"""Ulysses sequence parallelism for the Wan DiT (i2v.nn.parallel): speed against one process, all-to-all bytes.

CPU mode (default): a mid-size I2V DiT (dim 512 = 4 heads of 128, ffn 1536, 4 layers, umT5 / CLIP widths as
released) on a 3 x 30 x 52 latent (1170 tokens), float32, random weights. The reference is ONE process with
``--threads`` threads (default 2); the run under test is TWO processes (torch.multiprocessing, gloo) with
``--threads / 2`` each, the same total. Prints the outputs' relative difference, the median time of one forward
call (for 2 processes: the slower one), the ratio, and the bytes each process sent by all-to-all in one forward
(counted around ``dist.all_to_all_single``) against the formula of docs/distributed.md::

    per self-attention: 4 (q, k, v, out) x b x ceil(L / N) x D x bytes x (N - 1) / N,   x layers per forward

    python benchmarks/distributed.py                 # 2 threads: 1 process x 2 against 2 processes x 1
    python benchmarks/distributed.py --layers 2 --latent 3x8x8 --repeats 1     # quick

GPU mode, for a machine with N >= 2 GPUs: ``--gpus 1,2,N`` launches ``torchrun --nproc-per-node n`` for each n
and prints seconds per sampling step (cond + uncond DiT calls, batch 1 each, as Wan's generate.py) of the
full-size I2V-14B DiT in bf16 with random weights at 480p (latent 21 x 60 x 104) or 720p (21 x 90 x 160), and the
speed-up against one GPU, beside Wan's published figures of the whole generation. ``--fsdp`` shards the weights
as ``--dit_fsdp`` does. ``--size tiny --device cpu`` runs the same code path on CPU processes (a check of this
mode without GPUs).

    python benchmarks/distributed.py --gpus 1,2,4,8 --resolution 720p --steps 3
    python benchmarks/distributed.py --gpus 1,2 --size tiny --device cpu --steps 1
"""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2v.models.wan.dit import WanDiT, WanDiTConfig, float32_parameters  # noqa: E402
from i2v.nn import parallel  # noqa: E402

I2V_14B = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=36, out_dim=16, image_dim=1280)
TINY = dict(dim=64, ffn_dim=96, num_heads=2, num_layers=2, text_dim=32, image_dim=32)
LATENTS = {"480p": (21, 60, 104), "720p": (21, 90, 160)}  # 81 frames, 480 x 832 and 720 x 1280, VAE 4x8x8
# Wan2.1 README, "Computational Efficiency on Different GPUs": I2V-14B 720P on H800/H100, total seconds of one
# generation (40 steps + encoders + VAE; 1 GPU with --offload_model True; 2+ GPUs with FSDP and Ulysses)
PUBLISHED_720P_H100 = {1: 1491.6, 2: 753.9, 4: 403.9, 8: 238.8}


def build(cfg: WanDiTConfig, device, dtype=torch.float32, seed: int = 0) -> WanDiT:
    """A WanDiT with random weights (std 0.02, biases and norms perturbed too), the float32 parts in float32."""
    with torch.device("meta"):
        model = WanDiT(cfg)
    keep = float32_parameters(model)
    for name, p in model.named_parameters():  # on the meta device: free
        p.data = p.data.to(torch.float32 if name in keep else dtype)
    model.to_empty(device=device)  # 16.4e9 x 2 bytes for I2V-14B in bf16
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.02, generator=g)
            if "norm" in name and name.endswith("weight"):  # norm gains around 1
                p.add_(1)
    return model.eval().requires_grad_(False)


def inputs(cfg: WanDiTConfig, latent, device, dtype, prompt_tokens: int = 120, seed: int = 1):
    g = torch.Generator(device=device).manual_seed(seed)
    f, h, w = latent
    x = torch.randn(1, cfg.out_dim, f, h, w, generator=g, device=device)
    y = torch.randn(1, cfg.in_dim - cfg.out_dim, f, h, w, generator=g, device=device)
    context = torch.zeros(1, 512, cfg.text_dim, device=device)
    context[:, :prompt_tokens] = torch.randn(1, prompt_tokens, cfg.text_dim, generator=g, device=device)
    clip = torch.randn(1, 257, cfg.image_dim, generator=g, device=device)
    return x, dict(t=torch.tensor([500.0], device=device), context=context.to(dtype), clip=clip.to(dtype), y=y)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def formula_bytes(cfg: WanDiTConfig, latent, n: int, element: int) -> int:
    """All-to-all bytes one process sends in one forward (docs/distributed.md)."""
    f, h, w = latent
    tokens = f * (h // 2) * (w // 2)
    per_rank = math.ceil(tokens / n)
    return 4 * 1 * per_rank * cfg.dim * element * (n - 1) // n * cfg.num_layers


# ----------------------------------------------------------------------------------------------------- CPU

def _cpu_worker(rank: int, world: int, port: int, args, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(max(1, args.threads // world))
    dist.init_process_group("gloo")
    cfg, latent = cpu_config(args)
    model = parallel.use_sequence_parallel(build(cfg, "cpu"))
    x, kw = inputs(cfg, latent, "cpu", torch.float32)
    sent = [0]
    real = dist.all_to_all_single

    def counting(output, input, *a, **k):  # bytes that leave this process: all but its own chunk
        sent[0] += input.numel() * input.element_size() * (world - 1) // world
        return real(output, input, *a, **k)

    dist.all_to_all_single = counting
    with torch.no_grad():
        y = model(x, **kw)  # warm-up, and the bytes of one forward
        bytes_one = sent[0]
        times, cpu = [], []
        for _ in range(args.repeats):
            dist.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            model(x, **kw)
            t = torch.tensor([time.perf_counter() - t0])
            c = torch.tensor([time.process_time() - c0])
            dist.all_reduce(t, op=dist.ReduceOp.MAX)  # the step ends when the slower process ends
            dist.all_reduce(c)  # CPU seconds of both processes (gloo waits in epoll: little CPU)
            times.append(t.item())
            cpu.append(c.item())
    if rank == 0:
        torch.save({"out": y, "times": times, "cpu": cpu, "bytes": bytes_one}, out)
    dist.barrier()
    dist.destroy_process_group()


def cpu_config(args):
    cfg = WanDiTConfig(dim=512, ffn_dim=1536, num_heads=4, num_layers=args.layers, in_dim=36, out_dim=16,
                       image_dim=1280)
    return cfg, tuple(int(v) for v in args.latent.split("x"))


def cpu_main(args) -> None:
    import torch.multiprocessing as mp

    cfg, latent = cpu_config(args)
    model = build(cfg, "cpu")
    x, kw = inputs(cfg, latent, "cpu", torch.float32)

    def median_time(threads):
        torch.set_num_threads(threads)
        times, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            model(x, **kw)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return statistics.median(times), statistics.median(cpu)

    with torch.no_grad():
        ref = model(x, **kw)
        (t1, c1), (t1_single, c1_single) = median_time(args.threads), median_time(max(1, args.threads // 2))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "two.pt")
        mp.start_processes(_cpu_worker, args=(2, free_port(), args, out), nprocs=2, start_method="spawn")
        two = torch.load(out)
    tokens = latent[0] * (latent[1] // 2) * (latent[2] // 2)
    rel = ((two["out"] - ref).norm() / ref.norm()).item()
    t2, c2 = statistics.median(two["times"]), statistics.median(two["cpu"])
    expect = formula_bytes(cfg, latent, 2, 4)
    print(f"Wan DiT dim {cfg.dim} ({cfg.num_heads} heads), {cfg.num_layers} layers, latent {args.latent} = {tokens} "
          f"tokens, float32, {args.threads} threads in all")
    print(f"  2 processes vs 1: relative difference of the outputs {rel:.1e}")
    print(f"  1 process  x {args.threads} threads: {t1 * 1e3:8.1f} ms per forward (median of {args.repeats})")
    print(f"  1 process  x {max(1, args.threads // 2)} thread(s): {t1_single * 1e3:8.1f} ms per forward (what each of the 2 "
          "would take alone for the whole sequence)")
    print(f"  2 processes x {max(1, args.threads // 2)} thread(s): {t2 * 1e3:8.1f} ms per forward  "
          f"-> ratio 2 processes / 1 process at the same total threads = {t2 / t1:.2f}, "
          f"/ 1 process of one process's threads = {t2 / t1_single:.2f}")
    print(f"  CPU seconds per forward, all processes: 1 x {args.threads} threads {c1:.3f}, 1 x "
          f"{max(1, args.threads // 2)} {c1_single:.3f}, 2 processes {c2:.3f} (the steadier measure on a busy machine)")
    print(f"  all-to-all bytes sent per process per forward: measured {two['bytes']:,}, formula {expect:,} "
          f"(ratio {two['bytes'] / expect:.3f})")


# ----------------------------------------------------------------------------------------------------- GPUs

def gpu_worker(args) -> None:
    """One process of a torchrun launch: s/step of the DiT (cond + uncond calls) at this world size."""
    with parallel.launched() as launch:
        device = launch.device(args.device)
        cfg = WanDiTConfig(**(TINY if args.size == "tiny" else I2V_14B))
        latent = (3, 8, 12) if args.size == "tiny" else LATENTS[args.resolution]
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model = build(cfg, device, dtype)
        if args.fsdp and launch.distributed:
            model = parallel.shard(model, device)
        if launch.distributed:
            parallel.use_sequence_parallel(model)
        x, kw = inputs(cfg, latent, device, dtype)
        neg = dict(kw, context=torch.zeros_like(kw["context"]))

        def step():
            model(x, **kw)
            model(x, **neg)
            if device.type == "cuda":
                torch.cuda.synchronize()

        with torch.no_grad():
            step()  # warm-up
            times = []
            for _ in range(args.steps):
                if launch.distributed:
                    dist.barrier()
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        print(f"RESULT world {launch.world_size} s_per_step {statistics.median(times):.4f} peak_gib {peak:.1f}")


def gpu_main(args) -> None:
    counts = [int(n) for n in args.gpus.split(",")]
    base = None
    label = "tiny" if args.size == "tiny" else f"I2V-14B {args.resolution}"
    print(f"{label}, one sampling step = cond + uncond DiT calls, {args.steps} steps (median)"
          + (", FSDP weights" if args.fsdp else ""))
    print("| GPUs | s / step | speed-up | peak GiB | published 720p H100 speed-up (whole generation) |")
    print("|---|---|---|---|---|")
    for n in counts:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), __file__,
               "--gpu-worker", "--size", args.size, "--resolution", args.resolution, "--steps", str(args.steps),
               "--device", args.device] + (["--fsdp"] if args.fsdp else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        m = re.search(r"RESULT world (\d+) s_per_step ([\d.]+) peak_gib (\S+)", r.stdout)
        if not m:
            print(f"| {n} | failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]} | | | |")
            continue
        s = float(m.group(2))
        base = base or (s if n == counts[0] else None)
        pub = PUBLISHED_720P_H100
        published = f"{pub[1] / pub[n]:.2f}" if n in pub else "-"
        print(f"| {n} | {s:.3f} | {base / s if base else float('nan'):.2f} | {m.group(3)} | {published} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="CPU mode: threads in all (1 process) / split (2)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--latent", default="3x30x52", help="CPU mode: latent frames x height x width")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gpus", default="", help="GPU mode: comma-separated process counts, e.g. 1,2,8")
    p.add_argument("--resolution", choices=sorted(LATENTS), default="480p")
    p.add_argument("--size", choices=("full", "tiny"), default="full")
    p.add_argument("--device", default="auto", help="GPU mode: auto (a GPU per process) or cpu (with --size tiny)")
    p.add_argument("--steps", type=int, default=3, help="GPU mode: timed sampling steps")
    p.add_argument("--fsdp", action="store_true", help="GPU mode: shard the weights over the processes")
    p.add_argument("--gpu-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.gpu_worker:
        gpu_worker(args)
    elif args.gpus:
        gpu_main(args)
    else:
        cpu_main(args)


if __name__ == "__main__":
    main()
