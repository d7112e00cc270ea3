"""`i2v cinemagraph`: a seamless loop from one photo and a static motion field (motion brush or flow).
Mirrors :func:`i2v.motion.eulerian.cinemagraph`."""

import warnings

import numpy as np
from pathlib import Path

from ..errors import ConfigError
from ..image import load_image
from ..motion.flow import FLOW_METHODS
from ..runtime import add_threads_argument, set_threads
from .. import runtime
from ..runtime import check_number
from .common import add_output_arguments, check_frames, check_output, write_video

HELP = "animate parts of a photo along a motion brush or flow field as a seamless loop (Eulerian motion)"
EXAMPLES = """examples:
  i2v cinemagraph lake.jpg --motion brush.json --frames 60 -o loop.mp4
  i2v cinemagraph lake.jpg --motion flow.flo --speed 0.5 -o loop.gif
  i2v cinemagraph lake.jpg --motion-from river.mp4 --motion water.json -o loop.mp4   (the clip's mean motion, inside
                                                                                the brushed regions only)
  i2v cinemagraph lake.jpg --motion-from river.mp4 --flow raft --flow-checkpoint raft-things.pth -o loop.mp4

brush.json (pixels of the photo; direction in degrees, 0 = right, 90 = down, or [dx, dy]; speed in px/frame):
  {"regions": [
     {"polygon": [[0, 300], [640, 300], [640, 480], [0, 480]], "direction": 0, "speed": 1.5, "feather": 8},
     {"box": [100, 50, 300, 120], "direction": [1, 0.2], "speed": 0.5},
     {"mask": "waterfall.png", "direction": 90, "speed": 3}]}
optional top-level "size": [w, h] when the brush was drawn on a resized copy.
A .flo file is used as the velocity (pixels per frame), times --speed."""


def add_arguments(parser):
    parser.add_argument("image", type=Path, help="input photo")
    parser.add_argument("--motion", type=Path, help="motion brush .json or flow .flo (pixels per frame); with "
                        "--motion-from, a brush only says WHERE the clip's motion applies")
    parser.add_argument("--motion-from", type=Path, metavar="CLIP",
                        help="take the motion from a reference video (or frame folder): the mean optical flow of its frames")
    parser.add_argument("--flow", default="dis", choices=list(FLOW_METHODS), help="flow method for --motion-from (default dis)")
    parser.add_argument("--flow-checkpoint", type=Path, help="RAFT weights for --flow raft")
    parser.add_argument("--max-frames", type=int, default=64, help="--motion-from: use at most this many frames (default 64)")
    parser.add_argument("--frames", type=int, default=60, help="frames in the loop (default 60)")
    parser.add_argument("--speed", type=float, default=1.0, help="multiply the motion field by this (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_threads_argument(parser)
    add_output_arguments(parser, default_fps=30.0)


def run(args) -> int:
    check_output(args)
    if args.motion is None and args.motion_from is None:
        raise ConfigError("give the motion: --motion brush.json / flow.flo, or --motion-from clip.mp4")
    if args.motion_from is None and (args.flow != "dis" or args.flow_checkpoint is not None):
        raise ConfigError("--flow and --flow-checkpoint choose how --motion-from measures the clip; add --motion-from")
    if FLOW_METHODS[args.flow][1] and args.flow_checkpoint is None:
        raise ConfigError(f"--flow {args.flow} needs --flow-checkpoint (e.g. raft-things.pth)")
    check_number("--speed", args.speed, 0, 100, low_open=True)
    runtime.device(args.device)
    image = load_image(args.image)
    check_frames(args, image.shape)
    set_threads(args.threads)
    from .. import video
    from ..motion.eulerian import brush_to_motion, cinemagraph, load_motion, motion_from_video

    h, w = image.shape[:2]
    motion = args.motion
    if args.motion_from is not None:
        clip, _ = video.load(args.motion_from, max_frames=args.max_frames)
        mask = None
        if args.motion is not None:
            brushed = brush_to_motion(args.motion, h, w) if args.motion.suffix.lower() == ".json" else load_motion(args.motion, h, w)
            mask = (np.hypot(brushed[..., 0], brushed[..., 1]) > 1e-6).astype(np.float32)
        options = {"checkpoint": args.flow_checkpoint, "device": args.device} if FLOW_METHODS[args.flow][1] else {}
        motion = motion_from_video(clip, h, w, mask, args.flow, **options)
        print(f"motion from {args.motion_from}: {len(clip)} frames, mean |M| "
              f"{np.hypot(motion[..., 0], motion[..., 1]).mean():.2f} px/frame ({args.flow})")
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        frames = cinemagraph(image, motion, frames=args.frames, speed=args.speed, device=args.device)
    for note in notes:
        print(f"note: {note.message}")
    args.loop = True  # the output is a loop: with --interpolate N, interpolate the last -> first step too
    write_video(frames, args)
    return 0
