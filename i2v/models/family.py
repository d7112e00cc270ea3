"""What a model family tells the registry (:mod:`i2v.registry`): how to recognise its files, and how to load them.

Every family folder (``models/svd/``, ``models/wan/``, ...) has a ``detect.py`` that imports nothing heavy (no
torch: ``i2v inspect`` and ``i2v --help`` start in a fraction of a second) and defines::

    detect(keys, shapes, metadata) -> Match | None     # from a file's tensor names and shapes only
    detect_folder(path) -> Match | None                # optional: a folder of files (diffusers, Wan-AI layouts)
    load(path, match, **options) -> pipeline or module  # imports the model code; only called by i2v.load

The detector names the variant (``"single-file"``, ``"i2v-14B"``, ``"vits"``, ...) and the facts it read off the
shapes (``details``, printed by ``i2v inspect``); the model's own ``Config.from_state_dict`` builds the full
config when the file is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Match:
    """A family's verdict on a file or folder."""

    family: str  # the registry key, e.g. "svd"
    variant: str  # which file of the family it is, e.g. "single-file", "diffusers-vae", "latents"
    description: str  # one line for people
    details: dict = field(default_factory=dict)  # facts read off the shapes, e.g. {"dim": 5120, "layers": 40}


@dataclass(frozen=True)
class Family:
    """One registry entry. ``load`` is None for formats i2v recognises but does not run."""

    description: str
    detect: Callable[[set, Mapping, Mapping], Match | None]
    load: Callable | None = None
    detect_folder: Callable | None = None
    runs: str = ""  # what i2v does with it, e.g. "i2v animate --checkpoint"


def has(keys, *prefixes: str) -> bool:
    """Every prefix starts at least one key."""
    return all(any(k.startswith(p) for k in keys) for p in prefixes)


def count_indexed(keys, prefix: str) -> int:
    """How many distinct integers N appear as ``prefix + "N."`` in the keys (e.g. blocks.N.)."""
    n = set()
    for k in keys:
        if k.startswith(prefix):
            head = k[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                n.add(int(head))
    return len(n)
