"""`i2v train`: train the built-in image-to-video model from a TOML preset (see i2v/train.py)."""

from __future__ import annotations

from ..runtime import add_threads_argument, set_threads

HELP = "train the built-in image-to-video model on procedural clips (CPU or CUDA)"
EXAMPLES = """examples:
  i2v train --config configs/builtin_unet.toml
  i2v train --config configs/builtin_dit.toml --set train.max_minutes=30 --set train.threads=1
  i2v train --config configs/builtin_unet.toml --resume          continue from runs/builtin_unet/checkpoint.safetensors
  i2v train --config configs/builtin_unet.toml --set train.steps=50 --set train.out_dir=runs/smoke
  i2v train --config configs/builtin_unet.toml --set train.stage=calibrate --set train.temporal_loss=2 \\
      --set train.lr=6e-3 --set train.init=runs/builtin_unet/model.safetensors --set train.out_dir=runs/calibrate
                                 then fit only its warp mask, on the sampler's own trajectories
  i2v train --config configs/builtin_unet.toml --set train.stage=camera --set train.batch_size=512 \\
      --set train.lr=3e-4 --set train.steps=3500 --set train.init=runs/calibrate/model.safetensors \\
      --set train.out_dir=runs/camera
                                 then fit its warp head's camera move to the true one (no clip rendered)
  torchrun --nproc-per-node 4 -m i2v train --config configs/builtin_dit.toml --set train.batch_size=8
                                 data parallel: 4 processes (GPUs) of 2 clips each (docs/distributed.md)"""


def add_arguments(parser):
    parser.add_argument("--config", required=True, help="TOML preset, e.g. configs/builtin_unet.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (TOML syntax, type-checked); repeatable")
    parser.add_argument("--resume", action="store_true", help="continue from <out_dir>/checkpoint.safetensors")
    add_threads_argument(parser)


def run(args) -> int:
    from ..nn.parallel import launched
    from ..train import load_config, train

    with launched() as launch:  # under torchrun: one of N data-parallel processes; else nothing changes
        cfg = load_config(args.config, args.overrides + ([f"train.threads={args.threads}"] if args.threads else []))
        set_threads(cfg.train.threads or launch.cpu_threads())
        train(cfg, resume=args.resume, progress=launch.main)
    return 0
