"""Reading checkpoint files safely, and telling what they are.

- ``.safetensors``: the header is JSON (8-byte little-endian length, then the JSON); tensors are read
  lazily through ``safetensors.safe_open`` (memory-mapped, no second copy in RAM).
- ``.pt`` / ``.pth`` / ``.ckpt`` / ``.pkl``: torch pickles, read ONLY with ``torch.load(weights_only=True)``.
  A pickle that would run code is refused. The container is told from the first bytes
  (:func:`sniff_container`), so a mis-named file is still read the right way.
- :func:`inspect` summarises a file (tensor count, dtypes, parameter count) and :func:`detect_format` names
  the known format it matches, from the small signature table :data:`KNOWN_FORMATS` (``i2v inspect``).
  i2v's own checkpoints are safetensors whose ``__metadata__`` holds ``"i2v.model"``.

Errors are :class:`~i2v.errors.CheckpointError` naming the file, what was expected and what was found.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import warnings
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


def _refusal_reason(message: str) -> str:
    """The useful line of torch's weights_only refusal: which global or opcode it would not run."""
    m = re.search(r"GLOBAL ([\w.]+)", message)
    if m:
        return f"it references {m.group(1)}, which is not a tensor or a plain container"
    m = re.search(r"Unsupported operand (\d+)", message)
    if m:
        return f"it uses pickle opcode {m.group(1)}, which the weights-only reader does not allow"
    return "it holds objects other than tensors and plain containers"


def _is_safetensors(path: Path) -> bool:
    """By suffix, else by content (a .ckpt that is really safetensors is read as safetensors)."""
    return path.suffix in SAFETENSORS_SUFFIXES or sniff_container(path) == "safetensors"


