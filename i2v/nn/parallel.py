"""One model on several processes, with what PyTorch ships: torchrun, torch.distributed, FSDP2.

Three pieces, each usable alone (docs/distributed.md shows the commands):

**Launch.** ``torchrun --nproc-per-node N -m i2v <command> ...`` starts N copies of the command; each finds its
place in the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT).
:func:`launched` wraps a command's body: it joins the process group (NCCL for CUDA tensors, gloo for CPU ones),
gives process ``LOCAL_RANK`` its own GPU, silences every process but rank 0 (stdout and warnings; progress bars
are the caller's ``progress=launch.main``), and when a process fails, lets the FIRST failure alone show its
message (a counter in torchrun's own key-value store decides) while the others exit quietly -- torchrun then
stops the rest and exits non-zero. One process without torchrun: :func:`launched` does nothing at all.
:func:`check_options` gives the one-line errors for options that need a launch (see its docstring).

**Sequence parallelism** (DeepSpeed-Ulysses: Jacobs et al. 2023, "DeepSpeed Ulysses: System Optimizations for
Enabling Training of Extreme Long Sequence Transformer Models", arXiv:2309.14509; as Wan-Video/Wan2.1
``wan/distributed/xdit_context_parallel.py`` uses it through xDiT). The L tokens, zero-padded to N l, are cut in
N contiguous slices; rank r keeps tokens [r l, (r+1) l) through every per-token layer (norms, modulation,
cross-attention to the text and CLIP tokens, which every rank holds whole, the FFN, the head). Only
self-attention needs every token, so around it two all-to-alls trade the sequence axis for the head axis::

    q, k, v  (b, h, l, d)     all heads of my l tokens
      --all-to-all-->  (b, h/N, N l, d)    my h/N heads of all tokens; the padding dropped: (b, h/N, L, d)
      softmax(q k^T / sqrt(d)) v  per head, exactly as on one process
      --all-to-all-->  (b, h, l, d)        back to my tokens

RoPE must rotate each token by its GLOBAL position, so each rank takes its slice of the shared (L, d/2) tables.
Bytes each rank sends per self-attention: 4 (q, k, v, out) x b l D x (N-1)/N elements (D = h d the width);
docs/distributed.md has the numbers for Wan I2V-14B. :class:`SequenceParallel` is the long-lived object (the
group); :meth:`SequenceParallel.split` gives the per-call :class:`TokenSplit` (which slice, how much padding).
The exchange uses ``dist.all_to_all_single`` (no autograd): for sampling, not training.

**Sharded weights** (FSDP2, ``torch.distributed.fsdp.fully_shard``; Zhao et al. 2023, "PyTorch FSDP",
arXiv:2304.11277). Each parameter is cut into N pieces along dim 0 (along its next axis for (1, n, d) tables),
one per process; before a unit's forward its full weights are all-gathered, after it they are freed. The units are each entry of ``model.blocks`` (Wan DiT
blocks, T5 blocks) and the root (embeddings, head). :func:`load_sharded` fills a model built on the meta device
unit by unit from a lazily read checkpoint: one unit is read (through :func:`i2v.checkpoints.load_into`, so the
strict accounting and the dtype rules are the same as on one process), sharded, and its full copy dropped -- no
process ever holds more than its shards plus one unit. :func:`shard` does the same to a model already loaded.
"""

from __future__ import annotations

import math
import os
import warnings
from contextlib import ExitStack, contextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from einops import rearrange

from ..errors import ConfigError
from .attention import attention

FSDP_PARTS = ("dit", "text")  # what --fsdp can shard: the diffusion transformer, the text encoder
FAILURE_KEY = "i2v/failed_processes"  # counter in torchrun's store: the first failure shows its message


# --------------------------------------------------------------------------------------------------- launch

