"""`i2v depth PHOTO -o depth.png|.npy --checkpoint depth_anything_v2_vits.pth`: relative depth of any photo with
Depth Anything V2, and a coloured preview. Mirrors :func:`i2v.motion.depth.estimate_depth`."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, InputError
from ..outputs import atomic, check_writable
from ..image import load_image
from ..runtime import add_threads_argument, set_threads

HELP = "monocular depth of a photo with Depth Anything V2 (.npy / 8-bit .png inverse depth, coloured preview)"
EXAMPLES = """examples:
  i2v depth photo.jpg -o depth.png --checkpoint depth_anything_v2_vits.pth
  i2v depth photo.jpg -o depth.npy --checkpoint depth_anything_v2_vitl.pth --input-size 700 --viz depth_color.png
  i2v camera photo.jpg --depth depth.png --move orbit -o orbit.mp4       (the .png is read back as disparity)
  i2v camera photo.jpg --depth-model depth_anything_v2_vits.pth --move orbit -o orbit.mp4   (both in one step)

Output: relative INVERSE depth (larger = nearer, unknown scale and shift), as Depth Anything V2 predicts it.
.npy keeps the float values; .png stores d / max(d) * 255 (brighter = nearer). Weights: the Depth-Anything-V2
release (depth_anything_v2_vits.pth 25 M, vitb 98 M, vitl 335 M parameters)."""


def add_arguments(parser):
    parser.add_argument("image", type=Path, help="input photo")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .npy (float) or .png (8-bit)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="depth_anything_v2_vits/vitb/vitl.pth")
    parser.add_argument("--input-size", type=int, default=518, help="network input side, rounded to a multiple of 14 "
                        "(default 518, the original's; larger = finer detail, slower)")
    parser.add_argument("--viz", type=Path, help="also write a coloured preview PNG (near = bright)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    add_threads_argument(parser)


def run(args) -> int:
    from PIL import Image

    if args.output.suffix.lower() not in (".npy", ".png"):
        raise InputError(f"{args.output}: the output must end in .npy (float inverse depth) or .png (8-bit)")
    if args.viz is not None and args.viz.suffix.lower() != ".png":
        raise InputError(f"{args.viz}: --viz writes a .png picture")
    if args.input_size < 14:
        raise ConfigError(f"--input-size must be >= 14 (one 14-px patch), got {args.input_size}")
    check_writable(args.output, args.overwrite, (args.image,))
    if args.viz is not None:
        check_writable(args.viz, args.overwrite, (args.image, args.output), flag="--viz")
    set_threads(args.threads)
    from .. import runtime
    from ..motion.depth import depth_preview, estimate_depth, load_depth_model, write_inverse_depth

    image = load_image(args.image)
    model = load_depth_model(args.checkpoint, runtime.device(args.device))
    d = estimate_depth(image, input_size=args.input_size, model=model)
    write_inverse_depth(args.output, d, overwrite=args.overwrite)
    print(f"wrote {args.output} ({d.shape[1]}x{d.shape[0]} relative inverse depth, range {d.min():.3g} .. {d.max():.3g})")
    if args.viz is not None:
        with atomic(args.viz, args.overwrite) as tmp:
            Image.fromarray(depth_preview(d)).save(tmp, format="PNG")
        print(f"wrote {args.viz}")
    return 0
