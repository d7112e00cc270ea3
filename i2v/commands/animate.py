"""`i2v animate IMAGE -o out.mp4`: animate an image.

Without ``--checkpoint`` the built-in model runs (:mod:`i2v.pipelines.builtin`, shipped weights, 64x64);
with ``--checkpoint PATH`` the checkpoint's family, as the registry names it (:func:`i2v.registry.identify_path`),
decides: built-in weights (e.g. trained with `i2v train`) run the built-in model, Stable Video Diffusion runs
:mod:`i2v.pipelines.svd` (see :mod:`.svd`), Wan runs :mod:`i2v.pipelines.wan` (see :mod:`.wan`). Options that only
other families understand are refused, with a message naming the family each belongs to (:data:`TAKES`).
"""

from __future__ import annotations

from pathlib import Path

from ..data.procedural import MOTIONS
from ..diffusion.catalog import SAMPLERS, SCHEDULES
from ..errors import ConfigError
from ..runtime import add_threads_argument, set_threads
from . import svd, wan
from .common import add_output_arguments, check_output, write_video

HELP = "animate an image: the built-in model by default, Stable Video Diffusion or Wan with --checkpoint"
EXAMPLES = """examples (built-in model, no download):
  i2v animate i2v/assets/example.png -o out.mp4
  i2v animate photo.jpg --motion pan-left --speed 1.5 -o pan.gif
  i2v animate photo.jpg --backbone dit --sampler heun --steps 12 --seed 3 -o dit.mp4
  i2v animate photo.jpg --motion rotate-cw --upscale 4 --interpolate 2 -o big.mp4
motions: """ + ", ".join(MOTIONS) + "\n\n" + svd.EXAMPLES.replace("examples:", "examples (Stable Video Diffusion):") \
    + "\n\n" + wan.EXAMPLES

# defaults of the options each model alone understands (the parser keeps them None to tell "not given")
BUILTIN_DEFAULTS = {"motion": "zoom-in", "speed": 1.0, "backbone": "unet", "guidance": 1.0, "start_sigma": None,
                    "sigma_min": None, "upscale": 1.0}
BUILTIN_SHARED_DEFAULTS = {"steps": 20, "seed": 0, "fps": 8.0}


def add_arguments(parser) -> None:
    parser.add_argument("image", type=Path, help="input image (png, jpg, ...; alpha is composited over white)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a Stable Video Diffusion checkpoint (svd.safetensors, svd_xt.safetensors, "
                             "svd_xt_1_1.safetensors, or a diffusers folder); without it the built-in model runs")
    add_output_arguments(parser, default_fps=None, fps_default_text="8 built-in, 7 SVD")
    g = parser.add_argument_group("sampling (both models)")
    g.add_argument("--frames", type=int, default=None, help="number of frames (built-in 16; svd 14, svd_xt 25)")
    g.add_argument("--steps", type=int, default=None, help="sampling steps (built-in 20; svd 25, svd_xt 30)")
    g.add_argument("--sampler", default=None, choices=list(SAMPLERS), metavar="SAMPLER",
                   help="any sampler of `i2v samplers` (built-in: the weights' choice, dpmpp_2m; SVD: euler, as the original)")
    g.add_argument("--schedule", default=None, choices=list(SCHEDULES), metavar="SCHEDULE",
                   help="noise schedule of `i2v samplers` (default karras)")
    g.add_argument("--seed", type=int, default=None, help="noise seed; the same seed gives the same video "
                                                          "(built-in default 0; SVD default random, printed)")
    add_threads_argument(g)
    b = parser.add_argument_group("built-in model (without --checkpoint)")
    b.add_argument("--motion", default=None, choices=MOTIONS, metavar="MOTION",
                   help=f"camera or object motion (default zoom-in): {', '.join(MOTIONS)}")
    b.add_argument("--speed", type=float, default=None, help="motion speed, trained on 0.5 .. 1.5 (default 1)")
    b.add_argument("--backbone", default=None, choices=("unet", "dit"),
                   help="factorised 3D U-Net or spatio-temporal DiT (default unet)")
    b.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale on the motion label (1 = off, default)")
    b.add_argument("--start-sigma", type=float, default=None,
                   help="start from the still image plus noise of this level instead of pure noise (SDEdit; "
                        "lower = closer to the input, less motion)")
    b.add_argument("--sigma-min", type=float, default=None,
                   help="lowest noise level before the final jump to 0 (default: the weights' recommendation, "
                        "else 0.002; larger = smoother, less residual noise)")
    b.add_argument("--upscale", type=float, default=None, help="resize the output by this factor (bicubic; default 1)")
    svd.add_svd_arguments(parser.add_argument_group("Stable Video Diffusion (with --checkpoint)"))
    wan.add_wan_arguments(parser.add_argument_group(
        "Wan (with --checkpoint; also --guidance: default 5.0, --dtype: default bfloat16 on CUDA, --device: default cuda "
        "when present, --save-latents, --clip-head-width)"))