@dataclass(frozen=True)
class Launch:
    """Where this process stands in a torchrun launch (rank 0 of 1 without torchrun)."""

    rank: int = 0  # 0 .. world_size-1 over all machines
    world_size: int = 1  # processes in all
    local_rank: int = 0  # index on this machine: which GPU this process drives
    local_world_size: int = 1  # processes on this machine (they share its CPU cores)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that prints and writes outputs."""
        return self.rank == 0

    @classmethod
    def from_env(cls, env=None) -> "Launch":
        """Read torchrun's variables (absent: one process)."""
        env = os.environ if env is None else env
        try:
            values = {k: int(env[v]) for k, v in (("rank", "RANK"), ("world_size", "WORLD_SIZE"),
                                                   ("local_rank", "LOCAL_RANK"),
                                                   ("local_world_size", "LOCAL_WORLD_SIZE")) if v in env}
        except ValueError:
            raise ConfigError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (they are set by torchrun); got "
                              f"{ {k: env.get(k) for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')} }") from None
        launch = cls(**values)
        if not 0 <= launch.rank < launch.world_size:
            raise ConfigError(f"RANK={launch.rank} is outside WORLD_SIZE={launch.world_size}: launch with torchrun")
        return launch

    def device(self, kind: str = "auto") -> torch.device:
        """This process's device: ``cuda:LOCAL_RANK`` ("auto" with CUDA present, or "cuda"), else the CPU."""
        if kind in ("auto", "cuda") and torch.cuda.is_available():
            if self.local_rank >= torch.cuda.device_count():
                raise ConfigError(f"torchrun started {self.local_world_size} processes on this machine but it has "
                                  f"{torch.cuda.device_count()} GPU(s): use --nproc-per-node {torch.cuda.device_count()}")
            return torch.device("cuda", self.local_rank)
        if kind == "cuda":
            raise ConfigError("device cuda asked for, but this PyTorch sees no CUDA GPU; use cpu")
        return torch.device(kind if kind != "auto" else "cpu")

    def cpu_threads(self) -> int | None:
        """CPU threads per process: the machine's default shared by the processes on it (None: one process,
        i2v's usual default)."""
        if self.local_world_size <= 1:
            return None
        from ..runtime import default_threads

        return max(1, default_threads() // self.local_world_size)


def init_process_group(launch: Launch) -> None:
    """Join the launch's process group (env:// rendezvous from torchrun's variables). CUDA tensors travel by NCCL,
    CPU tensors by gloo; process ``LOCAL_RANK`` makes GPU ``LOCAL_RANK`` its current device."""
    if _initialized() or not launch.distributed:
        return
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(launch.device("cuda"))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend, timeout=timedelta(minutes=30))


@contextmanager
def launched():
    """The body of a command as one process of a torchrun launch; yields its :class:`Launch`.

    Without torchrun (or with one process) it yields ``Launch()`` and changes nothing. Under torchrun: joins the
    group, silences the processes other than rank 0, lets only the first failure print (the others exit with
    status 1, or 130 when interrupted, quietly), and leaves the group at the end."""
    launch = Launch.from_env()
    if not launch.distributed:
        yield launch
        return
    joined = not _initialized()
    init_process_group(launch)
    store = _failure_store()
    with ExitStack() as quiet:
        if not launch.main:  # one voice: rank 0's
            quiet.enter_context(redirect_stdout(quiet.enter_context(open(os.devnull, "w"))))
            quiet.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        try:
            yield launch
        except BaseException as e:
            if isinstance(e, SystemExit) or not _first_to_fail(store):
                code = e.code if isinstance(e, SystemExit) else 130 if isinstance(e, KeyboardInterrupt) else 1
                raise SystemExit(code) from None  # another process's message says what went wrong
            raise  # the command prints it, once
    if joined:
        dist.destroy_process_group()


def _failure_store():
    """A client of the key-value store the rendezvous uses (torchrun's agent hosts it: it outlives any worker)."""
    try:
        return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                             timeout=timedelta(seconds=10), wait_for_workers=False)
    except (KeyError, ValueError, RuntimeError):
        return None


def _first_to_fail(store) -> bool:
    if store is None:
        return True
    try:
        return store.add(FAILURE_KEY, 1) == 1
    except RuntimeError:  # the store is gone: say it rather than nothing
        return True


