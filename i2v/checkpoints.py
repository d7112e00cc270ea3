"""Reading checkpoint files safely, and telling what they are.

- ``.safetensors``: the header is JSON (8-byte little-endian length, then the JSON); tensors are read
  lazily through ``safetensors.safe_open`` (memory-mapped, no second copy in RAM).
- ``.pt`` / ``.pth`` / ``.ckpt`` / ``.pkl``: torch pickles, read ONLY with ``torch.load(weights_only=True)``.
  A pickle that would run code is refused.

Errors are :class:`~i2v.errors.CheckpointError` naming the file, what was expected and what was found.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError

SAFETENSORS_SUFFIXES = {".safetensors", ".sft"}
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".bin"}

# safetensors dtype strings -> bytes per element
_ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file (.safetensors, .pt, .pth, .ckpt)")


def read_safetensors_header(path: str | os.PathLike) -> dict[str, TensorInfo]:
    """Key -> TensorInfo from a .safetensors header, checking that the file is complete."""
    path = Path(path)
    _check_exists(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: {size} bytes, too short to be a safetensors file (expected an 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise CheckpointError(f"{path}: header says {n} bytes of JSON but the file has {size} bytes: truncated or not safetensors")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({e}): corrupt or not safetensors") from None
    out, end = {}, 0
    for k, v in header.items():
        if k == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = v["dtype"], tuple(v["shape"]), v["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: header entry {k!r} lacks dtype/shape/data_offsets: corrupt file") from None
        out[k] = TensorInfo(dtype, shape)
        end = max(end, b)
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: tensors need {8 + n + end} bytes but the file has {size}: truncated (re-download it)")
    return out


def _torch_load(path: Path, mmap: bool = True):
    """torch.load with weights_only=True; errors turned into CheckpointError."""
    _check_exists(path)
    try:
        is_zip = zipfile.is_zipfile(path)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: refused to load: this pickle holds objects other than tensors and plain containers, and "
            f"unpickling it could run code ({msg}). Only weights_only pickles are read."
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or another format): {msg}") from None


def _flatten_state_dict(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """Find the tensors in a loaded pickle: plain state dicts, or nested under 'state_dict'/'model'/... keys."""
    out = {}
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten_state_dict(v, f"{prefix}{k}."))
    return out


def load_state_dict(path: str | os.PathLike, device="cpu", dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint as a flat dict. Safetensors are memory-mapped; pickles are read with
    weights_only=True. A pickle holding ``{"state_dict": {...}}`` is unwrapped."""
    path = Path(path)
    if path.suffix in SAFETENSORS_SUFFIXES:
        read_safetensors_header(path)  # validates completeness with a clear message
        from safetensors import safe_open

        out = {}
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for k in f.keys():
                t = f.get_tensor(k)
                out[k] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
        return out
    obj = _torch_load(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    sd = _flatten_state_dict(obj)
    if not sd:
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__} with no tensors")
    return {k: (v.to(device, dtype) if dtype is not None and v.is_floating_point() else v.to(device)) for k, v in sd.items()}


def read_tensor_index(path: str | os.PathLike) -> dict[str, TensorInfo]:
    """Key -> (dtype, shape) for any supported checkpoint, without loading tensor data where possible."""
    path = Path(path)
    if path.suffix in SAFETENSORS_SUFFIXES:
        return read_safetensors_header(path)
    sd = _flatten_state_dict(_torch_load(path, mmap=True))
    return {k: TensorInfo(str(v.dtype).replace("torch.", ""), tuple(v.shape)) for k, v in sd.items()}
