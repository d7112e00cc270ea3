"""What is in a checkpoint file, read without torch and without running code.

- ``.safetensors``: 8-byte little-endian header length, then a JSON header (dtype, shape and byte range of every
  tensor, plus free-form ``__metadata__`` strings). Only the header is read here.
- ``.pt`` / ``.pth`` / ``.ckpt`` / ``.pkl`` / ``.bin``: ``torch.save`` files -- a zip archive holding ``data.pkl``
  (since torch 1.6) or a bare pickle (older). :func:`read_pickle_index` reads the pickle with an unpickler that
  knows only tensor-rebuilding functions, storage types, dtypes and ``OrderedDict``, and refuses every other
  global -- the same policy as ``torch.load(weights_only=True)`` -- so it lists names, dtypes and shapes
  without importing torch and without reading tensor data.
- Sharded checkpoints: ``<name>.safetensors.index.json`` (``{"weight_map": {key: shard file}}``) beside the shards,
  as Hugging Face and Wan-AI publish large models. :func:`weight_files` resolves a file, an index or a folder.

The container is told from the first bytes (:func:`sniff_container`), so a mis-named file is still read the right
way. Errors are :class:`~i2v.errors.CheckpointError`, one line, naming the file, what was expected and what was found.
Loading tensors (which needs torch) is :mod:`i2v.checkpoints.state_dict`.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointError

SAFETENSORS_SUFFIXES = {".safetensors", ".sft"}
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".bin"}
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES | PICKLE_SUFFIXES

# safetensors dtype strings -> torch dtype names, so both containers print the same way
ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
             "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
             "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "U16": "uint16", "U32": "uint32", "U64": "uint64"}
FLOAT_DTYPES = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # torch dtype name: float32, bfloat16, float8_e4m3fn, int64, ...
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


# ----------------------------------------------------------------------------------------------- safetensors

def read_safetensors_header(path: str | os.PathLike) -> dict[str, TensorInfo]:
    """Key -> TensorInfo (dtype as in the file: F32, BF16, ...) from a .safetensors header, checking the file is
    complete."""
    return _read_safetensors(Path(path))[0]


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The free-form ``__metadata__`` strings of a .safetensors header ({} when absent)."""
    return _read_safetensors(Path(path))[1]


