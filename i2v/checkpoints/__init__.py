"""The loading toolkit every model of i2v uses.

- :mod:`.files` (no torch): what a file holds -- safetensors headers, ``torch.save`` pickles read by a
  weights-only unpickler that lists tensors without running code, sharded ``*.safetensors.index.json`` folders,
  :func:`summarise` for ``i2v inspect``.
- :mod:`.state_dict`: :func:`open_state_dict` -> a lazy :class:`StateDict` (tensors read one at a time,
  memory-mapped), with prefix stripping and renaming views.
- :mod:`.strict`: :func:`load_into`, the strict load (every tensor used or skipped by a documented rule, dtype
  casting, meta-device models filled by assignment) and :func:`check_keys`.

``from i2v.checkpoints import load_into`` works; the torch-using names are imported on first use, so that
``i2v inspect`` and ``i2v --help`` start without torch.
"""

from .files import (CheckpointInfo, PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, WEIGHT_SUFFIXES, TensorInfo,  # noqa: F401
                    read_index, read_pickle_index, read_safetensors_header, read_safetensors_metadata,
                    sniff_container, summarise, weight_files)

# name -> submodule that defines it (these import torch); an explicit table, resolved in __getattr__
_LAZY = {
    "StateDict": "state_dict", "open_state_dict": "state_dict", "load_state_dict": "state_dict",
    "COMMON_PREFIXES": "state_dict",
    "load_into": "strict", "load_model": "strict", "check_keys": "strict", "skipped_by": "strict",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
