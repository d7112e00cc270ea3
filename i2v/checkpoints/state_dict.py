"""Reading the tensors of a checkpoint lazily: :class:`StateDict` and :func:`open_state_dict`.

A :class:`StateDict` is a read-only mapping key -> tensor whose tensors are read only when asked for, one at a
time: from safetensors files through ``safetensors.safe_open`` (memory-mapped), from ``torch.save`` files through
``torch.load(weights_only=True, mmap=True)`` (a pickle that would run code is refused before anything runs).
Its key list and shapes come from the file headers (:mod:`i2v.checkpoints.files`), so a model can be built on
the meta device from the shapes and then filled tensor by tensor (:func:`i2v.checkpoints.load_into`) without a
second copy of the weights in memory. Views (:meth:`StateDict.strip`, :meth:`StateDict.select`,
:meth:`StateDict.rename`) change the key names without reading anything.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError
from .files import (TensorInfo, flatten, is_safetensors, one_line, read_index, read_safetensors_header, refused,
                    sniff_container, unwrap, weight_files)

# prefixes that wrappers add in front of every key of a model's own state dict
COMMON_PREFIXES = ("module.", "model.diffusion_model.", "_orig_mod.")


class StateDict(Mapping):
    """A read-only mapping key -> tensor read on access. ``info`` maps every key to its TensorInfo (dtype name,
    shape) without reading data; ``source`` names the file(s) in error messages; ``metadata`` holds the
    safetensors ``__metadata__`` strings (empty for pickles)."""

    def __init__(self, source: str, info: dict[str, TensorInfo], read: Callable[[str], torch.Tensor],
                 metadata: dict[str, str] | None = None, prefix: str = ""):
        self.source, self.info, self._read, self.metadata = source, info, read, metadata or {}
        self.prefix = prefix  # what the file puts in front of these keys (a strip() view): shown in messages

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self.info:
            raise KeyError(key)
        try:
            return self._read(key)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 -- safetensors and torch raise their own types on broken data
            raise CheckpointError(f"{self.source}: tensor {key} cannot be read ({one_line(e)}): the file is corrupt "
                                  f"or truncated (re-download it)") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.info)

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"StateDict({self.source!r}, {len(self)} tensors)"

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.info.items()}

    # ---------------------------------------------------------------- views (nothing is read)
    def select(self, keep: Callable[[str], bool]) -> "StateDict":
        """The tensors whose key satisfies ``keep``."""
        return StateDict(self.source, {k: v for k, v in self.info.items() if keep(k)}, self._read, self.metadata,
                         self.prefix)

    def strip(self, prefix: str) -> "StateDict":
        """The tensors under ``prefix``, with the prefix removed from their keys."""
        n = len(prefix)
        info = {k[n:]: v for k, v in self.info.items() if k.startswith(prefix)}
        return StateDict(self.source, info, lambda k: self._read(prefix + k), self.metadata, self.prefix + prefix)

    def rename(self, new_name: Callable[[str], str]) -> "StateDict":
        """Keys renamed by ``new_name(key)`` (a rename table applied as a function)."""
        old = {new_name(k): k for k in self.info}
        if len(old) != len(self.info):
            raise CheckpointError(f"{self.source}: renaming maps two tensors to one name")
        return StateDict(self.source, {n: self.info[o] for n, o in old.items()}, lambda k: self._read(old[k]),
                         self.metadata)

    def strip_common_prefix(self, prefixes=COMMON_PREFIXES) -> "StateDict":
        """Drop a wrapper prefix (``module.`` of DataParallel, ``model.diffusion_model.`` of ComfyUI/sgm files) when
        EVERY key carries it; otherwise return self unchanged."""
        for p in prefixes:
            if self.info and all(k.startswith(p) for k in self.info):
                return self.strip(p).strip_common_prefix(prefixes)
        return self


def _torch_load(path: Path):
    """torch.load with weights_only=True (memory-mapped for zip files); every failure a one-line CheckpointError."""
    container = sniff_container(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": noise for the user
            return torch.load(path, map_location="cpu", weights_only=True, mmap=container == "torch-zip")
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt): {one_line(e)}") from None
        raise refused(path, str(e)) from None
    except Exception as e:  # a corrupt pickle can fail in many ways (EOFError, KeyError, RuntimeError, ...)
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt): {one_line(e)}") from None


def _open_file(path: Path) -> StateDict:
    if is_safetensors(path):
        read_safetensors_header(path)  # complete file? (a clear message for truncated downloads)
        from safetensors import safe_open

        index, metadata = read_index(path)
        handle = safe_open(str(path), framework="pt", device="cpu")
        return StateDict(str(path), index, handle.get_tensor, metadata)
    obj = unwrap(_torch_load(path))
    tensors = flatten(obj, leaf=lambda v: isinstance(v, torch.Tensor))
    if not tensors:
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__} with no tensors")
    info = {k: TensorInfo(str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in tensors.items()}
    return StateDict(str(path), info, tensors.__getitem__)


def open_state_dict(path: str | os.PathLike, names: tuple[str, ...] = ()) -> StateDict:
    """The tensors of a checkpoint, read lazily: a ``.safetensors`` / ``.pth`` / ``.pt`` / ``.ckpt`` / ``.pkl`` /
    ``.bin`` file, a ``*.safetensors.index.json`` with its shards, or a folder holding one of those (``names``:
    file names to prefer in a folder, e.g. ``("diffusion_pytorch_model.safetensors",)``). Keys as in the file."""
    files = weight_files(path, names)
    if len(files) == 1:
        return _open_file(files[0])
    parts = [_open_file(f) for f in files]
    info, owner = {}, {}
    for part in parts:
        for k, v in part.info.items():
            if k in info:
                raise CheckpointError(f"{path}: tensor {k} is in two shards ({owner[k].source} and {part.source})")
            info[k], owner[k] = v, part
    metadata = {k: v for part in parts for k, v in part.metadata.items()}
    return StateDict(f"{path} ({len(files)} shards)", info, lambda k: owner[k][k], metadata)


def load_state_dict(path: str | os.PathLike, device="cpu", dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint in memory, as a plain dict (floating tensors cast to ``dtype`` if given).
    For big models prefer :func:`open_state_dict` + :func:`i2v.checkpoints.load_into`, which read one tensor at a time."""
    sd = open_state_dict(path)
    out = {}
    for k in sd:
        t = sd[k]
        out[k] = t.to(device, dtype) if dtype is not None and t.is_floating_point() else t.to(device)
    return out
