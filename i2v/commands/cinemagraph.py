"""`i2v cinemagraph`: a seamless loop from one photo and a static motion field (motion brush or flow).
Mirrors :func:`i2v.motion.eulerian.cinemagraph`."""

import warnings
from pathlib import Path

from ..image import load_image
from ..runtime import add_threads_argument, set_threads
from .common import add_output_arguments, check_output, write_video

HELP = "animate parts of a photo along a motion brush or flow field as a seamless loop (Eulerian motion)"
EXAMPLES = """examples:
  i2v cinemagraph lake.jpg --motion brush.json --frames 60 -o loop.mp4
  i2v cinemagraph lake.jpg --motion flow.flo --speed 0.5 -o loop.gif

brush.json (pixels of the photo; direction in degrees, 0 = right, 90 = down, or [dx, dy]; speed in px/frame):
  {"regions": [
     {"polygon": [[0, 300], [640, 300], [640, 480], [0, 480]], "direction": 0, "speed": 1.5, "feather": 8},
     {"box": [100, 50, 300, 120], "direction": [1, 0.2], "speed": 0.5},
     {"mask": "waterfall.png", "direction": 90, "speed": 3}]}
optional top-level "size": [w, h] when the brush was drawn on a resized copy.
A .flo file is used as the velocity (pixels per frame), times --speed."""


def add_arguments(parser):
    parser.add_argument("image", type=Path, help="input photo")
    parser.add_argument("--motion", type=Path, required=True, help="motion brush .json or flow .flo (pixels per frame)")
    parser.add_argument("--frames", type=int, default=60, help="frames in the loop (default 60)")
    parser.add_argument("--speed", type=float, default=1.0, help="multiply the motion field by this (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_threads_argument(parser)
    add_output_arguments(parser, default_fps=30.0)


def run(args) -> int:
    check_output(args)
    set_threads(args.threads)
    from ..motion.eulerian import cinemagraph

    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        frames = cinemagraph(load_image(args.image), args.motion, frames=args.frames, speed=args.speed, device=args.device)
    for note in notes:
        print(f"note: {note.message}")
    args.loop = True  # the output is a loop: with --interpolate N, interpolate the last -> first step too
    write_video(frames, args)
    return 0
