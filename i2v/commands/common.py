"""Arguments and output handling shared by every subcommand that writes a video."""

from __future__ import annotations

from pathlib import Path

import math

from .. import video
from ..errors import ConfigError
from ..outputs import check_writable

MAX_INTERPOLATE = 32  # --interpolate N beyond this makes seconds of near-identical frames per input frame


def add_output_arguments(parser, default_fps: float | None = 8.0, fps_default_text: str | None = None) -> None:
    """-o/--output, --fps, --overwrite, --codec, --interpolate: the same on every command that writes a video.
    ``default_fps=None`` leaves the choice to the command (say which in ``fps_default_text``)."""
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help=f"output, by its suffix (default codec first): {video.formats_text()}")
    parser.add_argument("--fps", type=float, default=default_fps, help=f"frames per second (default {fps_default_text or f'{default_fps:g}'})")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    parser.add_argument("--codec", choices=list(video.CODECS),
                        help="video codec (default: h264; vp9 for .webm; mp4v = OpenCV's MPEG-4 part 2, no ffmpeg)")
    parser.add_argument("--interpolate", type=int, default=1, metavar="N",
                        help="N times the frames by frame interpolation before writing, played at N x --fps "
                             "(same duration, smoother); default 1 = off. With the command's --loop (if any) the "
                             "last -> first step is interpolated too")
    parser.add_argument("--interpolate-method", choices=("flow", "rife"), default="flow",
                        help="flow: DIS optical flow, no weights (default); rife: RIFE 4.25, needs --interpolate-checkpoint")
    parser.add_argument("--interpolate-checkpoint", type=Path, default=None, metavar="FLOWNET_PKL",
                        help="RIFE 4.25 flownet.pkl for --interpolate-method rife")


def check_output(args) -> None:
    """Fail early, before any long work: the output's format and codec, that it may be written (it does not exist
    unless --overwrite, it is not an input, its folder is writable and not full), --fps, and the interpolation
    options."""
    video.check_format(args.output, getattr(args, "codec", None))
    inputs = [getattr(args, name, None) for name in ("image", "input", "latents", "last_frame")]
    check_writable(args.output, args.overwrite, inputs=inputs)
    fps = getattr(args, "fps", None)
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"--fps must be a number > 0 (frames per second), got {fps:g}")
    _check_interpolation(args)


MAX_FRAMES = 2000


def check_frames(args, image_shape, min_side: int = 8) -> None:
    """Before rendering ``args.frames`` frames of a (h, w, 3) image: a frame count in range, an image large enough to
    move pixels in, and the frame buffers (float32 frames, their uint8 copy, interpolation) fitting in memory."""
    from .. import runtime
    from ..image import check_size

    h, w = image_shape[:2]
    check_size(h, w, min_side, f"i2v {args.command}")
    if not 2 <= args.frames <= MAX_FRAMES:
        raise ConfigError(f"--frames must be between 2 and {MAX_FRAMES}, got {args.frames}")
    n = args.frames * max(1, getattr(args, "interpolate", 1) or 1)
    runtime.check_memory(n * h * w * 3 * (4 + 1) + 8 * h * w * 4 * 4, f"{n} frames of {w}x{h}",
                         "lower --frames or --interpolate, or resize the photo")


def _check_interpolation(args) -> int:
    n = getattr(args, "interpolate", 1)
    n = 1 if n is None else n
    if not 1 <= n <= MAX_INTERPOLATE:
        raise ConfigError(f"--interpolate must be between 1 (off) and {MAX_INTERPOLATE} (times the frames), got {n}")
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
