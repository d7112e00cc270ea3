"""Arguments and output handling shared by every subcommand that writes a video."""

from __future__ import annotations

from pathlib import Path

from .. import video
from ..errors import ConfigError


def add_output_arguments(parser, default_fps: float | None = 8.0, fps_default_text: str | None = None) -> None:
    """-o/--output, --fps, --overwrite, --codec, --interpolate: the same on every command that writes a video.
    ``default_fps=None`` leaves the choice to the command (say which in ``fps_default_text``)."""
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output: .mp4 (H.264), .gif, or a folder name without a suffix for PNG frames")
    parser.add_argument("--fps", type=float, default=default_fps, help=f"frames per second (default {fps_default_text or f'{default_fps:g}'})")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    parser.add_argument("--codec", choices=list(video.CODECS),
                        help="video codec (default h264; vp9 for .webm; mp4v = OpenCV without ffmpeg)")
    parser.add_argument("--interpolate", type=int, default=1, metavar="N",
                        help="N times the frames by frame interpolation before writing, played at N x --fps "
                             "(same duration, smoother); default 1 = off. With the command's --loop (if any) the "
                             "last -> first step is interpolated too")
    parser.add_argument("--interpolate-method", choices=("flow", "rife"), default="flow",
                        help="flow: DIS optical flow, no weights (default); rife: RIFE 4.25, needs --interpolate-checkpoint")
    parser.add_argument("--interpolate-checkpoint", type=Path, default=None, metavar="FLOWNET_PKL",
                        help="RIFE 4.25 flownet.pkl for --interpolate-method rife")


def check_output(args) -> None:
    """Fail early (before any long work) if the output exists and --overwrite was not given, or the
    interpolation options cannot work."""
    if Path(args.output).exists() and not args.overwrite:
        raise video.OutputExistsError(f"{args.output} exists; pass --overwrite to replace it")
    _check_interpolation(args)


def _check_interpolation(args) -> int:
    n = getattr(args, "interpolate", 1)
    n = 1 if n is None else n
    if n < 1:
        raise ConfigError(f"--interpolate must be >= 1 (1 = off, 2 = twice the frames), got {n}")
    if n > 1 and getattr(args, "interpolate_method", "flow") == "rife" and not getattr(args, "interpolate_checkpoint", None):
        raise ConfigError("--interpolate-method rife needs --interpolate-checkpoint flownet.pkl (RIFE 4.25)")
    return n


def write_video(frames, args) -> Path:
    """Write frames ((t, 3, h, w) float in [0, 1] or (t, h, w, 3) uint8) as the command's output; with
    ``--interpolate N`` (N > 1) interpolate them first (flow method unless --interpolate-method rife) and
    write at N x fps."""
    fps, n = args.fps, _check_interpolation(args)
    if n > 1:
        from ..interpolate import interpolate_frames

        frames = interpolate_frames(frames, factor=n, method=getattr(args, "interpolate_method", "flow"),
                                    checkpoint=getattr(args, "interpolate_checkpoint", None),
                                    loop=bool(getattr(args, "loop", False)))
        fps = fps * n
    path = video.save(frames, args.output, fps=fps, overwrite=args.overwrite, codec=getattr(args, "codec", None))
    print(f"wrote {path} ({len(frames)} frames at {fps:g} fps)")
    return path
