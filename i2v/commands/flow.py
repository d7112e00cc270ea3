"""`i2v flow`: dense optical flow between two images -> a Middlebury .flo file and a colour picture.
Mirrors :func:`i2v.motion.flow.estimate_flow`, :func:`~i2v.motion.flow.write_flo`, :func:`~i2v.motion.flow.flow_to_color`."""

from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from ..outputs import atomic, check_writable
from ..metrics import angular_error, endpoint_error
from ..motion.flow import DIS_PRESETS, FLOW_METHODS, estimate_flow, flow_to_color, read_flo, write_flo
from ..image import load_image
from ..runtime import add_threads_argument, check_number, set_threads

HELP = "optical flow from image A to image B (DIS, Farneback, or RAFT with its weights) -> .flo, with a colour picture"
EXAMPLES = """examples:
  i2v flow frame1.png frame2.png -o flow.flo --viz flow.png
  i2v flow a.png b.png -o flow.flo --method farneback
  i2v flow a.png b.png -o flow.flo --gt true.flo          also print end-point and angular error
  i2v flow a.png b.png -o flow.flo --method raft --checkpoint raft-things.pth --iters 20

The flow F satisfies A(p) ~ B(p + F(p)) in pixels (x right, y down). Colours: the Middlebury wheel
(hue = direction, saturation = speed; right = red, left = cyan)."""


def add_arguments(parser):
    parser.add_argument("image_a", type=Path, help="first image (the flow starts here)")
    parser.add_argument("image_b", type=Path, help="second image, the same size")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .flo file")
    parser.add_argument("--viz", type=Path, help="also write the flow as a colour PNG (Middlebury colour wheel)")
    parser.add_argument("--method", default="dis", choices=list(FLOW_METHODS),
                        help="; ".join(f"{k}: {line}" for k, (_, _, line) in FLOW_METHODS.items()) + " (default dis)")
    parser.add_argument("--checkpoint", type=Path, help="RAFT weights for --method raft (raft-things.pth, raft-small.pth)")
    parser.add_argument("--iters", type=int, default=12, help="RAFT refinement iterations (default 12)")
    parser.add_argument("--device", default="cpu", help="torch device for RAFT (default cpu)")
    parser.add_argument("--preset", default="medium", choices=list(DIS_PRESETS), help="DIS preset (default medium)")
    parser.add_argument("--max-flow", type=float, help="flow length drawn fully saturated (default: the longest vector)")
    parser.add_argument("--gt", type=Path, help="ground-truth .flo: print end-point and angular error against it")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    add_threads_argument(parser)


def run(args) -> int:
    from PIL import Image

    # every output and input is checked before anything is computed or written
    if args.output.suffix.lower() != ".flo":
        raise InputError(f"{args.output}: the output must end in .flo (Middlebury flow format)")
    if args.viz is not None and args.viz.suffix.lower() != ".png":
        raise InputError(f"{args.viz}: --viz writes a .png picture")
    if args.viz is not None and args.viz.resolve() == args.output.resolve():
        raise InputError("-o and --viz name the same file")
    inputs = (args.image_a, args.image_b, args.gt)
    check_writable(args.output, args.overwrite, inputs)
    if args.viz is not None:
        check_writable(args.viz, args.overwrite, inputs, flag="--viz")
    gt = read_flo(args.gt) if args.gt is not None else None
    if args.max_flow is not None:
        check_number("--max-flow", args.max_flow, 0, low_open=True)
    set_threads(args.threads)
    learned = FLOW_METHODS[args.method][1]
    if learned and args.checkpoint is None:
        raise ConfigError(f"--method {args.method} needs --checkpoint (e.g. raft-things.pth or raft-small.pth)")
    if not learned and args.checkpoint is not None:
        raise ConfigError(f"--checkpoint is for --method raft; --method {args.method} needs no weights")
    if args.iters < 1:
        raise ConfigError(f"--iters must be >= 1 (RAFT's refinement steps; 12 is the default), got {args.iters}")
    a, b = load_image(args.image_a), load_image(args.image_b)
    if gt is not None and gt.shape[:2] != a.shape[:2]:
        raise InputError(f"{args.gt}: ground truth is {gt.shape[1]}x{gt.shape[0]}, the images {a.shape[1]}x{a.shape[0]}")
    options = {"checkpoint": args.checkpoint, "iters": args.iters, "device": args.device} if learned else {}
    flow = estimate_flow(a, b, method=args.method, preset=args.preset, **options)
    write_flo(args.output, flow, overwrite=args.overwrite)
    mag = np.hypot(flow[..., 0], flow[..., 1])
    print(f"wrote {args.output} ({flow.shape[1]}x{flow.shape[0]}, mean |flow| {mag.mean():.2f} px, max {mag.max():.2f} px)")
    if args.viz is not None:
        with atomic(args.viz, args.overwrite) as tmp:
            Image.fromarray(flow_to_color(flow, args.max_flow)).save(tmp, format="PNG")
        print(f"wrote {args.viz}")
    if gt is not None:
        ok = np.isfinite(gt).all(-1) & (np.abs(gt) < 1e9).all(-1)  # .flo marks unknown vectors with 1e9
        print(f"end-point error {endpoint_error(flow, gt, ok):.3f} px, angular error {angular_error(flow, gt, ok):.2f} deg")
    return 0
