"""Reading and writing videos, GIFs and folders of frames. One function each way: :func:`save`, :func:`load`.

Frames in memory are ``uint8`` numpy arrays ``(t, h, w, 3)`` RGB, or float tensors ``(t, 3, h, w)`` in
[0, 1] (converted on save). Writes go through :func:`i2v.outputs.atomic`: a hidden temporary beside the target,
published exclusively when complete, removed on failure; an existing output is only replaced with ``overwrite``.

:data:`FORMATS` is the one list of what can be written (the CLI's help and errors and the README use it): each
suffix with its default codec and the codecs that fit the container. Video codecs go through the ffmpeg binary
that ``imageio-ffmpeg`` ships (or an ``ffmpeg`` on PATH): H.264 (yuv420p, plays everywhere) by default, H.265,
VP9 (the default and only one for ``.webm``); "mp4v" is OpenCV's own MPEG-4 part 2 writer, used -- and said --
when no ffmpeg works.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np

from .errors import InputError
from .image import IMAGE_SUFFIXES, _is_tensor, load_image  # noqa: F401  (load_image: part of this module's API)

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm"}


def to_uint8(frames) -> np.ndarray:
    """(t, 3, h, w) float tensor in [0, 1] or (t, h, w, 3) uint8 array -> (t, h, w, 3) uint8."""
    if _is_tensor(frames):
        import torch

        if frames.ndim != 4 or frames.shape[1] not in (1, 3):
            raise InputError(f"expected frames as a (t, 3, h, w) tensor, got shape {tuple(frames.shape)}")
        x = frames.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return x.permute(0, 2, 3, 1).contiguous().numpy()  # (t, c, h, w) -> (t, h, w, c)
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"expected frames as a (t, h, w, 3) array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    return arr


def ffmpeg_executable() -> str | None:
    """Path of an ffmpeg binary: the one imageio-ffmpeg ships, else one on PATH, else None."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        return shutil.which("ffmpeg")


# codec name -> (ffmpeg encoder, extra ffmpeg arguments); "mp4v" is OpenCV's own MPEG-4 part 2 writer
CODECS = {
    "h264": ("libx264", ["-movflags", "+faststart"]),
    "h265": ("libx265", ["-tag:v", "hvc1", "-movflags", "+faststart"]),
    "vp9": ("libvpx-vp9", ["-b:v", "0"]),
    "mp4v": (None, []),
}

# output suffix -> (what it is, default codec, codecs that fit the container); "" = a folder of PNG frames
FORMATS = {
    ".mp4": ("MP4 video", "h264", ("h264", "h265", "mp4v")),
    ".mov": ("QuickTime video", "h264", ("h264", "h265", "mp4v")),
    ".mkv": ("Matroska video", "h264", ("h264", "h265", "vp9")),
    ".avi": ("AVI video", "h264", ("h264", "mp4v")),
    ".webm": ("WebM video", "vp9", ("vp9",)),
    ".gif": ("animated GIF (256 colours, loops)", None, ()),
    "": ("a folder of PNG frames (a name without a suffix)", None, ()),
}


def formats_text() -> str:
    """One line naming every output format and its codecs (for --help and error messages)."""
    parts = []
    for suffix, (_, default, codecs) in FORMATS.items():
        if suffix == "":
            parts.append("a folder name without a suffix (PNG frames)")
        elif codecs:
            parts.append(f"{suffix} ({default}{''.join(', ' + c for c in codecs if c != default)})")
        else:
            parts.append(suffix)
    return ", ".join(parts)


