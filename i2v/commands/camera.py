"""`i2v camera`: a camera move through one photo using its depth. Mirrors
:func:`i2v.motion.camera.render_camera_move`."""

from pathlib import Path

from ..errors import ConfigError
from ..image import load_image
from ..motion.moves import EASINGS, FILLS, MOVES
from ..runtime import add_threads_argument, set_threads
from .. import runtime
from ..runtime import check_number
from .common import add_output_arguments, check_frames, check_output, write_video

HELP = "move a virtual camera through a photo (depth-based 3D warp, holes inpainted)"
MOVE_LINES = "\n".join(f"  {name:<14} {desc} (default amount {default:g})" for name, (_, default, desc) in MOVES.items())
EXAMPLES = f"""examples:
  i2v camera photo.jpg --depth depth.png --move orbit --frames 48 -o out.mp4
  i2v camera photo.jpg --depth depth.npy --move dolly-in --amount 0.4 -o in.mp4
  i2v camera photo.jpg --depth-model depth_anything_v2_vits.pth --move orbit -o orbit.mp4   (any photo)
  i2v camera photo.jpg --move zoom-in -o zoom.gif           (no depth: a stated fallback prior is used)
  i2v camera photo.jpg --depth d.png --move orbit --easing swing -o loop.mp4   (there and back: loops)

moves:
{MOVE_LINES}

depth files: .npy (float, depth), 16-bit PNG (depth, value / --depth-scale), 8-bit PNG (disparity, brighter =
nearer, value / --depth-scale); 0 = unknown. --depth-kind overrides depth/disparity."""


def add_arguments(parser):
    parser.add_argument("image", type=Path, help="input photo")
    parser.add_argument("--depth", type=Path, help="depth or disparity map (.npy, 16-bit or 8-bit PNG/PGM)")
    parser.add_argument("--depth-model", type=Path, metavar="CHECKPOINT",
                        help="estimate depth with Depth Anything V2 (depth_anything_v2_vits/vitb/vitl.pth) instead")
    parser.add_argument("--depth-range", type=float, default=10.0,
                        help="with --depth-model: farthest / nearest depth the inverse depth is mapped to (default 10)")
    parser.add_argument("--depth-kind", choices=["depth", "disparity"], help="what the depth file holds (default by type)")
    parser.add_argument("--depth-scale", type=float, help="divide the file's values by this (e.g. 4 for Middlebury disparity)")
    parser.add_argument("--move", default="orbit", help=f"camera move (default orbit): {', '.join(MOVES)}")
    parser.add_argument("--amount", type=float, help="size of the move (fraction of the median depth, or degrees)")
    parser.add_argument("--frames", type=int, default=48, help="number of frames (default 48)")
    parser.add_argument("--fov", type=float, default=60.0, help="horizontal field of view in degrees (default 60)")
    parser.add_argument("--easing", default="ease-in-out", help=f"timing: {', '.join(EASINGS)} (default ease-in-out)")
    parser.add_argument("--fill", default="telea", help=f"hole filling: {', '.join(FILLS)} (default telea)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_threads_argument(parser)
    add_output_arguments(parser, default_fps=24.0)


def run(args) -> int:
    check_output(args)
    if args.depth is not None and args.depth_model is not None:
        raise ConfigError("--depth gives a depth map and --depth-model estimates one: pass only one of them")
    check_number("--depth-range", args.depth_range, 1, low_open=True)
    if args.depth_scale is not None:
        check_number("--depth-scale", args.depth_scale, 0, low_open=True)
    if args.amount is not None:
        _, default, _ = MOVES.get(args.move.replace("_", "-").lower(), (None, 1.0, ""))
        limit = 90.0 if default >= 1 else 2.0  # degrees for turns and orbits, median depths (or zoom factors) otherwise
        check_number("--amount", args.amount, -limit, limit)
    check_number("--fov", args.fov, 1, 170)
    runtime.device(args.device)
    image = load_image(args.image)
    check_frames(args, image.shape)
    set_threads(args.threads)
    from ..motion.camera import render_camera_move

    depth = args.depth
    if args.depth_model is not None:
        from ..motion.depth import depth_from_model

        depth = depth_from_model(image, args.depth_model, device=args.device, depth_range=args.depth_range)
        print(f"note: {depth.note}")
    frames = render_camera_move(image, depth, move=args.move, frames=args.frames,
                                amount=args.amount, fov=args.fov, easing=args.easing, fill=args.fill,
                                depth_kind=args.depth_kind, depth_scale=args.depth_scale, device=args.device)
    write_video(frames, args)
    return 0
