"""`i2v animate IMAGE -o out.mp4`: animate an image.

Without ``--checkpoint`` the built-in model runs (:mod:`i2v.pipelines.builtin`, shipped weights: motion generated
at 64 px on the photo's aspect ratio, rendered at the photo's resolution; ``--size 64`` for the model's own
64x64 centre square);
with ``--checkpoint PATH`` Stable Video Diffusion runs (:mod:`i2v.pipelines.svd`, see :mod:`.svd`). Options
that only one of the two understands are refused for the other, with a message saying which they belong to.
"""

from __future__ import annotations

from pathlib import Path

from ..data.procedural import MOTIONS
from ..diffusion.catalog import SAMPLERS, SCHEDULES
from ..errors import ConfigError
from ..runtime import add_threads_argument, set_threads
from . import svd
from .common import add_output_arguments, check_output, write_video

HELP = "animate an image: the built-in model by default, Stable Video Diffusion with --checkpoint"
EXAMPLES = """examples (built-in model, no download):
  i2v animate i2v/assets/example.png -o out.mp4
  i2v animate photo.jpg --motion pan-left --speed 1.5 -o pan.gif
  i2v animate photo.jpg --backbone dit --sampler heun --steps 12 --seed 3 -o dit.mp4
  i2v animate photo.jpg --motion rotate-cw --upscale 2 --interpolate 2 -o big.mp4
  i2v animate photo.jpg --size 64 -o square.mp4          # the model's own 64x64 output (centre square)
motions: """ + ", ".join(MOTIONS) + "\n\n" + svd.EXAMPLES.replace("examples:", "examples (Stable Video Diffusion):")

# defaults of the options each model alone understands (the parser keeps them None to tell "not given")
BUILTIN_DEFAULTS = {"motion": "zoom-in", "speed": 1.0, "backbone": "unet", "guidance": 1.0, "start_sigma": None,
                    "sigma_min": None, "upscale": 1.0, "size": None}
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
    b.add_argument("--size", type=int, default=None, metavar="N",
                   help="the old behaviour: centre-crop a square and generate it at N x N, output N x N (trained "
                        "at 64; N a multiple of 16 for the U-Net, 4 for the DiT). Default: the motion is generated "
                        "at 64 px on the longer side, on the photo's aspect ratio (sides padded to those multiples), "
                        "and rendered at the photo's own resolution (the photo moved, plus the generated residual)")
    b.add_argument("--upscale", type=float, default=None,
                   help="output size factor (default 1): renders at this times the photo's size, or with --size "
                        "resizes the N x N frames (bicubic)")
    svd.add_svd_arguments(parser.add_argument_group("Stable Video Diffusion (with --checkpoint)"))


def _given(args, names) -> list[str]:
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n, None) is not None]


def _it(options: list[str]) -> str:
    return "it" if len(options) == 1 else "them"


def _fill(args, defaults: dict) -> None:
    for k, v in defaults.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)


def run(args) -> int:
    set_threads(args.threads)
    if args.checkpoint is not None:
        wrong = _given(args, BUILTIN_DEFAULTS)
        if wrong:
            raise ConfigError(f"{', '.join(wrong)}: only the built-in model takes {_it(wrong)}, and --checkpoint "
                              f"selects Stable Video Diffusion; drop {_it(wrong)} or drop --checkpoint")
        return svd.run(args)
    wrong = _given(args, svd.SVD_DEFAULTS)
    if wrong:
        raise ConfigError(f"{', '.join(wrong)}: only Stable Video Diffusion takes {_it(wrong)}; add --checkpoint "
                          f"PATH (an SVD checkpoint) or drop {_it(wrong)}")
    _fill(args, BUILTIN_DEFAULTS)
    _fill(args, BUILTIN_SHARED_DEFAULTS)
    from ..pipelines.builtin import animate

    check_output(args)
    frames = animate(args.image, motion=args.motion, backbone=args.backbone, steps=args.steps, sampler=args.sampler,
                     schedule=args.schedule, seed=args.seed, frames=args.frames, speed=args.speed,
                     guidance=args.guidance, upscale=args.upscale, start_sigma=args.start_sigma,
                     sigma_min=args.sigma_min, size=args.size, log=print)
    write_video(frames, args)
    return 0
