"""The model registry: one dict literal of families, each pointing at its detector and its loader.

``i2v inspect`` (:func:`inspect`), ``i2v.load`` (:func:`load`) and ``i2v animate --checkpoint`` all go through
:data:`FAMILIES`. A file is identified from its tensor names, shapes and metadata alone -- never by its file name
-- by asking every family's ``detect`` in turn (first match wins; detectors are written so that at most one
matches). A folder is asked of each family's ``detect_folder``. Nothing here imports torch.

Adding a family = a folder ``i2v/models/<family>/`` with its model code and a ``detect.py``, plus one line below
(see docs/architecture.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoints.files import CheckpointInfo, TensorInfo, read_index, summarise
from .errors import CheckpointError
from .models import recognised
from .models.builtin import detect as builtin
from .models.depth_anything import detect as depth_anything
from .models.encoders import detect as encoders
from .models.family import Family, Match
from .models.raft import detect as raft
from .models.rife import detect as rife
from .models.svd import detect as svd
from .models.wan import detect as wan

FAMILIES = {
    "builtin": Family("i2v's built-in image-to-video model", builtin.detect, builtin.load,
                      runs="i2v animate (default), i2v animate --checkpoint model.safetensors"),
    "svd": Family("Stable Video Diffusion (image-to-video)", svd.detect, svd.load, svd.detect_folder,
                  runs="i2v animate --checkpoint"),
    "wan": Family("Wan2.1 / Wan2.2 (image-to-video DiT, causal video VAEs)", wan.detect, wan.load, wan.detect_folder,
                  runs="i2v animate --checkpoint"),
    "clip-vision": Family("CLIP vision tower (SVD's and Wan's image encoder)", encoders.detect_clip, encoders.load_clip,
                          runs="part of SVD and Wan"),
    "t5": Family("T5 / umT5 text encoder (Wan's prompt encoder)", encoders.detect_t5, encoders.load_t5,
                 runs="part of Wan (--text-encoder)"),
    "rife": Family("RIFE frame interpolation", rife.detect, rife.load, runs="i2v interpolate --method rife"),
    "raft": Family("RAFT optical flow", raft.detect, raft.load, runs="i2v flow --method raft"),
    "depth-anything-v2": Family("Depth Anything V2 monocular depth", depth_anything.detect, depth_anything.load,
                                runs="i2v depth, i2v camera --depth-model"),
    "other": Family("formats i2v recognises but does not run (Stable Diffusion image models, TAESD)",
                    recognised.detect),
}

# wrappers that prefix every key of a model's state dict; stripped before the detectors look
PREFIXES = ("module.", "model.diffusion_model.", "_orig_mod.")


def strip_prefixes(index: dict) -> tuple[dict, str]:
    """Drop a prefix every key carries (DataParallel's ``module.``, ComfyUI's ``model.diffusion_model.``):
    returns (index, the prefix removed or "")."""
    removed = ""
    changed = True
    while changed and index:
        changed = False
        for p in PREFIXES:
            if all(k.startswith(p) for k in index):
                index = {k[len(p):]: v for k, v in index.items()}
                removed, changed = removed + p, True
    return index, removed


def identify(index: dict[str, TensorInfo], metadata: dict | None = None) -> Match | None:
    """The first family whose detector recognises this key -> (dtype, shape) index, or None."""
    index, _ = strip_prefixes(index)
    keys = set(index)
    shapes = {k: tuple(v.shape) for k, v in index.items()}
    for family in FAMILIES.values():
        match = family.detect(keys, shapes, metadata or {})
        if match is not None:
            return match
    return None


def identify_folder(path: Path) -> Match | None:
    for family in FAMILIES.values():
        if family.detect_folder is not None:
            match = family.detect_folder(path)
            if match is not None:
                return match
    return None


def _looked_like(index: dict) -> str:
    """What an unrecognised file holds, in a few words: its commonest key prefixes."""
    counts: dict[str, int] = {}
    for k in strip_prefixes(index)[0]:
        head = ".".join(k.split(".")[:2])
        counts[head] = counts.get(head, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:5]
    return ", ".join(f"{n} x {p}.*" for p, n in top) or "no tensors"


def known_families() -> str:
    return "; ".join(f"{name}: {f.description}" for name, f in FAMILIES.items())


def identify_path(path: str | os.PathLike) -> Match:
    """The family of a file or folder; a CheckpointError saying what it looked like and listing the known
    families when none recognises it."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        match = identify_folder(path)
        if match is None:
            names = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
            raise CheckpointError(f"{path}: a folder no family recognises (it holds {names}). Known families: "
                                  f"{known_families()}")
        return match
    index, metadata = read_index(path)
    match = identify(index, metadata)
    if match is None:
        raise CheckpointError(f"{path}: no known model family matches its {len(index)} tensors ({_looked_like(index)}). "
                              f"Known families: {known_families()}")
    return match


def inspect(path: str | os.PathLike) -> CheckpointInfo:
    """:func:`i2v.checkpoints.summarise` plus the family (``info.match``, None when unrecognised)."""
    from dataclasses import replace

    info = summarise(path)
    return replace(info, match=identify(info.index, info.metadata))


def load(path: str | os.PathLike, *, dtype=None, device="cpu", **options):
    """Load whatever ``path`` is, through its family: a pipeline for image-to-video checkpoints (built-in, SVD,
    Wan), a module for component files (a VAE, CLIP, T5, RAFT, Depth Anything, RIFE). ``dtype`` / ``device``
    as the family's loader takes them (names like "bf16" or torch dtypes)."""
    match = identify_path(path)
    family = FAMILIES[match.family]
    if family.load is None:
        raise CheckpointError(f"{path}: {match.description}; i2v recognises it but does not run this format")
    return family.load(path, match, dtype=dtype, device=device, **options)
