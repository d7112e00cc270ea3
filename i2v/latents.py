"""Sampled latents on disk: ``i2v animate --save-latents run.safetensors`` writes them, ``i2v decode`` renders
them again (another chunk size, dtype, device or tiling) without sampling.

A latents file is a safetensors file with one tensor ``latents`` and string metadata: ``format`` names the family
(``i2v-svd-latents``, ``i2v-wan-latents``; the registry's detectors recognise them), plus what the run used
(checkpoint, seed, frames, steps, ...). Written atomically.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

FORMATS = {"svd": "i2v-svd-latents", "wan": "i2v-wan-latents"}


def save_latents(path, latents, family: str, **info) -> Path:
    """Write ``latents`` with ``format = FORMATS[family]`` and ``info`` as metadata strings; atomic."""
    from safetensors.torch import save_file

    from .outputs import atomic

    path = Path(path)
    meta = {"format": FORMATS[family], **{k: str(v) for k, v in info.items()}}
    with atomic(path, overwrite=True) as tmp:
        save_file({"latents": latents.detach().cpu().contiguous()}, str(tmp), metadata=meta)
    return path


def load_latents(path, family: str | None = None):
    """(latents, metadata) of a file written by :func:`save_latents`; ``family`` checks which model wrote it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such latents file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            fmt = meta.get("format")
            if fmt not in FORMATS.values() or "latents" not in f.keys():
                raise InputError(f"{path}: not an i2v latents file (written by `i2v animate --save-latents`)")
            if family is not None and fmt != FORMATS[family]:
                other = next(k for k, v in FORMATS.items() if v == fmt)
                raise InputError(f"{path}: latents of a {other} model (format {fmt}); decode them with that model's "
                                 f"checkpoint, not a {family} one")
            return f.get_tensor("latents"), meta
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own types on broken files
        raise InputError(f"{path}: cannot be read as a latents file ({e})") from None
