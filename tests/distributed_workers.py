"""What the processes of tests/test_distributed.py run (a module, so that spawned children import it quickly).

- :func:`spawn` (called by the tests) starts ``world`` processes with torch.multiprocessing, each joined to a
  gloo group through the same environment variables torchrun sets, runs functions of :data:`WORKERS` in turn
  and saves what they return to ``<out>/results.rank<r>.pt``.
- ``python tests/distributed_workers.py fail-train ARGS...`` (run by torchrun in the failure test) is ``i2v train
  ARGS...`` in which process 1 raises at its first batch.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch

T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
FAILURE = "process 1 could not draw its clips (the failure this test injects)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(tasks: list[tuple[str, dict]], out: Path, world: int = 2) -> list[dict]:
    """Run each (name, kwargs) of ``tasks`` in turn, WORKERS[name](out, **kwargs), on the same ``world`` gloo
    processes (one start-up for all); returns {name: result} per rank."""
    import torch.multiprocessing as mp

    mp.start_processes(_child, args=(world, free_port(), tasks, str(out)), nprocs=world, start_method="spawn")
    return [torch.load(out / f"results.rank{r}.pt", weights_only=False) for r in range(world)]


def _child(rank: int, world: int, port: int, tasks: list, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from i2v.nn import parallel

    parallel.init_process_group(parallel.Launch.from_env())
    results = {name: WORKERS[name](Path(out), **kwargs) for name, kwargs in tasks}
    torch.save(results, Path(out) / f"results.rank{rank}.pt")
    torch.distributed.barrier()  # rank 0 hosts the group's store: it leaves last
    torch.distributed.destroy_process_group()


# ------------------------------------------------------------------------------------------------ inputs

def dit_inputs(case_dir: Path, step: int = 0, crop: int | None = None):
    """The case's DiT call at sampler step ``step`` as ONE batch of 2 (cond, uncond: classifier-free guidance's
    pair), optionally cropped to ``crop`` x ``crop`` latent pixels (a token count that N does not divide)."""
    from safetensors.torch import load_file

    from i2v.models.wan.dit import pad_context

    E = load_file(case_dir / "expected.safetensors")
    x = E[f"dit.step{step}.x"][None].expand(2, -1, -1, -1, -1)
    kw = {"context": torch.cat([pad_context(E["t5.prompt.out"]), pad_context(E["t5.neg.out"])])}
    if "cond.y" in E:
        kw["y"] = E["cond.y"][None].expand(2, -1, -1, -1, -1)
    if "clip.out" in E:
        kw["clip"] = E["clip.out"].reshape(1, -1, E["clip.out"].shape[-1]).expand(2, -1, -1)
    t = E[f"dit.step{step}.t"]
    if t.ndim == 2:  # TI2V records a timestep per token, 0 on latent frame 0
        kw.update(t=t.max().reshape(1).expand(2), clean_first_frame=True)
    else:
        kw["t"] = t.expand(2)
    if crop:
        x = x[..., :crop, :crop]
        if "y" in kw:
            kw["y"] = kw["y"][..., :crop, :crop]
    return x, kw


def t5_inputs():
    """Token ids (2, 24) with a padded second row."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 100, (2, 24), generator=g)
    mask = torch.ones(2, 24, dtype=torch.long)
    mask[1, 15:] = 0
    return ids * mask, mask


# ------------------------------------------------------------------------------------------------ workers

def wan_models(out: Path, cases: list[str]) -> dict:
    """For each Wan case: the DiT forward with Ulysses (even and odd token counts), FSDP2-loaded, both; the
    umT5 encoder FSDP2-loaded from the file and sharded after loading; the fractions each process holds."""
    from i2v.checkpoints import open_state_dict
    from i2v.models.encoders.t5 import Config as T5Config
    from i2v.models.encoders.t5 import T5Encoder
    from i2v.models.wan.dit import WanDiT
    from i2v.nn import parallel

    results = {}
    for case in map(Path, cases):
        r = {}
        x, kw = dit_inputs(case)
        x_odd, kw_odd = dit_inputs(case, crop=6)
        with torch.no_grad():
            dit = parallel.use_sequence_parallel(WanDiT.from_pretrained(case))
            r["sp"], r["sp_odd"] = dit(x, **kw), dit(x_odd, **kw_odd)
            sharded = WanDiT.from_pretrained(case, fsdp=True)
            r["fsdp"], r["fsdp_fraction"] = sharded(x, **kw), parallel.local_fraction(sharded)
            r["fsdp_sp"] = parallel.use_sequence_parallel(sharded)(x_odd, **kw_odd)
            if (case / T5_FILE).exists():
                ids, mask = t5_inputs()
                sd = open_state_dict(case / T5_FILE)
                t5 = parallel.load_model_sharded(T5Encoder, T5Config.from_state_dict(sd.shapes), sd,
                                                 dtype=torch.float32)
                r["t5"], r["t5_fraction"] = t5(ids, mask), parallel.local_fraction(t5)
                loaded = parallel.distribute(T5Encoder.from_pretrained(case / T5_FILE), fsdp=True, device="cpu")
                r["t5_shard"], r["t5_shard_fraction"] = loaded(ids, mask), parallel.local_fraction(loaded)
        results[case.name] = r
    return results


def train_steps(out: Path, overrides: list[str]) -> dict:
    """i2v.train.train on every process (rank 0 writes to train.out_dir); the loss history."""
    from i2v.train import load_config, train

    return {"loss": train(load_config("configs/builtin_unet.toml", overrides), progress=False)["loss"]}


def same_error_everywhere(out: Path, overrides: list[str]) -> dict:
    """Every process meets the same bad config inside parallel.launched(): which one shows the message? (Run it
    last: a failure inside launched() leaves the group as it is.)"""
    from i2v.errors import ConfigError
    from i2v.nn import parallel
    from i2v.train import load_config, train

    try:
        with parallel.launched():
            train(load_config("configs/builtin_unet.toml", overrides), progress=False)
    except ConfigError as e:
        return {"shown": str(e)}
    except SystemExit as e:
        return {"quiet_exit": e.code}
    return {}


def helpers(out: Path) -> dict:
    """The small collective helpers, as each process sees them."""
    from i2v.nn import parallel

    r = parallel.rank()
    return {"broadcast": parallel.broadcast(f"seed of rank {r}"), "on_main": parallel.on_main(lambda: f"rank {r}"),
            "any_rank": parallel.any_rank(r == 1, False), "mean": parallel.mean_over_ranks(float(r)),
            "is_main": parallel.is_main()}


WORKERS = {"helpers": helpers, "wan_models": wan_models, "train_steps": train_steps, "same_error_everywhere": same_error_everywhere}


# ------------------------------------------------------------------------------------------------ torchrun

def fail_train(argv: list[str]) -> int:
    """``i2v train`` in which process 1 raises when it draws its first batch."""
    import i2v.train
    from i2v.cli import main
    from i2v.errors import InputError

    if os.environ.get("RANK") == "1":
        def broken(*args, **kwargs):
            raise InputError(FAILURE)

        i2v.train.make_batch = broken
    return main(["train", *argv])


if __name__ == "__main__":
    if sys.argv[1] == "fail-train":
        sys.exit(fail_train(sys.argv[2:]))
    raise SystemExit(f"unknown mode {sys.argv[1]!r}")