def check_format(path, codec: str | None = None) -> str | None:
    """The codec ``path`` will be written with; an InputError naming what works for an unknown suffix or a codec the
    container cannot hold (e.g. h264 in .webm)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{path}: unknown output type {suffix!r}; write one of: {formats_text()}")
    what, default, codecs = FORMATS[suffix]
    if codec is None:
        return default
    if codec not in CODECS:
        raise InputError(f"unknown codec {codec!r}; valid: {', '.join(CODECS)}")
    if codec not in codecs:
        fits = f"use --codec {' or '.join(codecs)}" if codecs else "it takes no --codec"
        raise InputError(f"--codec {codec} cannot go in {suffix or 'a frame folder'} ({what}): {fits}, or another "
                         f"container ({', '.join(s for s, v in FORMATS.items() if codec in v[2])})")
    return codec


def _write_mp4(frames: np.ndarray, tmp: Path, fps: float, crf: int, codec: str = "h264") -> None:
    t, h, w, _ = frames.shape
    encoder, extra = CODECS[codec]
    exe = ffmpeg_executable() if encoder is not None else None
    if encoder is None:
        pass  # OpenCV asked for explicitly
    elif exe is not None:
        # yuv420p needs even sizes: pad by one pixel at the right/bottom if needed
        cmd = [exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", f"{fps}", "-i", "-", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", encoder,
               "-pix_fmt", "yuv420p", "-crf", str(crf), *extra, str(tmp)]
        proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
        if proc.returncode == 0:
            return
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        reason = reason[-1][:160] if reason else f"exit status {proc.returncode}"
        if tmp.suffix.lower() not in (".mp4", ".mov", ".avi"):
            raise InputError(f"ffmpeg could not encode {codec} ({reason}), and OpenCV's mp4v cannot go in "
                             f"{tmp.suffix}: write .mp4 instead")
        warnings.warn(f"ffmpeg could not encode {codec} ({reason}): wrote MPEG-4 part 2 (mp4v) with OpenCV instead; "
                      "some browsers will not play it")
    else:
        if tmp.suffix.lower() not in (".mp4", ".mov", ".avi"):
            raise InputError(f"no ffmpeg found (pip install imageio-ffmpeg) and OpenCV's mp4v cannot go in {tmp.suffix}")
        warnings.warn("no ffmpeg found (pip install imageio-ffmpeg): wrote MPEG-4 part 2 (mp4v) with OpenCV instead of "
                      f"{codec}; some browsers will not play it")
    import cv2

    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise InputError(f"OpenCV could not open a video writer for {tmp}")
    for f in frames:
        writer.write(f[:, :, ::-1])  # RGB -> BGR
    writer.release()


def save(frames, path, fps: float = 8.0, overwrite: bool = False, crf: int = 18, loop: bool = True,
         codec: str | None = None) -> Path:
    """Write frames to ``path``, one of :data:`FORMATS` (``.mp4`` H.264 by default, ``.gif``, a folder of PNGs for a
    path with no suffix, ...). ``codec`` (video files only): one of the container's codecs. Returns the path
    written. Atomic and exclusive (:func:`i2v.outputs.atomic`); replaces an existing output only with ``overwrite``."""
    from .outputs import atomic, check_writable

    path = Path(path)
    codec = check_format(path, codec)
    frames = to_uint8(frames)
    if len(frames) < 1:
        raise InputError("no frames to write")
    if not fps > 0 or not np.isfinite(fps):
        raise InputError(f"fps must be a number > 0, got {fps}")
    check_writable(path, overwrite)
    suffix = path.suffix.lower()
    from PIL import Image

    with atomic(path, overwrite, folder=suffix == "") as tmp:
        if suffix == "":
            for i, f in enumerate(frames):
                Image.fromarray(f).save(tmp / f"frame_{i:05d}.png")
        elif suffix == ".gif":
            images = [Image.fromarray(f) for f in frames]
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps),
                           loop=0 if loop else 1, disposal=2)
        else:
            _write_mp4(frames, tmp, fps, crf, codec)
    return path


def load(path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Read a video file, a GIF or a folder of images -> ((t, h, w, 3) uint8 RGB, fps).
    A folder's images are taken in sorted name order and must all have the same size; its fps is 0 (unknown)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        frames = [load_image(p) for p in files[:max_frames]]
        sizes = {f.shape for f in frames}
        if len(sizes) > 1:
            raise InputError(f"{path}: frames have different sizes {sorted(sizes)}; all frames must be the same size")
        return np.stack(frames), 0.0
    if path.suffix.lower() == ".gif":
        from PIL import Image

        with Image.open(path) as im:
            frames, durations = [], []
            try:
                while max_frames is None or len(frames) < max_frames:
                    frames.append(np.asarray(im.convert("RGB")))
                    durations.append(im.info.get("duration", 100) or 100)
                    im.seek(im.tell() + 1)
            except EOFError:
                pass
        return np.stack(frames), 1000.0 / float(np.mean(durations))
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"{path}: cannot be read as a video (unsupported codec or not a video)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    frames = []
    while max_frames is None or len(frames) < max_frames:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[:, :, ::-1].copy())  # BGR -> RGB
    cap.release()
    if not frames:
        raise InputError(f"{path}: no frames could be decoded")
    return np.stack(frames), float(fps)
