"""`i2v animate`: animate an image with the built-in model (see i2v/pipelines/builtin.py)."""

from __future__ import annotations

from ..data.procedural import MOTIONS
from ..diffusion.samplers import SAMPLERS
from ..diffusion.schedules import SCHEDULES
from .common import add_output_arguments, check_output, write_video

HELP = "animate an image into a short video with the built-in model (no download needed)"
EXAMPLES = """examples:
  i2v animate i2v/assets/example.png -o out.mp4
  i2v animate photo.jpg --motion pan-left --speed 1.5 -o pan.gif
  i2v animate photo.jpg --backbone dit --sampler heun --steps 12 --seed 3 -o dit.mp4
  i2v animate photo.jpg --motion rotate-cw --upscale 4 -o big.mp4
motions: """ + ", ".join(MOTIONS)


def add_arguments(parser):
    parser.add_argument("image", help="input image (png, jpg, ...); centre-cropped and resized to 64x64")
    add_output_arguments(parser)
    parser.add_argument("--motion", default="zoom-in", choices=MOTIONS, metavar="MOTION",
                        help=f"camera or object motion (default zoom-in): {', '.join(MOTIONS)}")
    parser.add_argument("--speed", type=float, default=1.0, help="motion speed, trained on 0.5 .. 1.5 (default 1)")
    parser.add_argument("--backbone", default="unet", choices=("unet", "dit"),
                        help="built-in backbone: factorised 3D U-Net or spatio-temporal DiT (default unet)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    parser.add_argument("--sampler", default=None, choices=list(SAMPLERS), metavar="SAMPLER",
                        help="any sampler of `i2v samplers` (default dpmpp_2m)")
    parser.add_argument("--schedule", default=None, choices=list(SCHEDULES), metavar="SCHEDULE",
                        help="noise schedule of `i2v samplers` (default karras)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed; the same seed gives the same video")
    parser.add_argument("--frames", type=int, default=None, help="number of frames (default: the model's 16)")
    parser.add_argument("--guidance", type=float, default=1.0,
                        help="classifier-free guidance scale on the motion label (1 = off, default)")
    parser.add_argument("--start-sigma", type=float, default=None,
                        help="start from the still image plus noise of this level instead of pure noise (SDEdit; "
                             "lower = closer to the input, less motion)")
    parser.add_argument("--sigma-min", type=float, default=None,
                        help="lowest noise level before the final jump to 0 (default: the weights' recommendation, "
                             "else 0.002; larger = smoother, less residual noise)")
    parser.add_argument("--upscale", type=float, default=1.0, help="resize the output by this factor (bicubic)")


def run(args) -> int:
    from ..pipelines.builtin import animate
    check_output(args)
    frames = animate(args.image, motion=args.motion, backbone=args.backbone, steps=args.steps, sampler=args.sampler,
                     schedule=args.schedule, seed=args.seed, frames=args.frames, speed=args.speed,
                     guidance=args.guidance, upscale=args.upscale, start_sigma=args.start_sigma,
                     sigma_min=args.sigma_min)
    write_video(frames, args)
    return 0
