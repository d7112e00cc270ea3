"""The `i2v` command. Each subcommand lives in :mod:`i2v.commands` and mirrors a Python API function.

Deliberate errors (:class:`~i2v.errors.I2VError`) are printed as one line, exit status 1; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import I2VError

# name -> the module in i2v/commands with HELP, EXAMPLES, add_arguments(parser), run(args). An explicit table;
# `i2v <command> ...` imports only that command's module, `i2v --help` all of them.
COMMANDS = {
    "animate": "animate",
    "decode": "decode",
    "encode": "encode",
    "train": "train",
    "eval": "eval",
    "samplers": "samplers",
    "inspect": "inspect",
    "flow": "flow",
    "depth": "depth",
    "camera": "camera",
    "cinemagraph": "cinemagraph",
    "interpolate": "interpolate",
}


def command(name: str):
    """The module of subcommand ``name`` (a key of :data:`COMMANDS`)."""
    return importlib.import_module(f".commands.{COMMANDS[name]}", __package__)

EPILOG = """examples:
  i2v samplers                      list samplers and schedules
  i2v inspect svd_xt.safetensors    what a checkpoint holds and which model it is
  i2v <command> --help              examples for one command"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `i2v` parser with every subcommand, or with ``only`` that one (the rest are not even imported)."""
    parser = argparse.ArgumentParser(
        prog="i2v", description="i2v: image-to-video from primitives in PyTorch.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"i2v {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS if only is None else [only]:
        module = command(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, epilog=module.EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that every ``finally`` (temporary outputs, checkpoints) runs."""


def _terminate(signum, frame):
    raise Terminated()


def _note(message, category, filename, lineno, file=None, line=None):
    """Warnings are notes for the user: one line, no source location."""
    print(f"note: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    import signal
    import warnings

    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=first if first in COMMANDS and argv and argv[0] == first else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    previous = signal.getsignal(signal.SIGTERM)
    in_main_thread = True
    try:
        signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (e.g. called from a test runner's worker): keep the default
        in_main_thread = False
    shown = warnings.showwarning
    warnings.showwarning = _note
    try:
        return int(args._run(args) or 0)
    except I2VError as e:
        print(f"i2v {args.command}: error: {e}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"i2v {args.command}: terminated; nothing half-written was left behind", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"i2v {args.command}: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"i2v {args.command}: error: out of memory; use fewer or smaller frames (or a GPU with --device)",
              file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno in (28, 122):  # ENOSPC, EDQUOT: the disk filled up while writing
            print(f"i2v {args.command}: error: the disk is full ({e.strerror}); free space or write elsewhere",
                  file=sys.stderr)
            return 1
        raise
    finally:
        warnings.showwarning = shown
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