def parse_fsdp(value: str | None) -> tuple[str, ...]:
    """``--fsdp dit,text`` -> ("dit", "text"); empty or None -> ()."""
    parts = tuple(p.strip() for p in (value or "").split(",") if p.strip())
    bad = [p for p in parts if p not in FSDP_PARTS]
    if bad:
        raise ConfigError(f"--fsdp {value}: {', '.join(bad)} is not a part i2v shards; give a comma-separated list "
                          f"of {', '.join(FSDP_PARTS)}")
    return parts


def check_options(world_size: int, *, sequence_parallel: int = 1, fsdp=(), heads: int | None = None,
                  command: str = "animate") -> None:
    """One-line errors, before any work, for distributed options that cannot work in this launch:
    ``--sequence-parallel`` / ``--fsdp`` in a single process (no torchrun), ``--sequence-parallel`` other than
    the number of processes (Ulysses splits one video over all of them) or not dividing the attention heads."""
    fsdp = tuple(fsdp)
    if sequence_parallel < 1:
        raise ConfigError(f"--sequence-parallel must be >= 1, got {sequence_parallel}")
    if world_size == 1 and (sequence_parallel > 1 or fsdp):
        option = f"--sequence-parallel {sequence_parallel}" if sequence_parallel > 1 else f"--fsdp {','.join(fsdp)}"
        n = max(sequence_parallel, 2)
        raise ConfigError(f"{option} splits the work over several processes, but this is a single process: launch "
                          f"it with `torchrun --nproc-per-node {n} -m i2v {command} ...`")
    if sequence_parallel > world_size:
        raise ConfigError(f"--sequence-parallel {sequence_parallel} is larger than the {world_size} processes "
                          f"torchrun started; use --sequence-parallel {world_size} or --nproc-per-node "
                          f"{sequence_parallel}")
    if 1 < sequence_parallel < world_size:
        raise ConfigError(f"--sequence-parallel {sequence_parallel} with {world_size} processes: one video is split "
                          f"over all of them; use --sequence-parallel {world_size} (or --nproc-per-node "
                          f"{sequence_parallel})")
    if heads is not None and heads % sequence_parallel:
        divisors = [d for d in range(1, heads + 1) if heads % d == 0]
        raise ConfigError(f"--sequence-parallel {sequence_parallel} must divide the model's {heads} attention heads "
                          f"(each process attends with heads / {sequence_parallel}); use one of "
                          f"{', '.join(map(str, divisors))}")


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()  # some builds (e.g. for phones) lack torch.distributed


def rank() -> int:
    return dist.get_rank() if _initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if _initialized() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that prints and writes outputs."""
    return rank() == 0


def on_main(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on rank 0 only (a writer: i2v.video.save, outputs.check_writable, ...); None on the
    other processes, which write nothing."""
    return fn(*args, **kwargs) if is_main() else None


def broadcast(value, src: int = 0):
    """Rank ``src``'s ``value`` (any picklable object) on every process, e.g. a seed drawn at random."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """For each flag: is it set on any process? (a decision every process must take together, e.g. stop now)"""
    if world_size() == 1:
        return tuple(bool(f) for f in flags)
    t = torch.tensor([float(bool(f)) for f in flags])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def mean_over_ranks(value: float) -> float:
    """The mean of a number over the processes (one process: the number)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / world_size()


# ------------------------------------------------------------------------------------- sequence parallelism

class SequenceParallel:
    """Ulysses over a process group (default: all processes). Attach to a model (``WanDiT.sequence_parallel``)
    with :func:`use_sequence_parallel`."""

    def __init__(self, group=None):
        self.group = group
        self.degree = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def split(self, length: int) -> "TokenSplit":
        """The slice of ``length`` tokens this rank keeps during one forward call."""
        return TokenSplit(self.group, self.degree, self.rank, length, math.ceil(length / self.degree))

    def __repr__(self) -> str:
        return f"SequenceParallel(rank {self.rank} of {self.degree})"


