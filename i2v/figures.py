"""Tiny figure helpers for tutorials and docs, drawn with Pillow (matplotlib is not a dependency)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def panel(images, labels, path, height: int | None = None) -> Path:
    """Save uint8 images ((h, w, 3) RGB or (h, w) grey) side by side, each resized to ``height`` pixels
    (default: the tallest) with its caption above it. Returns the path written."""
    height = height or max(im.shape[0] for im in images)
    tiles = []
    for im, label in zip(images, labels):
        im = np.repeat(im[..., None], 3, 2) if im.ndim == 2 else im  # grey -> RGB
        pil = Image.fromarray(im).resize((round(im.shape[1] * height / im.shape[0]), height))
        tile = Image.new("RGB", (pil.width, height + 16), "white")
        tile.paste(pil, (0, 16))
        ImageDraw.Draw(tile).text((3, 2), label, fill="black")
        tiles.append(tile)
    fig = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), height + 16), "white")
    x = 0
    for t in tiles:
        fig.paste(t, (x, 0))
        x += t.width + 4
    fig.save(path, optimize=True)
    print("wrote", path)
    return Path(path)
