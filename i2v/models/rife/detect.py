"""Recognising RIFE IFNet files (no torch) and telling the releases apart from their keys and shapes:
4.0-4.6 have no feature head; 4.7-4.12 a two-layer ``encode.0/1`` head; 4.13-4.21 the ``encode.cnn0..3`` head with
8 channels; 4.22-lite and 4.25 that head with 4 channels, 4.25 with five blocks of widths 192/128/96/64/32."""

from __future__ import annotations

from ..family import Match, has

V425_WIDTHS = (192, 128, 96, 64, 32)


def block_widths(shapes) -> tuple[int, ...]:
    blocks = sorted(int(k.split(".")[0][5:]) for k in shapes if k.startswith("block") and k.endswith(".conv0.1.0.weight")
                    and k.split(".")[0][5:].isdigit())
    return tuple(int(shapes[f"block{i}.conv0.1.0.weight"][0]) for i in blocks)


def version(shapes) -> str:
    """"4.25", or a description of the release the keys look like."""
    widths = block_widths(shapes)
    found = f"{len(widths)} blocks of widths {'/'.join(map(str, widths))}"
    if not any(k.startswith("encode.") for k in shapes):
        return f"4.0-4.6 (no feature head; {found})"
    if "encode.0.weight" in shapes:
        return f"4.7-4.12 (two-layer feature head; {found})"
    if "encode.cnn3.weight" not in shapes:
        return f"of an unknown version (unrecognised feature head keys {sorted(k for k in shapes if k.startswith('encode.'))[:4]})"
    head = int(shapes["encode.cnn3.weight"][1])
    if head == 8:
        return f"4.13-4.21 (8-channel feature head; {found})"
    if head == 4 and widths == V425_WIDTHS:
        return "4.25"
    return f"of an unknown version ({head}-channel feature head, {found}; 4.22-lite has a 4-channel head too)"


def detect(keys, shapes, metadata) -> Match | None:
    if not has(keys, "block0.conv0.", "block0.convblock.", "block1."):
        return None
    v = version(shapes) if all(k in shapes for k in ("block0.conv0.1.0.weight",)) else "of an unknown version"
    supported = v == "4.25"
    return Match("rife", "4.25" if supported else "other", f"RIFE {v} frame interpolation, IFNet (flownet.pkl)"
                 + ("" if supported else "; i2v runs RIFE 4.25"), {"version": v})


def load(path, match: Match, dtype=None, device="cpu", **options):
    from .ifnet import load as load_ifnet

    return load_ifnet(path, device=device, **({"dtype": dtype} if dtype is not None else {}))
