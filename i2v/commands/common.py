"""Arguments and output handling shared by every subcommand that writes a video."""

from __future__ import annotations

from pathlib import Path

from .. import video
from ..errors import ConfigError


def add_output_arguments(parser, default_fps: float = 8.0) -> None:
    """-o/--output, --fps, --overwrite: the same on every command that writes a video."""
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output: .mp4 (H.264), .gif, or a folder name without a suffix for PNG frames")
    parser.add_argument("--fps", type=float, default=default_fps, help=f"frames per second (default {default_fps:g})")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    parser.add_argument("--interpolate", type=int, default=1, metavar="N",
                        help="N times the frames by flow-based frame interpolation before writing, played at "
                             "N x --fps (same duration, smoother); default 1 = off")


def check_output(args) -> None:
    """Fail early (before any long work) if the output exists and --overwrite was not given."""
    if Path(args.output).exists() and not args.overwrite:
        raise video.OutputExistsError(f"{args.output} exists; pass --overwrite to replace it")


def write_video(frames, args) -> Path:
    """Write frames ((t, 3, h, w) float in [0, 1] or (t, h, w, 3) uint8) as the command's output; with
    ``--interpolate N`` (N > 1) interpolate them first (flow method) and write at N x fps."""
    fps, n = args.fps, getattr(args, "interpolate", 1) or 1
    if n < 1:
        raise ConfigError(f"--interpolate must be >= 1 (1 = off, 2 = twice the frames), got {n}")
    if n > 1:
        from ..interpolate import interpolate_frames

        frames = interpolate_frames(frames, factor=n, method="flow", loop=getattr(args, "loop", False))
        fps = fps * n
    path = video.save(frames, args.output, fps=fps, overwrite=args.overwrite)
    print(f"wrote {path} ({len(frames)} frames at {fps:g} fps)")
    return path
