"""`i2v eval`: score the built-in model(s) on held-out procedural clips and print the table (i2v/evaluate.py)."""

from __future__ import annotations

from pathlib import Path

from ..outputs import atomic, check_writable
from ..runtime import add_threads_argument, check_count, set_threads

HELP = "evaluate the built-in model on held-out clips: PSNR/SSIM per motion, warping error, flicker"
EXAMPLES = """examples:
  i2v eval                                        both backbones, 3 clips per motion class, 20 steps
  i2v eval --backbone unet --clips-per-class 1    quick look
  i2v eval --weights runs/builtin_unet/model.safetensors --json scores.json
  i2v eval --backbone none                        only the static and oracle baselines
  i2v eval --clips-per-class 1 --figure samples.png   and a picture of truth vs each model
  i2v eval --backbone unet --json u.json & i2v eval --backbone dit --json d.json; i2v eval --merge u.json d.json"""


def add_arguments(parser):
    parser.add_argument("--backbone", nargs="+", default=["unet", "dit"], choices=("unet", "dit", "none"),
                        help="shipped backbones to evaluate (default: unet dit); 'none' for baselines only")
    parser.add_argument("--weights", nargs="+", type=Path, default=[],
                        help="evaluate these model.safetensors files (from `i2v train`) instead")
    parser.add_argument("--clips-per-class", type=int, default=3, help="held-out clips per motion class (default 3)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    parser.add_argument("--sampler", default=None, help="sampler (default dpmpp_2m)")
    parser.add_argument("--data-seed", type=int, default=0, help="data seed of the held-out split (default 0)")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (default 1 = off)")
    parser.add_argument("--start-sigma", type=float, default=None, help="SDEdit start level (default: pure noise)")
    parser.add_argument("--sigma-min", type=float, default=None,
                        help="lowest noise level (default: the weights' recommendation, else 0.002)")
    parser.add_argument("--split", default="eval", choices=("eval", "train"),
                        help="held-out clips (default) or training clips, to tune options without the held-out set")
    add_threads_argument(parser)
    parser.add_argument("--json", type=Path, default=None, help="also write the scores as JSON")
    parser.add_argument("--figure", type=Path, default=None,
                        help="also draw a PNG: truth and each method for the first clip of pan-left, zoom-in, "
                             "rotate-cw and bounce, every third frame")
    parser.add_argument("--merge", nargs="+", type=Path, default=[],
                        help="print the table of these --json reports combined (no evaluation)")


def run(args) -> int:

    from ..errors import ConfigError
    from ..evaluate import Report, evaluate, format_table, samples_figure
    from ..pipelines.builtin import BuiltinPipeline

    if args.merge:
        reports = [Report.read(p) for p in args.merge]
        merged = reports[0]
        for r in reports[1:]:
            merged = merged.merge(r)
        print(format_table(merged))
        return 0
    if args.clips_per_class < 1:
        raise ConfigError(f"--clips-per-class must be >= 1, got {args.clips_per_class}")
    check_count("steps", args.steps)
    for out, flag in ((args.json, "--json"), (args.figure, "--figure")):  # before an evaluation that takes minutes
        if out is not None:
            check_writable(out, overwrite=True, flag=flag)
    set_threads(args.threads)
    pipes = {}
    if args.weights:
        for p in args.weights:
            pipe = BuiltinPipeline.load(path=p)
            pipes[f"{pipe.backbone} ({p.parent.name or p.stem})"] = pipe
    else:
        for b in args.backbone:
            if b != "none":
                pipes[b] = BuiltinPipeline.load(b)
    kept = {} if args.figure else None
    report = evaluate(pipes, clips_per_class=args.clips_per_class, steps=args.steps, sampler=args.sampler,
                      data_seed=args.data_seed, split=args.split, guidance=args.guidance,
                      start_sigma=args.start_sigma, sigma_min=args.sigma_min, keep=kept)
    print(format_table(report))
    if args.figure:
        print(f"wrote {samples_figure(kept, args.figure)}")
    if args.json:
        with atomic(args.json, overwrite=True) as tmp:
            tmp.write_text(report.to_json())
        print(f"wrote {args.json}")
    return 0
