"""Image input for every command and pipeline: one reader, one converter, the shared resize/crop rules.

- :func:`load_image`: a file -> ``(h, w, 3)`` uint8 RGB. Alpha is composited over white, greyscale replicated,
  palette / CMYK converted; an unreadable file is an :class:`~i2v.errors.InputError` naming it.
- :func:`to_uint8`: anything image-like (path, PIL image, ``(h, w[, 3|4])`` array, uint8 or float in [0, 1], a
  ``(3, h, w)`` / ``(1, 3, h, w)`` tensor in [0, 1]) -> ``(h, w, 3)`` uint8 RGB.
- :func:`to_tensor`: the same inputs -> a float tensor ``(1, 3, h, w)`` in ``value_range`` ([0, 1] for the motion
  priors, [-1, 1] for the diffusion models); float RGB arrays keep their precision. A TENSOR is taken as already
  converted: its shape is checked and it is cast, not rescaled (pipelines pass their own preprocessed tensors).
- :func:`cover_crop`: resize so the image covers ``(height, width)`` keeping its aspect ratio, then centre-crop:
  the rule SVD uses to reach a model size; :func:`resize_cover_uint8` the same with PIL's filters (Wan2.2 TI2V's
  LANCZOS).
- :func:`fit_grid` -> :class:`GridFit`: the whole image on a model's grid, aspect ratio kept (longer side = the
  model's size, then reflection padding up to the multiples the model needs), and the map between the image's
  and the grid's normalised coordinates (the built-in model renders its motion back at the photo's resolution).

Each family's own size rule (SVD's multiples of 64, Wan's ``max_area``) lives in its pipeline and calls these.
Nothing here imports torch until a tensor is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def _flatten_alpha(im):
    """A PIL image -> RGB, with any transparency composited over white (what a viewer shows)."""
    from PIL import Image

    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return im.convert("RGB")


def load_image(path) -> np.ndarray:
    """An image file -> (h, w, 3) uint8 RGB. Alpha is composited over white; greyscale is replicated."""
    from PIL import Image

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such image")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(_flatten_alpha(im))
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: cannot be read as an image ({e})") from None


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def to_uint8(image) -> np.ndarray:
    """Path / PIL image / array / tensor -> (h, w, 3) uint8 RGB (see the module docstring for what is accepted)."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image
        return np.asarray(_flatten_alpha(image))
    if _is_tensor(image):
        t = image.detach().float().cpu()
        t = t[0] if t.ndim == 4 and t.shape[0] == 1 else t
        if t.ndim != 3 or t.shape[0] != 3:
            raise InputError(f"expected an image tensor (3, h, w) in [0, 1], got shape {tuple(image.shape)}")
        image = t.permute(1, 2, 0).numpy()  # (3, h, w) -> (h, w, 3)
    arr = np.asarray(image)
    if arr.ndim == 2:  # greyscale
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise InputError(f"expected an image (h, w, 3) RGB, got an array of shape {arr.shape}")
    if arr.shape[-1] == 4:  # RGBA array: composite over white like files
        from PIL import Image

        rgba = arr if arr.dtype == np.uint8 else (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        arr = np.asarray(_flatten_alpha(Image.fromarray(rgba, "RGBA")))
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise InputError(f"expected a uint8 image or floats in [0, 1], got dtype {arr.dtype}")
        arr = (np.clip(arr.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def to_tensor(image, value_range: tuple[float, float] = (0.0, 1.0), dtype=None, device="cpu"):
    """Image-like -> (1, 3, h, w) float tensor in ``value_range`` (uint8 0..255 mapped linearly onto it).
    A tensor is taken as already in ``value_range``: (3, h, w) or (1, 3, h, w), cast to ``dtype`` (float32 by default)."""
    import torch

    dtype = dtype or torch.float32
    if _is_tensor(image):
        x = image[None] if image.ndim == 3 else image
        if x.ndim != 4 or x.shape[:2] != (1, 3):
            raise InputError(f"expected an image tensor (1, 3, h, w) in {list(value_range)}, got shape {tuple(image.shape)}")
        return x.detach().to(device, dtype)
    lo, hi = value_range
    if isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating) and image.ndim == 3 \
            and image.shape[-1] == 3:  # float RGB in [0, 1]: kept at full precision, not rounded to 8 bits
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(dtype)  # -> (1, 3, h, w)
        return (x * (hi - lo) + lo if (lo, hi) != (0.0, 1.0) else x).to(device)
    arr = to_uint8(image)
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].to(dtype)  # (h, w, 3) -> (1, 3, h, w), 0..255
    x = x / 255 if (lo, hi) == (0.0, 1.0) else x / 127.5 - 1 if (lo, hi) == (-1.0, 1.0) else x / 255 * (hi - lo) + lo
    return x.to(device)


def check_size(h: int, w: int, minimum: int, what: str) -> None:
    """An image smaller than a method can use is an InputError saying the smallest size that works."""
    if min(h, w) < minimum:
        raise InputError(f"image is {w}x{h}; {what} needs both sides >= {minimum} px")


def cover_crop(x, height: int, width: int, mode: str = "bicubic", antialias: bool = True):
    """(b, c, h, w) -> (b, c, height, width): resize (keeping the aspect ratio) so the image covers the target,
    then take the centre. Returns the tensor unchanged when it already has that size."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    s = max(height / h, width / w)
    rh, rw = max(height, round(h * s)), max(width, round(w * s))
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode=mode, antialias=antialias and mode in ("bilinear", "bicubic"),
                          align_corners=False if mode in ("bilinear", "bicubic") else None)
    top, left = (rh - height) // 2, (rw - width) // 2
    return x[..., top:top + height, left:left + width]


def resize_cover_uint8(image, height: int, width: int, resample: str = "lanczos") -> np.ndarray:
    """PIL's resize of an image-like to cover (height, width) keeping its aspect ratio -- sides round(side * s),
    s = max(height / h, width / w) -- then the centre crop at ((W - width) // 2, (H - height) // 2): Wan2.2 TI2V's
    preprocessing (``Image.LANCZOS``). (h, w, 3) uint8 -> (height, width, 3) uint8."""
    from PIL import Image

    filters = {"lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
    if resample not in filters:
        raise InputError(f"resample {resample!r}: expected one of {', '.join(filters)}")
    im = Image.fromarray(to_uint8(image))
    s = max(width / im.width, height / im.height)
    im = im.resize((max(width, round(im.width * s)), max(height, round(im.height * s))), filters[resample])
    left, top = (im.width - width) // 2, (im.height - height) // 2
    return np.asarray(im.crop((left, top, left + width, top + height)))


@dataclass(frozen=True)
class GridFit:
    """How a whole image goes onto a model's grid with its aspect ratio kept: resized to ``content`` (its longer
    side the model's size, the other rounded), then padded by reflection to ``grid``, whose sides are multiples
    of what the model needs. All sizes are (height, width); ``pad`` is (top, bottom, left, right).

    Positions are normalised coordinates as ``grid_sample(align_corners=False)`` reads them: (-1, -1) and (1, 1)
    are the outer corners, so a position means the same place at every resolution. The image's x = +-1 sits at
    the content's edges inside the grid::

        x_grid = (w_content / w_grid) x_image + (left - right) / w_grid        (the same for y)
    """
    image: tuple[int, int]
    content: tuple[int, int]
    grid: tuple[int, int]
    pad: tuple[int, int, int, int]

    def describe(self) -> str:
        """'64x48', or '64x43 (padded to 64x48)' (width x height, as image sizes are usually written)."""
        (ch, cw), (gh, gw) = self.content, self.grid
        return f"{cw}x{ch}" + ("" if (ch, cw) == (gh, gw) else f" (padded to {gw}x{gh})")

    def _affine(self):
        (ch, cw), (gh, gw), (top, bottom, left, right) = self.content, self.grid, self.pad
        return (cw / gw, ch / gh), ((left - right) / gw, (top - bottom) / gh)  # (scale x, y), (offset x, y)

    def to_grid(self, points):
        """(..., 2) normalised (x, y) positions in the image -> the same places in the grid's coordinates."""
        (ax, ay), (bx, by) = self._affine()
        return _stack_xy(points[..., 0] * ax + bx, points[..., 1] * ay + by, points)

    def from_grid(self, points):
        """Inverse of :meth:`to_grid`: the grid's normalised positions -> the image's."""
        (ax, ay), (bx, by) = self._affine()
        return _stack_xy((points[..., 0] - bx) / ax, (points[..., 1] - by) / ay, points)

    def crop(self, x):
        """(..., grid h, grid w) array or tensor -> (..., content h, content w): the image's part of the grid."""
        top, _, left, _ = self.pad
        return x[..., top:top + self.content[0], left:left + self.content[1]]

    def resize(self, image: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 image (of size ``self.image``) -> (grid h, grid w, 3) uint8: area-resized to the
        content size (bicubic when enlarging), reflection-padded (the edge pixel is not repeated)."""
        import cv2

        if image.shape[:2] != self.image:
            raise InputError(f"this fit is for a {self.image[1]}x{self.image[0]} image, "
                             f"got {image.shape[1]}x{image.shape[0]}")
        (ch, cw), (h, w) = self.content, self.image
        out = cv2.resize(np.ascontiguousarray(image), (cw, ch),
                         interpolation=cv2.INTER_AREA if ch <= h and cw <= w else cv2.INTER_CUBIC)
        top, bottom, left, right = self.pad
        if any(self.pad):
            out = cv2.copyMakeBorder(out, top, bottom, left, right, cv2.BORDER_REFLECT_101)
        return out


def _stack_xy(x, y, like):
    if _is_tensor(like):
        import torch

        return torch.stack([x, y], dim=-1)
    return np.stack([x, y], axis=-1)


def fit_grid(height: int, width: int, long_side: int, multiple: int) -> GridFit:
    """The :class:`GridFit` of a ``height`` x ``width`` image for a model that runs at ``long_side`` pixels on
    its longer side and needs sides in multiples of ``multiple``: 640x480 on (64, 16) -> content 64x48, no
    padding; 1000x667 -> content 64x43, padded to 64x48 (2 rows above, 3 below)."""
    if min(height, width) < 1 or long_side < 1 or multiple < 1:
        raise InputError(f"cannot fit a {width}x{height} image onto a grid of long side {long_side}, "
                         f"multiple {multiple}")
    scale = long_side / max(height, width)
    ch, cw = max(1, round(height * scale)), max(1, round(width * scale))
    gh, gw = (-(-n // multiple) * multiple for n in (ch, cw))  # round up to the multiple
    top, left = (gh - ch) // 2, (gw - cw) // 2
    return GridFit((height, width), (ch, cw), (gh, gw), (top, gh - ch - top, left, gw - cw - left))