# the options only some families take (beyond the image, --checkpoint, the output options, --frames, --steps,
# --sampler, --seed, --threads): the parser keeps them None when not given, and the family that runs refuses the rest
TAKES = {
    "builtin": set(BUILTIN_DEFAULTS) | {"schedule"},
    "svd": set(svd.SVD_DEFAULTS) | {"schedule"},
    "wan": set(wan.WAN_OPTIONS) | set(wan.WAN_SHARED),
}
NAMES = {"builtin": "the built-in model", "svd": "Stable Video Diffusion", "wan": "Wan"}
BUILTIN_FROM_FILE = {"backbone"}  # a built-in checkpoint says its backbone itself


def _given(args, names) -> list[str]:
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n, None) is not None]


def _it(options: list[str]) -> str:
    return "it" if len(options) == 1 else "them"


def _fill(args, defaults: dict) -> None:
    for k, v in defaults.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)


def _refuse(args, family: str | None) -> None:
    """A ConfigError naming every given option that ``family`` does not take, and the families that do.
    ``family`` None: a --checkpoint not opened yet; then only the options no checkpoint family takes are refused."""
    from_file = BUILTIN_FROM_FILE if args.checkpoint is not None else set()
    if family is None:
        allowed = (TAKES["builtin"] - from_file) | TAKES["svd"] | TAKES["wan"]
    else:
        allowed = TAKES[family] - (from_file if family == "builtin" else set())
    wrong = [n for n in sorted(set().union(*TAKES.values()) - allowed) if getattr(args, n, None) is not None]
    if not wrong:
        return
    groups: dict[str, list[str]] = {}
    for n in wrong:
        who = [NAMES[f] for f in TAKES if n in TAKES[f] and f != family]
        if n in from_file:
            who = ["the built-in model without --checkpoint (a built-in checkpoint says its backbone itself)"]
        groups.setdefault(" and ".join(who), []).append("--" + n.replace("_", "-"))
    found = "; ".join(f"{', '.join(opts)}: only {who} take{'' if ' and ' in who else 's'} {_it(opts)}"
                      for who, opts in groups.items())
    them = _it(wrong)
    if args.checkpoint is None:
        context = (f"without --checkpoint the built-in model runs: add --checkpoint PATH (a model of that family) "
                   f"or drop {them}")
    elif family is None:
        context = f"--checkpoint selects a checkpoint's model: drop {them} or drop --checkpoint"
    else:
        context = f"--checkpoint {args.checkpoint} is a {NAMES[family]} checkpoint: drop {them}"
    raise ConfigError(f"{found}; {context}")


def _builtin_animate(checkpoint):
    """pipelines.builtin.animate, or the same call on built-in weights given as a file (e.g. `i2v train`'s
    model.safetensors: the file says its backbone)."""
    from ..pipelines import builtin

    if checkpoint is None:
        return builtin.animate
    pipe = builtin.load(path=checkpoint)
    return lambda image, backbone=None, **kw: pipe(image, **kw)


def run(args) -> int:
    set_threads(args.threads)
    family = "builtin"
    if args.checkpoint is not None:
        _refuse(args, None)  # before the file is even opened
        from ..registry import identify_path

        match = identify_path(args.checkpoint)
        family = match.family
        if family not in TAKES:
            raise ConfigError(f"--checkpoint {args.checkpoint}: {match.description} (family {family!r}); `i2v animate` "
                              "runs built-in, Stable Video Diffusion and Wan checkpoints")
        _refuse(args, family)
        if family == "svd":
            return svd.run(args)
        if family == "wan":
            if match.variant == "latents" or "vae" in match.variant:
                raise ConfigError(f"--checkpoint {args.checkpoint}: {match.description}; give the Wan model (its "
                                  "folder or DiT file) as --checkpoint")
            return wan.run(args)
    _refuse(args, "builtin")
    _fill(args, BUILTIN_DEFAULTS)
    _fill(args, BUILTIN_SHARED_DEFAULTS)
    animate = _builtin_animate(args.checkpoint)
    check_output(args)
    frames = animate(args.image, motion=args.motion, backbone=args.backbone, steps=args.steps, sampler=args.sampler,
                     schedule=args.schedule, seed=args.seed, frames=args.frames, speed=args.speed,
                     guidance=args.guidance, upscale=args.upscale, start_sigma=args.start_sigma,
                     sigma_min=args.sigma_min)
    write_video(frames, args)
    return 0