@dataclass(frozen=True)
class TokenSplit:
    """One forward call's split of ``length`` tokens: rank r keeps [r per_rank, (r+1) per_rank) of the sequence
    zero-padded to ``degree * per_rank``."""

    group: object
    degree: int
    rank: int
    length: int  # L, the real tokens
    per_rank: int  # l = ceil(L / N)

    @property
    def padded(self) -> int:
        return self.degree * self.per_rank

    def local(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This rank's tokens of ``x`` (L along ``dim``), zero-padded to ``per_rank`` (the last ranks)."""
        start = min(self.rank * self.per_rank, self.length)
        stop = min(start + self.per_rank, self.length)
        part = x.narrow(dim, start, stop - start)
        if stop - start == self.per_rank:
            return part
        shape = list(x.shape)
        shape[dim] = self.per_rank - (stop - start)
        return torch.cat([part, x.new_zeros(shape)], dim=dim)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Self-attention over all ranks' tokens. q, k, v (b, h, l, d): all heads of this rank's tokens, RoPE
        applied -> (b, h, l, d), equal to the rows of :func:`i2v.nn.attention.attention` over the whole sequence."""
        n = self.degree
        if q.shape[1] % n:
            raise ConfigError(f"sequence parallelism over {n} processes needs the heads ({q.shape[1]}) divisible by {n}")
        send = rearrange(torch.stack([q, k, v]), "s b (r h) l d -> r s b h l d", r=n).contiguous()  # by destination
        got = torch.empty_like(send)
        dist.all_to_all_single(got, send, group=self.group)  # got[r]: my heads of rank r's tokens
        q, k, v = rearrange(got, "r s b h l d -> s b h (r l) d")[..., : self.length, :]  # padding dropped
        out = attention(q, k, v)  # (b, h/N, L, d): softmax(q k^T / sqrt(d)) v over every real token
        out = torch.nn.functional.pad(out, (0, 0, 0, self.padded - self.length))  # (b, h/N, N l, d)
        send = rearrange(out, "b h (r l) d -> r b h l d", r=n).contiguous()
        got = torch.empty_like(send)
        dist.all_to_all_single(got, send, group=self.group)  # got[r]: head group r of my tokens
        return rearrange(got, "r b h l d -> b (r h) l d")

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(b, l, c) per rank -> (b, L, c) on every rank: all tokens again, padding removed."""
        x = x.contiguous()
        out = x.new_empty(self.degree * x.shape[0], *x.shape[1:])  # the ranks' x one after the other
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # its name before 2.13
        gather(out, x, group=self.group)
        return rearrange(out, "(r b) l c -> b (r l) c", r=self.degree)[:, : self.length]


def use_sequence_parallel(model, group=None):
    """Make ``model`` (a WanDiT: its ``sequence_parallel`` attribute) split its tokens over ``group`` (default:
    every process). Checks that the heads divide by the degree. Returns the model."""
    sp = SequenceParallel(group)
    check_options(dist.get_world_size(), sequence_parallel=sp.degree, heads=model.config.num_heads)
    model.sequence_parallel = sp
    return model


# ------------------------------------------------------------------------------------------------- FSDP2

def device_mesh(device) -> "torch.distributed.device_mesh.DeviceMesh":
    """The 1-D mesh of every process on ``device``'s kind (cpu: gloo, cuda: NCCL)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(torch.device(device).type, (dist.get_world_size(),))


def _placement(param):
    """Where FSDP2 cuts a tensor: dim 0, or for (1, n, d) tables (Wan's modulation, emb_pos) the first longer axis."""
    from torch.distributed.tensor import Shard

    return Shard(next((i for i, size in enumerate(param.shape) if size > 1), 0))


def _fully_shard(module, mesh) -> None:
    # reshard_after_forward=True: full weights freed after each unit's forward, the root's too (FSDP2 otherwise
    # keeps the root gathered, for training's backward)
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        raise ConfigError(f"--fsdp needs FSDP2 (torch.distributed.fsdp.fully_shard, PyTorch >= 2.6); this is "
                          f"PyTorch {torch.__version__}: upgrade it, or run without --fsdp") from None
    fully_shard(module, mesh=mesh, reshard_after_forward=True, shard_placement_fn=_placement)


def _units(model) -> list[tuple[str, torch.nn.Module]]:
    """(key prefix, module) of the FSDP units below the root: each entry of ``model.blocks``."""
    return [(f"blocks.{i}.", block) for i, block in enumerate(getattr(model, "blocks", ()))]


def shard(model, device=None):
    """FSDP2 over every process on a model already loaded (on any device; moved to ``device``, default this
    process's): each block its own unit, the rest the root. Each process keeps its rows of every tensor; a
    unit's full weights exist only during its forward. Returns the model (an FSDPModule)."""
    mesh = device_mesh(device or Launch.from_env().device())
    for _, block in _units(model):
        _fully_shard(block, mesh)
    _fully_shard(model, mesh)
    return model


def load_sharded(model, state_dict, *, source=None, skip=None, dtype=None, device=None, keep_dtype=False,
                 hint: str = "", prefix=None):
    """:func:`i2v.checkpoints.load_into` for FSDP2: ``model`` built on the meta device ends sharded over every
    process, each holding its rows of every tensor. The file is accounted for as a whole first (one error listing
    missing, unexpected, misshaped keys), then each block is read (``load_into`` on the block: same casts),
    sharded, and its full copy dropped, and last the rest (the root unit). Arguments as ``load_into``'s;
    ``device``: where the shards live (default this process's device)."""
    from ..checkpoints import check_keys, load_into

    source = str(source or getattr(state_dict, "source", "the state dict"))
    shapes = state_dict.shapes if hasattr(state_dict, "shapes") else {k: tuple(v.shape) for k, v in state_dict.items()}
    prefix = getattr(state_dict, "prefix", "") if prefix is None else prefix
    check_keys({k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}, shapes, source=source,
               model=type(model).__name__, skip=skip, hint=hint, prefix=prefix)
    if any(True for _ in model.parameters(recurse=False)):
        raise ConfigError(f"{type(model).__name__}: FSDP loading expects every parameter inside a submodule")
    mesh = device_mesh(device or Launch.from_env().device())
    kw = dict(source=source, dtype=dtype, keep_dtype=keep_dtype, hint=hint)

    def fill(module, key_prefix):  # one part of the model, read from the file through load_into
        load_into(module, _part(state_dict, key_prefix, set(module.state_dict())), prefix=prefix + key_prefix, **kw)

    for key_prefix, block in _units(model):
        fill(block, key_prefix)
        _fully_shard(block, mesh)  # keeps this process's rows, drops the rest
    for name, child in model.named_children():
        if name != "blocks":
            fill(child, f"{name}.")
    _fully_shard(model, mesh)
    return model


def _part(state_dict, prefix: str, keys: set[str]):
    """The tensors ``prefix + key`` (key in ``keys``) under the names ``key``: a lazy view of a StateDict (nothing
    read), or a dict of a plain one."""
    if hasattr(state_dict, "strip"):
        return state_dict.strip(prefix).select(keys.__contains__)
    return {k: state_dict[prefix + k] for k in keys}


def load_model_sharded(cls, config, state_dict, **kwargs):
    """:func:`i2v.checkpoints.load_model` with :func:`load_sharded`: ``cls(config)`` built on the meta device and
    filled shard by shard; eval mode."""
    with torch.device("meta"):
        model = cls(config)
    return load_sharded(model, state_dict, **kwargs).eval()


def distribute(model, *, fsdp: bool = False, sequence_parallel: bool = False, device=None):
    """A loaded WanDiT or T5Encoder made ready for the current torchrun group: ``fsdp`` shards its weights
    (:func:`shard`; prefer loading sharded, ``WanDiT.from_pretrained(..., fsdp=True)``, which never holds the
    whole model), ``sequence_parallel`` splits the DiT's tokens over every process (:func:`use_sequence_parallel`).
    One process: returned unchanged."""
    if world_size() == 1:
        return model
    if fsdp:
        shard(model, device)
    if sequence_parallel:
        use_sequence_parallel(model)
    return model


def local_fraction(model) -> float:
    """The fraction of the model's parameter entries this process holds (1 unsharded; ~1/N sharded over N)."""
    from torch.distributed.tensor import DTensor

    total = held = 0
    for p in model.parameters():
        total += p.numel()
        held += p.to_local().numel() if isinstance(p, DTensor) else p.numel()
    return held / max(total, 1)

