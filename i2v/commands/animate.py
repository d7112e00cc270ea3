"""`i2v animate IMAGE -o out.mp4`: animate an image.

Without ``--checkpoint`` the built-in model runs (:mod:`i2v.pipelines.builtin`, shipped weights: motion generated
at 64 px on the photo's aspect ratio, rendered at the photo's resolution; ``--size 64`` for the model's own
64x64 centre square); with ``--checkpoint PATH`` the checkpoint's family, as the registry names it
(:func:`i2v.registry.identify_path`), decides: built-in weights (e.g. trained with `i2v train`) run the built-in
model, Stable Video Diffusion runs :mod:`i2v.pipelines.svd` (see :mod:`.svd`), Wan runs :mod:`i2v.pipelines.wan`
(see :mod:`.wan`). Options that only other families understand are refused, with a message naming the family each
belongs to (:data:`TAKES`).
"""

from __future__ import annotations

from pathlib import Path

from ..data.procedural import MOTIONS
from ..diffusion.catalog import SAMPLERS, SCHEDULES
from ..errors import ConfigError
from ..runtime import add_threads_argument, check_number, set_threads
from . import svd, wan
from .common import add_output_arguments, check_output, write_video

HELP = "animate an image: the built-in model by default, Stable Video Diffusion or Wan with --checkpoint"
EXAMPLES = """examples (built-in model, no download):
  i2v animate i2v/assets/example.png -o out.mp4
  i2v animate photo.jpg --motion pan-left --speed 1.5 -o pan.gif
  i2v animate photo.jpg --backbone dit --sampler heun --steps 12 --seed 3 -o dit.mp4
  i2v animate photo.jpg --motion rotate-cw --upscale 2 --interpolate 2 -o big.mp4
  i2v animate photo.jpg --size 64 -o square.mp4          # the model's own 64x64 output (centre square)
motions: """ + ", ".join(MOTIONS) + "\n\n" + svd.EXAMPLES.replace("examples:", "examples (Stable Video Diffusion):") \
    + "\n\n" + wan.EXAMPLES

# defaults of the options each model alone understands (the parser keeps them None to tell "not given")
BUILTIN_DEFAULTS = {"motion": "zoom-in", "speed": 1.0, "backbone": "unet", "guidance": 1.0, "start_sigma": None,
                    "sigma_min": None, "upscale": 1.0, "size": None}
BUILTIN_SHARED_DEFAULTS = {"steps": 20, "seed": 0, "fps": 8.0}
MAX_UPSCALE = 16.0  # --upscale beyond this only blurs a photo-sized output into gigabytes


def add_arguments(parser) -> None:
    parser.add_argument("image", type=Path, help="input image (png, jpg, ...; alpha is composited over white)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a checkpoint file or folder; its family decides the model: Stable Video Diffusion "
                             "(svd_xt.safetensors, a diffusers folder), Wan (Wan2.1-I2V-14B-480P/, a DiT file with "
                             "--vae/--text-encoder/--clip, a diffusers folder), or built-in weights from `i2v train`. "
                             "Without it the built-in model runs")
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
    g.add_argument("--size", default=None, metavar="N | 480p|720p|WxH",
                   help="built-in model: N = the old behaviour, centre-crop a square and generate it at N x N, "
                        "output N x N (trained at 64; N a multiple of 16 for the U-Net, 4 for the DiT); default: the "
                        "motion is generated at 64 px on the longer side, on the photo's aspect ratio (sides padded "
                        "to those multiples), and rendered at the photo's own resolution (the photo moved, plus the "
                        "generated residual). Wan: the video's pixel area, 480p, 720p or WxH; the aspect ratio "
                        "follows the image, as the original (default: 480p for a *480P* checkpoint, else 720p; TI2V "
                        "720p = 704x1280)")
    add_threads_argument(g)
    b = parser.add_argument_group("built-in model (without --checkpoint)")
    b.add_argument("--motion", default=None, choices=MOTIONS, metavar="MOTION",
                   help=f"motion (default zoom-in): {', '.join(MOTIONS)}. The camera moves (pan, zoom, rotate) "
                        "move the whole picture; slide and bounce were trained only on synthetic sprites (small "
                        "textured shapes sliding or bouncing over a still procedural background): on a photo "
                        "expect little or odd motion")
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
    b.add_argument("--upscale", type=float, default=None,
                   help="output size factor (default 1): renders at this times the photo's size, or with --size "
                        "resizes the N x N frames (bicubic)")
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
    if args.size is not None:
        try:
            args.size = int(args.size)
        except ValueError:
            raise ConfigError(f"--size {args.size}: the built-in model takes a number of pixels (e.g. --size 64); "
                              "480p / 720p / WxH are Wan's sizes") from None
    _fill(args, BUILTIN_DEFAULTS)
    _fill(args, BUILTIN_SHARED_DEFAULTS)
    check_number("--guidance", args.guidance, 0)  # 1 = off; 0 = the unconditional model; < 0 pushes away from the motion
    check_number("--upscale", args.upscale, 1, MAX_UPSCALE)
    check_number("--speed", args.speed, 0, 3, low_open=True)
    check_output(args)
    animate = _builtin_animate(args.checkpoint)
    frames = animate(args.image, motion=args.motion, backbone=args.backbone, steps=args.steps, sampler=args.sampler,
                     schedule=args.schedule, seed=args.seed, frames=args.frames, speed=args.speed,
                     guidance=args.guidance, upscale=args.upscale, start_sigma=args.start_sigma,
                     sigma_min=args.sigma_min, size=args.size, log=print)
    write_video(frames, args)
    return 0
