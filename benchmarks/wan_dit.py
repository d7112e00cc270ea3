"""Our Wan DiT against diffusers' WanTransformer3DModel: same config, same weights, one process.

CPU mode (default): a mid-size I2V DiT (dim 512 = 4 heads of 128, 8 layers, umT5 / CLIP widths as released) on a
3 x 30 x 52 latent (1170 tokens), float32, the text a 120-token prompt zero-padded to 512 rows (as Wan's and
diffusers' pipelines pass it; ``--prompt-tokens 512`` for a dense context). Prints the outputs' relative difference, the median wall and CPU time of
one forward call of each and their ratio, and the peak memory each call allocates above the weights (the
PyTorch profiler's allocation records replayed in time order, so the figure does not depend on malloc).

    python benchmarks/wan_dit.py --threads 1
    python benchmarks/wan_dit.py --dim 256 --layers 2 --latent 3x8x8 --repeats 1       # quick

CUDA mode (``--cuda``): the full-size configs with random weights, ours only, bf16: TI2V-5B at 121 x 704 x 1280
(latent 31 x 44 x 80) and I2V-14B at 81 x 480 x 832 (latent 21 x 60 x 104), seconds per sampling step (one CFG
batch of 2) and peak GiB, beside the published figures of the whole generation. ``--size tiny`` runs the same
code path at a tiny size (CPU is fine): a test of this mode.

    python benchmarks/wan_dit.py --cuda --steps 2

diffusers is needed only for the CPU comparison (an independent implementation), never by the package.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from i2v.models.wan.dit import WanDiT, WanDiTConfig, float32_parameters

# the full-size configs (Wan-Video/Wan2.1 and Wan2.2 configs) and the published figures of a whole generation
FULL = {
    "ti2v-5B": dict(cfg=dict(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48, image_dim=None),
                    frames=121, size=(704, 1280), stride=(4, 16, 16), steps=50,
                    published="TI2V-5B 720p on one RTX 4090: 524.8 s, 22.8 GB (50 steps + VAE)"),
    "i2v-14B": dict(cfg=dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=36, out_dim=16, image_dim=1280),
                    frames=81, size=(480, 832), stride=(4, 8, 8), steps=40,
                    published="I2V-14B 720p on one H100: 1491.6 s, 76.7 GB (40 steps + encoders + VAE)"),
}
TINY = dict(dim=64, ffn_dim=96, num_heads=2, num_layers=2, text_dim=32)


def peak_bytes(fn, device) -> int:
    """Peak memory allocated while running fn(), above what was allocated before (CUDA: the allocator's peak;
    CPU: the profiler's allocation and free records replayed in time order)."""
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
    for _, nbytes in sorted(records, key=lambda r: r[0]):
        now += nbytes
        peak = max(peak, now)
    return peak


def timed(fn, device) -> tuple[float, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - w0, time.process_time() - c0


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Random, non-zero weights everywhere (the released inits zero some layers); norm weights around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if p.ndim > 1 and "modulation" not in name and "scale_shift" not in name and "pos_emb" not in name:
                r = r * p[0].numel() ** -0.5
            elif "norm" in name and name.endswith("weight"):
                r = 1 + 0.1 * r
            else:
                r = 0.1 * r
            p.copy_(r.to(p.dtype))


def compare_with_diffusers(args) -> None:
    from diffusers import WanTransformer3DModel

    f, H, W = (int(v) for v in args.latent.split("x"))  # latent frames, rows, columns
    heads = args.dim // 128 if args.dim >= 128 else 2
    theirs = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=args.dim // heads,
                                   in_channels=36, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=args.ffn,
                                   num_layers=args.layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                   eps=1e-6, image_dim=1280, added_kv_proj_dim=args.dim).eval().requires_grad_(False)
    randomise(theirs)
    with tempfile.TemporaryDirectory() as tmp:  # through our diffusers-format loader, as a user's folder
        theirs.save_pretrained(tmp)
        ours = WanDiT.from_pretrained(tmp)
    n_params = sum(p.numel() for p in ours.parameters())
    device = torch.device("cpu")

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1, 16, f, H, W, generator=g), torch.randn(1, 20, f, H, W, generator=g)
    context, clip = torch.randn(1, 512, 4096, generator=g), torch.randn(1, 257, 1280, generator=g)
    context[:, args.prompt_tokens:] = 0  # a prompt's T5 output zero-padded to 512 rows, as both pipelines feed it
    t = torch.tensor([937])

    def run_theirs():
        return theirs(torch.cat([x, y], 1), t, context, encoder_hidden_states_image=clip, return_dict=False)[0]

    def run_ours():
        return ours(x, t, context=context, clip=clip, y=y)

    with torch.inference_mode():
        ref, out = run_theirs(), run_ours()  # also warms both up
        diff = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
        times = {"ours": [], "diffusers": []}
        for _ in range(args.repeats):  # interleaved, so background load hits both alike
            times["diffusers"].append(timed(run_theirs, device))
            times["ours"].append(timed(run_ours, device))
        mem = {"diffusers": peak_bytes(run_theirs, device), "ours": peak_bytes(run_ours, device)}
    print(f"Wan I2V DiT, dim {args.dim} ({heads} heads), ffn {args.ffn}, {args.layers} layers ({n_params / 1e6:.0f} M "
          f"parameters), latent {f}x{H}x{W} = {f * (H // 2) * (W // 2)} tokens, a {args.prompt_tokens}-token prompt, "
          f"float32 on CPU, "
          f"threads={torch.get_num_threads()}, {args.repeats} repeats")
    print(f"output relative difference ours vs diffusers: {diff:.2e}")
    wall = {k: statistics.median(v[0] for v in times[k]) for k in times}
    cpu = {k: statistics.median(v[1] for v in times[k]) for k in times}
    for k in ("diffusers", "ours"):
        print(f"{k:>10}: median wall {wall[k]:.3f} s, CPU {cpu[k]:.3f} s   peak memory {mem[k] / 2**20:.1f} MiB")
    print(f"ours/diffusers: wall time {wall['ours'] / wall['diffusers']:.3f}, CPU time "
          f"{cpu['ours'] / cpu['diffusers']:.3f}, peak memory {mem['ours'] / mem['diffusers']:.3f}")


