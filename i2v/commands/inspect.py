"""`i2v inspect FILE...`: what is in a checkpoint and which model family it belongs to, read safely and without
torch (Python: :func:`i2v.registry.inspect`)."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import registry
from ..checkpoints.files import WEIGHT_SUFFIXES, CheckpointInfo
from ..errors import CheckpointError

HELP = "show a checkpoint's tensor count, dtypes, parameters and which model family it is (reads no code)"
EXAMPLES = """examples:
  i2v inspect svd_xt.safetensors
  i2v inspect flownet.pkl raft-small.pth
  i2v inspect stable-video-diffusion-img2vid-xt/      every weight file in a (diffusers) folder
  i2v inspect taesd_decoder.pth --keys               also list every tensor: name, dtype, shape

Safetensors files are read from their JSON header only; .pt/.pth/.ckpt/.pkl files with a weights-only
unpickler that lists tensors without reading their data (a pickle that would run code is refused). A folder is
also named as a whole when it is a release layout (diffusers, Wan-AI).

known families:
""" + "\n".join(f"  {name:<18} {f.description}" for name, f in registry.FAMILIES.items())


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


def report(info: CheckpointInfo, keys: bool = False) -> str:
    """The text `i2v inspect` prints for one file."""
    dtypes = ", ".join(f"{name} x{count}" for name, count in info.dtypes.items())
    lines = [
        f"{info.path}",
        f"  container   {info.container}, {_human(info.file_bytes, 'B')}",
        f"  tensors     {info.tensors}" + ("  (every key starts with 'module.')" if info.module_prefix else ""),
        f"  dtypes      {dtypes}",
        f"  parameters  {info.parameters:,} ({_human(info.parameters)})",
    ]
    m = info.match
    if m is None:
        lines.append("  family      unknown: no known model family matches (see `i2v inspect --help` for the list)")
    else:
        lines.append(f"  family      {m.family} ({m.variant}): {m.description}")
        if m.details:
            lines.append("  details     " + ", ".join(f"{k} {v}" for k, v in m.details.items() if v is not None))
        runs = registry.FAMILIES[m.family].runs
        if runs:
            lines.append(f"  used by     {runs}")
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
    for path in args.files:
        if path.is_dir():
            m = registry.identify_folder(path)
            if m is not None:
                print(f"{path}: {m.family} ({m.variant}): {m.description}")
    targets = [file for path in args.files for file in _expand(path)]
    if len(targets) == 1:
        print(report(registry.inspect(targets[0]), keys=args.keys))  # an error is printed as one line by the CLI
        return 0
    failed = 0
    for file in targets:  # several files: report each, an unreadable one does not stop the others
        try:
            print(report(registry.inspect(file), keys=args.keys))
        except CheckpointError as e:
            print(f"i2v inspect: error: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0
