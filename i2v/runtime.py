"""Where and how a computation runs: dtype names, device checks, CPU threads, peak-memory reports.

Every command and pipeline uses these, so the rules are the same everywhere:

- :func:`dtype` turns a name (``float32``/``fp32``, ``float16``/``fp16``, ``bfloat16``/``bf16``, ``float64``,
  ``float8_e4m3fn``/``fp8``) into a torch dtype from one explicit table -- never ``getattr(torch, name)``.
- :func:`device` checks that a device exists before any work starts (``--device cuda`` on a CPU build, or
  ``--device banana``, is a one-line :class:`~i2v.errors.ConfigError`).
- :func:`set_threads` sets the CPU threads of torch AND OpenCV together. The default (:func:`default_threads`)
  is the number of cores this process may use that are not already busy (cores minus the load average), capped at
  8; OpenCV's own pool is limited to the same number so the two never both spin up one thread per core (on a busy
  2-core machine torch's default made the built-in model 3-9x slower than one thread; ``benchmarks/builtin.py``
  measures the default against the best setting).
- :func:`peak_memory` is the line every long command prints at the end.
"""

from __future__ import annotations

import os
import sys

from .errors import ConfigError

# name -> torch dtype attribute; an explicit table (the CLI's --dtype choices come from it)
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
               "bfloat16": "bfloat16", "bf16": "bfloat16", "float64": "float64", "fp64": "float64",
               "float8_e4m3fn": "float8_e4m3fn", "fp8": "float8_e4m3fn"}
MAX_DEFAULT_THREADS = 8


def dtype(name):
    """A torch dtype from a name of :data:`DTYPE_NAMES` (a torch dtype is returned unchanged; None stays None)."""
    import torch

    if name is None or isinstance(name, torch.dtype):
        return name
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
             "float64": torch.float64, "float8_e4m3fn": torch.float8_e4m3fn}
    key = DTYPE_NAMES.get(str(name).lower())
    if key is None:
        raise ConfigError(f"unknown dtype {name!r}; valid: {', '.join(DTYPE_NAMES)}")
    return table[key]


def device(name="cpu"):
    """A torch.device that exists here, or a ConfigError saying what to use instead."""
    import torch

    try:
        d = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {name} is not a device: use cpu, cuda, cuda:1 or mps") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} asked for, but this PyTorch sees no CUDA GPU; use --device cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here (cuda:0 .. "
                              f"cuda:{torch.cuda.device_count() - 1})")
    elif d.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {name} asked for, but MPS is not available here; use --device cpu")
    elif d.type not in ("cpu", "cuda", "mps", "meta"):
        raise ConfigError(f"--device {name}: i2v runs on cpu, cuda or mps")
    return d


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads() -> int:
    """The default CPU thread count: the cores available to this process that other work is not already using
    (cores minus the 1-minute load average, rounded), at least 1 and at most :data:`MAX_DEFAULT_THREADS`.

    On an idle 2-core machine that is 2 threads (0.73x the time of 1 thread for the built-in model); on a busy one
    it falls to 1, because torch's threads then mostly wait for each other on oversubscribed cores (2 threads were
    5-6x slower than 1 with another job on both cores). ``--threads N`` overrides it."""
    cores = available_cores()
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        busy = 0.0
    return max(1, min(cores - int(round(busy)), cores, MAX_DEFAULT_THREADS))


def set_threads(n: int | None = None) -> int:
    """Use ``n`` CPU threads (None: :func:`default_threads`) in torch and in OpenCV, which otherwise keep one
    pool each; returns the number set. ``n`` must be >= 1."""
    if n is None:
        n = default_threads()
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"--threads must be an integer >= 1, got {n!r}")
    os.environ["OMP_NUM_THREADS"] = str(n)  # torch, if it is imported later, starts with n threads
    if "torch" in sys.modules:  # classical commands (i2v flow) never import it
        import torch

        torch.set_num_threads(n)
    import cv2

    cv2.setNumThreads(n)
    return n


def add_threads_argument(parser) -> None:
    """``--threads N`` for a command that computes (argparse; no torch import)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=f"CPU threads for torch and OpenCV (default: the cores not already busy -- cores minus "
                             f"the load average -- at least 1, at most {MAX_DEFAULT_THREADS})")


def peak_memory(device="cpu") -> str:
    """Peak memory of this process so far: the CUDA allocator's peak on a GPU, the peak resident set size on CPU."""
    import torch

    d = torch.device(device)
    if d.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(d) / 2**30:.2f} GiB"
    try:
        import resource  # POSIX only
    except ImportError:
        return "peak RAM unknown on this platform"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return f"peak RAM (process RSS) {rss / (2**30 if sys.platform == 'darwin' else 2**20):.2f} GiB"


def check_count(name: str, value, low: int = 1, high: int | None = None) -> None:
    """An integer option within [low, high], or a ConfigError naming the CLI flag."""
    flag = "--" + name.replace("_", "-")
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"{flag} must be an integer {bound}, got {value!r}")


def available_memory() -> int | None:
    """Bytes of RAM available to new allocations (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(need_bytes: float, what: str, fix: str) -> None:
    """Refuse up front, with the estimate, work whose buffers would not fit in the RAM available now."""
    free = available_memory()
    if free is not None and need_bytes > 0.8 * free:
        raise ConfigError(f"{what} needs about {need_bytes / 2**30:.1f} GiB of memory, {free / 2**30:.1f} GiB is "
                          f"available: {fix}")


def check_number(flag: str, value, low: float | None = None, high: float | None = None, low_open: bool = False) -> None:
    """A finite number within its range, or a ConfigError naming the CLI flag."""
    import math

    ok = value is not None and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low)) and (high is None or value <= high)
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"<= {high:g}"
        raise ConfigError(f"{flag} must be a number {' and '.join(x for x in (lo, hi) if x)}, got {value}")