def full_size(args) -> list[dict]:
    """Seconds per sampling step (one CFG batch: cond and uncond) and peak memory of the full-size DiTs."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    results = []
    for name, spec in FULL.items():
        if args.size == "tiny":
            cfg = WanDiTConfig(**{**spec["cfg"], **TINY})
            frames, (H, W) = 9, (spec["stride"][1] * 4, spec["stride"][2] * 6)
        else:
            cfg = WanDiTConfig(**spec["cfg"])
            frames, (H, W) = spec["frames"], spec["size"]
        st = spec["stride"]
        lat = ((frames - 1) // st[0] + 1, H // st[1], W // st[2])
        with torch.device("meta"):
            model = WanDiT(cfg)
        f32 = float32_parameters(model)  # as from_pretrained keeps them
        with torch.no_grad():  # random weights, made one tensor at a time on the device in its final dtype
            for pname, p in list(model.named_parameters()):
                mod, _, leaf = pname.rpartition(".")
                new = torch.empty(p.shape, device=device, dtype=torch.float32 if pname in f32 else dtype)
                setattr(model.get_submodule(mod), leaf, torch.nn.Parameter(new.normal_(0, 0.02), requires_grad=False))
        model.eval().requires_grad_(False)
        g = torch.Generator(device).manual_seed(0)
        c_out = cfg.in_dim - (20 if cfg.image_dim else 0)
        b = 2  # cond and uncond in one batch
        x = torch.randn(b, c_out, *lat, device=device, generator=g)
        kw = {"context": torch.randn(b, 512, cfg.text_dim, device=device, generator=g)}
        if cfg.image_dim:
            kw["y"] = torch.randn(b, 20, *lat, device=device, generator=g)
            kw["clip"] = torch.randn(b, 257, cfg.image_dim, device=device, generator=g)
        if cfg.model_type == "ti2v":
            kw["clean_first_frame"] = True
        t = torch.tensor([999, 999], device=device)

        def step():
            return model(x, t, **kw)

        with torch.inference_mode():
            out = step()  # warm-up (kernels, allocator)
            if not torch.isfinite(out).all() or out.shape != (b, cfg.out_dim, *lat):
                raise RuntimeError(f"{name}: output {tuple(out.shape)} not finite or not ({b}, {cfg.out_dim}, {lat})")
            del out
            secs = [timed(step, device)[0] for _ in range(args.steps)]
            peak = peak_bytes(step, device) if device.type == "cuda" else None
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        tokens = lat[0] * (lat[1] // 2) * (lat[2] // 2)
        r = {"model": name, "video": f"{frames}x{H}x{W}", "latent": "x".join(map(str, lat)), "tokens": tokens,
             "dtype": args.dtype, "s_per_step": statistics.median(secs), "weights_GiB": weights / 2**30,
             "peak_above_weights_GiB": None if peak is None else peak / 2**30,
             "published": spec["published"], "steps_default": spec["steps"]}
        results.append(r)
        print(f"{name}: {r['video']} (latent {r['latent']}, {tokens} tokens), {args.dtype} on {device}: "
              f"{r['s_per_step']:.3f} s per step (CFG batch of 2), weights {r['weights_GiB']:.2f} GiB"
              + (f", peak above weights {r['peak_above_weights_GiB']:.2f} GiB" if peak is not None else "")
              + f"; x{spec['steps']} steps = {r['s_per_step'] * spec['steps']:.0f} s; published: {spec['published']}")
        model = x = kw = None  # free the weights before the next model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--ffn", type=int, default=1536, help="FFN width (released: 2.7x-4.7x dim)")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--latent", default="3x30x52", help="latent frames x height x width (F x H x W)")
    ap.add_argument("--prompt-tokens", type=int, default=120,
                    help="T5 rows before the zero padding (512 = a dense context: no padding to compress)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1: CPU time is then a steady measure on a shared machine)")
    ap.add_argument("--cuda", action="store_true", help="full-size TI2V-5B and I2V-14B, ours only (see the docstring)")
    ap.add_argument("--size", choices=["full", "tiny"], default="full", help="with --cuda: tiny = a CPU test of the mode")
    ap.add_argument("--steps", type=int, default=2, help="with --cuda: timed steps per model")
    ap.add_argument("--device", default=None, help="with --cuda: the device (default cuda)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"], help="with --cuda")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.cuda:
        args.device = args.device or "cuda"
        return full_size(args)
    compare_with_diffusers(args)


if __name__ == "__main__":
    main()
