"""`i2v inspect FILE...`: what is in a checkpoint, read safely (Python: :func:`i2v.checkpoints.inspect`)."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import checkpoints
from ..errors import CheckpointError

HELP = "show a checkpoint's tensor count, dtypes, parameter count and which known format it is (reads no code)"
EXAMPLES = """examples:
  i2v inspect svd_xt.safetensors
  i2v inspect flownet.pkl raft-small.pth
  i2v inspect stable-video-diffusion-img2vid-xt/      every weight file in a (diffusers) folder
  i2v inspect taesd_decoder.pth --keys               also list every tensor: name, dtype, shape

Safetensors files are read from their JSON header only; .pt/.pth/.ckpt/.pkl files with
torch.load(weights_only=True), and a pickle that would run code is refused."""

WEIGHT_SUFFIXES = checkpoints.SAFETENSORS_SUFFIXES | checkpoints.PICKLE_SUFFIXES


def add_arguments(parser):
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="checkpoint files, or folders to search for weight files")
    parser.add_argument("--keys", action="store_true", help="list every tensor: name, dtype, shape")


def _human(n: float, unit: str = "") -> str:
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g} {prefix}{unit}".rstrip()
        n /= 1000
    return f"{n:.3g} P{unit}"


def report(info: checkpoints.CheckpointInfo, keys: bool = False) -> str:
    """The text `i2v inspect` prints for one file."""
    dtypes = ", ".join(f"{name} x{count}" for name, count in info.dtypes.items())
    lines = [
        f"{info.path}",
        f"  container   {info.container}, {_human(info.file_bytes, 'B')}",
        f"  tensors     {info.tensors}" + ("  (every key starts with 'module.')" if info.module_prefix else ""),
        f"  dtypes      {dtypes}",
        f"  parameters  {info.parameters:,} ({_human(info.parameters)})",
        f"  format      {info.format}: {info.description}",
    ]
    for k, v in info.metadata.items():
        lines.append(f"  metadata    {k} = {v if len(v) <= 100 else v[:100] + '...'}")
    if keys:
        width = max(map(len, info.index), default=0)
        lines += [f"    {k:<{width}}  {v.dtype:<8}  {list(v.shape)}" for k, v in info.index.items()]
    return "\n".join(lines)


def _expand(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        if not found:
            raise CheckpointError(f"{path}: folder holds no weight files ({', '.join(sorted(WEIGHT_SUFFIXES))})")
        return found
    return [path]


def run(args) -> int:
    targets = [file for path in args.files for file in _expand(path)]
    if len(targets) == 1:
        print(report(checkpoints.inspect(targets[0]), keys=args.keys))  # an error is printed as one line by the CLI
        return 0
    failed = 0
    for file in targets:  # several files: report each, an unreadable one does not stop the others
        try:
            print(report(checkpoints.inspect(file), keys=args.keys))
        except CheckpointError as e:
            print(f"i2v inspect: error: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