def _read_safetensors(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
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
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is {type(header).__name__}, expected a JSON object: corrupt file")
    out, end = {}, 0
    metadata = header.get("__metadata__") or {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        try:
            dtype, shape, (_, b) = v["dtype"], tuple(int(d) for d in v["shape"]), v["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: header entry {k!r} lacks dtype/shape/data_offsets: corrupt file") from None
        out[k] = TensorInfo(dtype, shape)
        end = max(end, b)
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: tensors need {8 + n + end} bytes but the file has {size}: truncated (re-download it)")
    return out, {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


def sniff_container(path: str | os.PathLike) -> str:
    """What kind of file this is, from its first bytes (not its suffix): 'safetensors' (8-byte length, then
    a JSON object), 'torch-zip' (torch.save since 1.6: a zip archive), 'torch-pickle' (legacy torch.save:
    a bare pickle, protocol >= 2). Anything else is a CheckpointError."""
    path = Path(path)
    _check_exists(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80" and len(head) >= 2 and 2 <= head[1] <= 5:
        return "torch-pickle"
    what = "an empty file" if not head else f"a file starting with {head!r}"
    raise CheckpointError(f"{path}: not a checkpoint: expected safetensors or a torch.save file (.pt/.pth/.ckpt), found {what}")


def is_safetensors(path: Path) -> bool:
    """By suffix, else by content (a .ckpt that is really safetensors is read as safetensors)."""
    return Path(path).suffix in SAFETENSORS_SUFFIXES or sniff_container(path) == "safetensors"


# ----------------------------------------------------------------------------------------------- torch pickles

def refusal_reason(message: str) -> str:
    """The useful part of a weights-only refusal: which global or opcode would not be run."""
    m = re.search(r"GLOBAL ([\w.]+)", message)
    if m:
        return f"it references {m.group(1)}, which is not a tensor or a plain container"
    m = re.search(r"Unsupported operand (\d+)", message)
    if m:
        return f"it uses pickle opcode {m.group(1)}, which the weights-only reader does not allow"
    return "it holds objects other than tensors and plain containers"


def refused(path, message: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: refused to load: {refusal_reason(message)}, so unpickling it could run code. i2v reads pickles "
        "with weights_only=True only; if you trust the file, convert it to safetensors with the tool that made it")


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = text if len(text) <= 200 else text[:200] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# storage class names of torch.save -> dtype names (torch.storage._dtype_to_storage_type_map, inverted)
_STORAGE_DTYPES = {"DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
                   "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
                   "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
                   "ComplexDoubleStorage": "complex128", "ComplexFloatStorage": "complex64"}
_TORCH_DTYPES = {"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
                 "float8_e4m3fn", "float8_e5m2", "complex64", "complex128", "uint16", "uint32", "uint64"}


@dataclass(frozen=True)
class _Storage:
    dtype: str  # "uint8" for an UntypedStorage (the tensor then names its dtype)


class _Dtype(str):
    """A torch dtype referenced by a pickle (``torch.float8_e4m3fn``), kept as its name."""


def _rebuild_tensor(storage, offset, size, stride, *rest):
    """torch._utils._rebuild_tensor_v2 / _v3: v3 appends the dtype (for untyped storages)."""
    dtype = next((r for r in rest if isinstance(r, _Dtype)), None)
    return TensorInfo(str(dtype) if dtype else storage.dtype, tuple(int(s) for s in size))


def _rebuild_parameter(data, *rest):
    return data


_ALLOWED_FUNCTIONS = {
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "collections.OrderedDict": collections.OrderedDict,
}


class _Refused(Exception):
    pass


class _IndexUnpickler(pickle.Unpickler):
    """Unpickles a torch.save pickle into TensorInfo leaves. Only the names above, storage classes and dtypes
    resolve; any other global raises, exactly where torch.load(weights_only=True) would."""

    def find_class(self, module, name):
        full = f"{module}.{name}"
        if full in _ALLOWED_FUNCTIONS:
            return _ALLOWED_FUNCTIONS[full]
        if module in ("torch", "torch.storage") and (name in _STORAGE_DTYPES or name in ("UntypedStorage", "TypedStorage")):
            return _Storage(_STORAGE_DTYPES.get(name, "uint8"))
        if module == "torch" and name in _TORCH_DTYPES:
            return _Dtype(name)
        raise _Refused(f"GLOBAL {full}")

    storages: dict  # key -> dtype name of every storage referenced (the legacy format's data follows in key order)

    def persistent_load(self, pid):
        # ("storage", storage class, key, location, numel[, view metadata]) -> its dtype is all we need
        if isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _Storage):
            self.storages[str(pid[2])] = pid[1].dtype
            return pid[1]
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")


def _unpickle_index(data, path, storages: dict | None = None):
    try:
        unpickler = _IndexUnpickler(data)
        unpickler.storages = {} if storages is None else storages
        return unpickler.load()
    except _Refused as e:
        raise refused(path, str(e)) from None
    except Exception as e:  # a corrupt pickle fails in many ways (EOFError, KeyError, UnpicklingError, ...)
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt): {one_line(e)}") from None


def flatten(obj, prefix: str = "", leaf=lambda v: False) -> dict:
    """The leaves of nested dicts as one flat dict with dotted keys ('state_dict.x.weight' style)."""
    out = {}
    if leaf(obj):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}.", leaf))
    return out


def unwrap(obj):
    """Lightning-style checkpoints hold the tensors under ``state_dict``; everything else is taken as it is."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return obj["state_dict"]
    return obj


_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
             "int8": 1, "uint8": 1, "bool": 1, "complex64": 8, "complex128": 16}


def _check_legacy_data(f, path, keys, storages: dict) -> None:
    """A legacy file ends with each storage as (int64 element count, data): check that all of it is there."""
    size = os.fstat(f.fileno()).st_size
    for key in keys if isinstance(keys, list) else []:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt): storage {key} is missing")
        (n,) = struct.unpack("<q", head)
        f.seek(n * _ITEMSIZE.get(storages.get(str(key), "uint8"), 1), 1)
        if f.tell() > size:
            raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt): storage {key} "
                                  f"needs {f.tell()} bytes, the file has {size}")


def read_pickle_index(path: str | os.PathLike) -> dict[str, TensorInfo]:
    """Key -> TensorInfo of a torch.save file (zip or legacy), without torch and without reading tensor data.
    A pickle that would run code is refused (CheckpointError naming the global)."""
    path = Path(path)
    container = sniff_container(path)
    if container == "torch-zip":
        try:
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                if not names:
                    raise CheckpointError(f"{path}: a zip archive without data.pkl: not a torch.save file")
                data = z.read(names[0])
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt): {one_line(e)}") from None
        import io
        obj = _unpickle_index(io.BytesIO(data), path)
    elif container == "torch-pickle":
        with open(path, "rb") as f:  # legacy: magic number, protocol, sys info, the object, storage keys, data
            for _ in range(3):
                _unpickle_index(f, path)
            storages: dict = {}
            obj = _unpickle_index(f, path, storages)
            _check_legacy_data(f, path, _unpickle_index(f, path), storages)
    else:
        raise CheckpointError(f"{path}: a safetensors file, not a torch pickle")
    index = flatten(unwrap(obj), leaf=lambda v: isinstance(v, TensorInfo))
    if not index:
        raise CheckpointError(f"{path}: a torch file without tensors (found {type(obj).__name__}): not a checkpoint")
    return index


# ----------------------------------------------------------------------------------------------- any file, shards

def read_index(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """(key -> TensorInfo with torch dtype names, metadata) of one checkpoint file of either container."""
    path = Path(path)
    if sniff_container(path) == "safetensors":
        index, metadata = _read_safetensors(path)
        return {k: TensorInfo(ST_DTYPES.get(v.dtype, v.dtype), v.shape) for k, v in index.items()}, metadata
    return read_pickle_index(path), {}


def read_shard_index(index_json: Path) -> dict[str, Path]:
    """``*.safetensors.index.json`` -> {key: shard path}; every shard must exist."""
    try:
        table = json.loads(Path(index_json).read_text())
        weight_map = table["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_json}: expected a shard index with a 'weight_map' object "
                              f"({one_line(e)})") from None
    shards = {k: Path(index_json).parent / v for k, v in weight_map.items()}
    for f in sorted(set(shards.values())):
        if not f.is_file():
            raise CheckpointError(f"{index_json}: lists shard {f.name}, which is missing from {f.parent} "
                                  f"(download every shard the index names)")
    return shards


def weight_files(path: str | os.PathLike, names: tuple[str, ...] = ()) -> list[Path]:
    """The weight files a path stands for: a file itself; an index json -> its shards; a folder -> the one index
    json in it (or the file named by ``names``, tried in order, or its single weight file)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_file():
        if path.name.endswith(".index.json"):
            return sorted(set(read_shard_index(path).values()))
        return [path]
    for n in names:
        if (path / n).is_file():
            return weight_files(path / n)
    indexes = sorted(path.glob("*.safetensors.index.json"))
    if len(indexes) == 1:
        return weight_files(indexes[0])
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(indexes) > 1 or len(files) != 1:
        found = [p.name for p in indexes] or [p.name for p in files] or ["no weight files"]
        raise CheckpointError(f"{path}: expected one weight file or one *.safetensors.index.json in this folder, "
                              f"found {', '.join(found[:6])}; name the file itself")
    return files


# ----------------------------------------------------------------------------------------------- summary

@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`summarise` found in a checkpoint file (``i2v inspect``; the registry adds the family)."""

    path: Path
    container: str  # "safetensors", "torch-zip" or "torch-pickle" (see sniff_container)
    file_bytes: int
    tensors: int
    parameters: int  # elements over all tensors (buffers included)
    dtypes: dict[str, int]  # dtype name -> number of tensors
    module_prefix: bool  # every key starts with "module." (saved from DataParallel)
    metadata: dict[str, str]
    index: dict[str, TensorInfo]  # key -> (dtype, shape), as in the file
    match: object = field(default=None)  # i2v.registry.Match, filled in by i2v.registry.inspect


def summarise(path: str | os.PathLike) -> CheckpointInfo:
    """Tensor names, dtypes, shapes and counts of a checkpoint file, without running code or importing torch."""
    path = Path(path)
    container = sniff_container(path)
    index, metadata = read_index(path)
    dtypes: dict[str, int] = {}
    for info in index.values():
        dtypes[info.dtype] = dtypes.get(info.dtype, 0) + 1
    return CheckpointInfo(
        path=path, container=container, file_bytes=path.stat().st_size, tensors=len(index),
        parameters=sum(info.numel for info in index.values()), dtypes=dict(sorted(dtypes.items(), key=lambda kv: -kv[1])),
        module_prefix=bool(index) and all(k.startswith("module.") for k in index), metadata=metadata, index=index)
