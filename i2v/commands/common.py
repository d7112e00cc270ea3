"""Arguments and output handling shared by every subcommand that writes a video."""

from __future__ import annotations

from pathlib import Path

from .. import video


def add_output_arguments(parser, default_fps: float = 8.0) -> None:
    """-o/--output, --fps, --overwrite: the same on every command that writes a video."""
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output: .mp4 (H.264), .gif, or a folder name without a suffix for PNG frames")
    parser.add_argument("--fps", type=float, default=default_fps, help=f"frames per second (default {default_fps:g})")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    parser.add_argument("--codec", choices=list(video.CODECS),
                        help="video codec (default h264; vp9 for .webm; mp4v = OpenCV without ffmpeg)")


def check_output(args) -> None:
    """Fail early (before any long work) if the output exists and --overwrite was not given."""
    if Path(args.output).exists() and not args.overwrite:
        raise video.OutputExistsError(f"{args.output} exists; pass --overwrite to replace it")


def write_video(frames, args) -> Path:
    """Write frames ((t, 3, h, w) float in [0, 1] or (t, h, w, 3) uint8) as the command's output."""
    path = video.save(frames, args.output, fps=args.fps, overwrite=args.overwrite, codec=getattr(args, "codec", None))
    print(f"wrote {path} ({len(frames)} frames at {args.fps:g} fps)")
    return path
