"""`i2v interpolate`: more frames between the frames of a video or a folder of frames (flow or RIFE)."""

from __future__ import annotations

from pathlib import Path

from .. import video
from ..errors import ConfigError, InputError
from ..interpolate import METHODS
from ..motion.flow import FLOW_METHODS
from .. import runtime
from ..runtime import add_threads_argument, check_count, check_number, set_threads
from .common import check_output

HELP = "interpolate a video or a folder of frames to N times the frames (flow-based or RIFE 4.25)"
EXAMPLES = """examples:
  i2v interpolate clip.mp4 -o smooth.mp4 --factor 4
  i2v interpolate clip.mp4 -o clip60.mp4 --fps 60
  i2v interpolate frames/ -o loop.gif --factor 2 --loop --input-fps 12
  i2v interpolate clip.mp4 -o out.mp4 --method rife --checkpoint train_log/flownet.pkl
  i2v interpolate clip_4k.mp4 -o out.mp4 --method rife --checkpoint flownet.pkl --scale 0.5
  i2v interpolate clip.mp4 -o out.mp4 --method flow --flow raft --flow-checkpoint raft-things.pth"""

DEFAULT_FOLDER_FPS = 8.0


def add_arguments(parser):
    parser.add_argument("input", type=Path, help="video file (.mp4, .gif, ...) or a folder of frames (sorted by name)")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output: .mp4 (H.264), .gif, or a folder name without a suffix for PNG frames")
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--factor", type=int, default=None, help="N times the frames (N >= 2; default 2)")
    rate.add_argument("--fps", type=float, default=None, help="target frame rate instead of a factor")
    parser.add_argument("--input-fps", type=float, default=None,
                        help=f"frame rate of the input (default: read from the file; {DEFAULT_FOLDER_FPS:g} for a folder)")
    parser.add_argument("--method", choices=METHODS, default="flow", help="flow: DIS optical flow, no weights "
                        "(default); rife: RIFE 4.25, needs --checkpoint")
    parser.add_argument("--checkpoint", type=Path, default=None, help="RIFE 4.25 flownet.pkl (Practical-RIFE train_log)")
    parser.add_argument("--flow", default="dis-fine", choices=list(FLOW_METHODS),
                        help="optical flow of --method flow (default dis-fine; raft needs --flow-checkpoint)")
    parser.add_argument("--flow-checkpoint", type=Path, default=None, help="RAFT weights for --flow raft (raft-things.pth)")
    parser.add_argument("--flow-iters", type=int, default=12, help="RAFT iterations for --flow raft (default 12)")
    parser.add_argument("--scale", type=float, default=1.0, help="RIFE flow resolution: 1.0 up to 1080p, 0.5 for 4K")
    parser.add_argument("--device", default="cpu", help="torch device for RIFE (cpu, cuda, mps)")
    parser.add_argument("--loop", action="store_true", help="also interpolate last -> first so the clip loops seamlessly")
    parser.add_argument("--no-scene-cuts", action="store_true", help="interpolate across detected scene cuts too")
    parser.add_argument("--duplicate-threshold", type=float, default=0.5,
                        help="a frame differing from the previous by less (mean abs, 0..255) is a duplicate and is "
                             "re-interpolated (0 disables; default 0.5)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    add_threads_argument(parser)


MAX_FACTOR = 64


def run(args) -> int:
    if Path(args.output).resolve() == Path(args.input).resolve():
        raise InputError(f"the output {args.output} is the input; write to another path (inputs are never overwritten)")
    check_output(args)
    if args.factor is not None and not 2 <= args.factor <= MAX_FACTOR:
        raise ConfigError(f"--factor must be between 2 and {MAX_FACTOR}, got {args.factor}")
    if args.input_fps is not None:
        check_number("--input-fps", args.input_fps, 0, low_open=True)
    check_number("--duplicate-threshold", args.duplicate_threshold, 0, 255)
    check_count("flow_iters", args.flow_iters)
    runtime.device(args.device)
    if args.method == "rife" and args.checkpoint is None:
        raise ConfigError("--method rife needs --checkpoint flownet.pkl (RIFE 4.25, Practical-RIFE train_log)")
    if args.method == "flow" and FLOW_METHODS[args.flow][1] and args.flow_checkpoint is None:
        raise ConfigError(f"--flow {args.flow} needs --flow-checkpoint (e.g. raft-things.pth)")
    if args.method != "flow" and (args.flow != "dis-fine" or args.flow_checkpoint is not None):
        raise ConfigError("--flow and --flow-checkpoint choose the optical flow of --method flow; drop them for --method rife")
    set_threads(args.threads)
    from ..interpolate import interpolate_frames

    frames, file_fps = video.load(args.input)
    fps_in = args.input_fps or file_fps or DEFAULT_FOLDER_FPS
    if args.fps is not None and args.fps <= fps_in:
        raise ConfigError(f"--fps {args.fps:g} is not above the input's {fps_in:g} fps: interpolation adds frames; to "
                          "drop frames, re-encode the video instead (or set --input-fps if the file's rate is wrong)")
    factor = None if args.fps is not None else (args.factor if args.factor is not None else 2)
    n_out = len(frames) * (factor if factor else args.fps / fps_in)
    runtime.check_memory(n_out * frames[0].nbytes * 2, f"{int(n_out)} output frames of {frames.shape[2]}x{frames.shape[1]}",
                         "lower --factor / --fps, or split the clip")
    out = interpolate_frames(frames, factor, args.method, fps_in=fps_in, fps_out=args.fps, loop=args.loop,
                             checkpoint=args.checkpoint, scale=args.scale, device=args.device, flow=args.flow,
                             flow_checkpoint=args.flow_checkpoint, flow_iters=args.flow_iters,
                             scene_cuts=not args.no_scene_cuts, duplicate_threshold=args.duplicate_threshold)
    fps_out = args.fps if args.fps is not None else fps_in * factor
    path = video.save(out, args.output, fps=fps_out, overwrite=args.overwrite)
    print(f"wrote {path} ({len(frames)} -> {len(out)} frames, {fps_in:g} -> {fps_out:g} fps, {args.method})")
    return 0
