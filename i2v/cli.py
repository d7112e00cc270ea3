"""The `i2v` command. Each subcommand lives in :mod:`i2v.commands` and mirrors a Python API function.

Deliberate errors (:class:`~i2v.errors.I2VError`) are printed as one line, exit status 1; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import animate, camera, cinemagraph, decode, depth, eval, flow, inspect, interpolate, samplers, train
from .errors import I2VError

# name -> module with HELP, EXAMPLES, add_arguments(parser), run(args). An explicit table: no reflection.
COMMANDS = {
    "animate": animate,
    "decode": decode,
    "train": train,
    "eval": eval,
    "samplers": samplers,
    "inspect": inspect,
    "flow": flow,
    "depth": depth,
    "camera": camera,
    "cinemagraph": cinemagraph,
    "interpolate": interpolate,
}

EPILOG = """examples:
  i2v samplers                      list samplers and schedules
  i2v inspect svd_xt.safetensors    what a checkpoint holds and which model it is
  i2v <command> --help              examples for one command"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="i2v", description="i2v: image-to-video from primitives in PyTorch.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"i2v {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, epilog=module.EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except I2VError as e:
        print(f"i2v {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