def _torch_load(path: Path, mmap: bool = True):
    """torch.load with weights_only=True; every failure turned into a one-line CheckpointError."""
    container = sniff_container(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": noise for the user
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and container == "torch-zip")
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt): {_one_line(e)}") from None
        raise CheckpointError(
            f"{path}: refused to load: {_refusal_reason(str(e))}, so unpickling it could run code. i2v reads pickles "
            "with weights_only=True only; if you trust the file, convert it to safetensors with the tool that made it"
        ) from None
    except Exception as e:  # a corrupt pickle can fail in many ways (EOFError, KeyError, RuntimeError, ...)
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt): {_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = text if len(text) <= 200 else text[:200] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


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
    if _is_safetensors(path):
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
    if _is_safetensors(path):
        return read_safetensors_header(path)
    sd = _flatten_state_dict(_torch_load(path, mmap=True))
    return {k: TensorInfo(str(v.dtype).replace("torch.", ""), tuple(v.shape)) for k, v in sd.items()}


# ----------------------------------------------------------------------------------- telling formats apart
# Each known format is recognised by signature keys (prefixes that must all occur), after dropping a
# "module." prefix that DataParallel adds to every key. The table is checked top to bottom; the first
# match wins, so more specific entries come first. Adding a format = adding one row.


def _has(keys: set[str], *prefixes: str) -> bool:
    return all(any(k.startswith(p) for k in keys) for p in prefixes)


def _is_taesd_encoder(keys, index) -> bool:
    """madebyollin/taesd encoder: an nn.Sequential (keys start with a layer index), first layer a conv on RGB."""
    first = index.get("0.weight")
    return all(k.split(".")[0].isdigit() for k in keys) and first is not None and len(first.shape) == 4 and first.shape[1] == 3


def _is_taesd_decoder(keys, index) -> bool:
    """taesd decoder: nn.Sequential starting with a parameter-free Clamp (no '0.'), last conv to RGB."""
    if not keys or not all(k.split(".")[0].isdigit() for k in keys) or "0.weight" in keys or "1.weight" not in keys:
        return False
    last = index.get(f"{max(int(k.split('.')[0]) for k in keys)}.weight")
    return last is not None and len(last.shape) == 4 and last.shape[0] == 3


# name -> (description, test(keys, index, metadata)). An explicit table: no reflection.
KNOWN_FORMATS = {
    "i2v": ("i2v's own checkpoint (safetensors metadata 'i2v.model' names the model)",
            lambda k, i, m: "i2v.model" in m),
    "svd-single-file": ("Stable Video Diffusion, original single file (svd.safetensors, svd_xt*.safetensors): "
                        "video U-Net, VAE with temporal decoder, OpenCLIP image embedder",
                        lambda k, i, m: _has(k, "model.diffusion_model.input_blocks.1.0.time_stack.",
                                             "conditioner.embedders.3.encoder.")),
    "svd-diffusers-unet": ("SVD video U-Net in diffusers layout (unet/ of a diffusers folder, UNetSpatioTemporalConditionModel)",
                           lambda k, i, m: _has(k, "down_blocks.0.resnets.0.spatial_res_block.",
                                                "down_blocks.0.resnets.0.temporal_res_block.")),
    "svd-diffusers-vae": ("SVD VAE in diffusers layout (vae/ of a diffusers folder, AutoencoderKLTemporalDecoder)",
                          lambda k, i, m: _has(k, "encoder.conv_in.", "decoder.time_conv_out.")),
    "clip-vision": ("CLIP vision tower in transformers layout (image_encoder/ of an SVD diffusers folder)",
                    lambda k, i, m: _has(k, "vision_model.embeddings.patch_embedding.", "visual_projection.")),
    "sdxl-single-file": ("Stable Diffusion XL, original single file", lambda k, i, m: _has(
        k, "model.diffusion_model.input_blocks.0.0.", "conditioner.embedders.1.model.")),
    "sd1-single-file": ("Stable Diffusion 1.x, original single file (CLIP text encoder)", lambda k, i, m: _has(
        k, "model.diffusion_model.input_blocks.0.0.", "cond_stage_model.transformer.")),
    "sd2-single-file": ("Stable Diffusion 2.x, original single file (OpenCLIP text encoder)", lambda k, i, m: _has(
        k, "model.diffusion_model.input_blocks.0.0.", "cond_stage_model.model.")),
    "rife-4": ("RIFE 4.x frame interpolation, IFNet (flownet.pkl)",
               lambda k, i, m: _has(k, "block0.conv0.", "block0.convblock.", "block1.")),
    "raft": ("RAFT optical flow, full model with convex upsampling (raft-things.pth, raft-sintel.pth, ...)",
             lambda k, i, m: _has(k, "fnet.conv1.", "cnet.conv1.", "update_block.flow_head.", "update_block.mask.")),
    "raft-small": ("RAFT optical flow, small model (raft-small.pth)",
                   lambda k, i, m: _has(k, "fnet.conv1.", "cnet.conv1.", "update_block.flow_head.")),
    "taesd-encoder": ("tiny autoencoder encoder (madebyollin/taesd: taesd, taef1/taef2, taesana, ...)",
                      lambda k, i, m: _is_taesd_encoder(k, i)),
    "taesd-decoder": ("tiny autoencoder decoder (madebyollin/taesd)", lambda k, i, m: _is_taesd_decoder(k, i)),
}


def strip_module_prefix(index: dict) -> tuple[dict, bool]:
    """Drop the 'module.' prefix DataParallel adds when every key has it. Returns (index, whether it did)."""
    if index and all(k.startswith("module.") for k in index):
        return {k[len("module."):]: v for k, v in index.items()}, True
    return index, False


def detect_format(index: dict[str, TensorInfo], metadata: dict[str, str] | None = None) -> str:
    """The name of the first :data:`KNOWN_FORMATS` entry whose signature matches, or ``"unknown"``."""
    index, _ = strip_module_prefix(index)
    keys = set(index)
    for name, (_, test) in KNOWN_FORMATS.items():
        if test(keys, index, metadata or {}):
            return name
    return "unknown"


# torch dtype names for safetensors' short ones, so both containers print the same way
_ST_DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                   "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
                   "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "U16": "uint16", "U32": "uint32", "U64": "uint64"}


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`inspect` found in a checkpoint file."""

    path: Path
    container: str  # "safetensors", "torch-zip" or "torch-pickle" (see sniff_container)
    file_bytes: int
    tensors: int
    parameters: int  # elements over all tensors (buffers included)
    dtypes: dict[str, int]  # dtype name -> number of tensors
    format: str  # a KNOWN_FORMATS name or "unknown"
    description: str
    module_prefix: bool  # every key starts with "module." (saved from DataParallel)
    metadata: dict[str, str]
    index: dict[str, TensorInfo]  # key -> (dtype, shape), as in the file


def inspect(path: str | os.PathLike) -> CheckpointInfo:
    """Read a checkpoint's tensor names, dtypes and shapes without running code and tell what it is.

    Safetensors: only the JSON header is read. Torch files: ``torch.load(weights_only=True)`` (memory-mapped
    for zip files); a pickle that would run code is refused. Errors are one-line CheckpointErrors."""
    path = Path(path)
    container = sniff_container(path)
    if container == "safetensors":
        index, metadata = _read_safetensors(path)
        index = {k: TensorInfo(_ST_DTYPE_NAMES.get(v.dtype, v.dtype), v.shape) for k, v in index.items()}
    else:
        obj = _torch_load(path, mmap=True)
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]  # Lightning-style .ckpt: {"state_dict": {...}, "global_step": ...}
        index = {k: TensorInfo(str(v.dtype).replace("torch.", ""), tuple(v.shape)) for k, v in _flatten_state_dict(obj).items()}
        metadata = {}
        if not index:
            raise CheckpointError(f"{path}: a torch file without tensors (found {type(obj).__name__}): not a checkpoint")
    dtypes: dict[str, int] = {}
    for info in index.values():
        dtypes[info.dtype] = dtypes.get(info.dtype, 0) + 1
    fmt = detect_format(index, metadata)
    description = KNOWN_FORMATS[fmt][0] if fmt in KNOWN_FORMATS else "no known signature matched"
    return CheckpointInfo(
        path=path, container=container, file_bytes=path.stat().st_size, tensors=len(index),
        parameters=sum(info.numel for info in index.values()), dtypes=dict(sorted(dtypes.items(), key=lambda kv: -kv[1])),
        format=fmt, description=description, module_prefix=strip_module_prefix(index)[1], metadata=metadata, index=index)
