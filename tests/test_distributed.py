"""Distributed runs (i2v.nn.parallel) on CPU with gloo and 2 processes, against one process and the references.

- Ulysses sequence parallelism: the 2-process Wan DiT forward (a CFG batch of 2) equals the one-process forward
  to 1e-5 and every case's recorded ``dit.step0.{cond,uncond}.out`` of the original code to 1e-4; also with 27
  tokens (not divisible by 2), and combined with FSDP2.
- FSDP2: the DiT loaded shard by shard (``from_pretrained(fsdp=True)``) and the umT5 encoder (loaded sharded
  from its file, and sharded after loading) give the one-process outputs to 1e-6; each process holds half of
  the parameter entries (0.5 exactly here: every tensor splits along an axis of even length).
- DDP training: two processes of b = 2 clips give the gradients of one process with 2b (after one AdamW step
  the first moment is (1 - beta1) g: compared to 1e-6); a run of 3 steps on 2 processes (torchrun, the CLI)
  resumed on 1 process continues the one-process loss curve; only rank 0 prints.
- Failures: a process that raises ends the torchrun launch non-zero with its message shown once and no
  checkpoint or model written; a bad config that every process meets is shown once; the option checks.

The spawned processes and torchrun launches cost a few seconds each (importing torch), so one spawn computes
every model check (module fixture) and the tests read its results.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, case_dirs
from distributed_workers import FAILURE, T5_FILE, dit_inputs, spawn, t5_inputs
from i2v.errors import ConfigError
from i2v.nn import parallel

CASES = case_dirs("wan", "I2V_WAN_CASES")
needs_cases = pytest.mark.skipif(not CASES, reason="needs ../shared/reference/wan* (absent in a fresh clone)")
TINY = ["train.batch_size=4", "data.frames=4", "data.size=32", "unet.channels=[16, 32]",
        "unet.spatial_attention=[false, false]", "train.bf16=false", "train.lr=2e-3", "train.warmup=5",
        "train.log_every=1", "train.checkpoint_every=1000"]
NO_CLIP = "train.grad_clip=1e9"  # the DDP check compares raw gradients


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Every 2-process check in one spawn (each start-up costs seconds): per rank {task: results}."""
    out = tmp_path_factory.mktemp("two")
    tasks = [("helpers", {}), ("train_steps", {"overrides": [*TINY, "train.steps=1", f"train.out_dir='{out / 'ddp'}'", NO_CLIP]}),
             ("same_error_everywhere", {"overrides": [*TINY, "train.batch_size=3", f"train.out_dir='{out / 'bad'}'"]})]
    if CASES:
        tasks.insert(0, ("wan_models", {"cases": [str(c) for c in CASES]}))
    return out, spawn(tasks, out)


@pytest.fixture(scope="module")
def one_process():
    """The same calls in this process, unsharded: the reference."""
    from i2v.models.encoders.t5 import T5Encoder
    from i2v.models.wan.dit import WanDiT

    refs = {}
    for case in CASES:
        dit = WanDiT.from_pretrained(case)
        (x, kw), (x_odd, kw_odd) = dit_inputs(case), dit_inputs(case, crop=6)
        with torch.no_grad():
            r = {"out": dit(x, **kw), "odd": dit(x_odd, **kw_odd)}
            if (case / T5_FILE).exists():
                r["t5"] = T5Encoder.from_pretrained(case / T5_FILE)(*t5_inputs())
        refs[case.name] = r
    return refs


@needs_cases
@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_ulysses_equals_one_process_and_the_original(case, two_processes, one_process):
    ref, golden = one_process[case.name], load_file(case / "expected.safetensors")
    assert ref["odd"].shape[2:] == (3, 6, 6)  # 3 x 3 x 3 = 27 tokens after the 1x2x2 patches: padded to 28
    for r in two_processes[1]:  # both processes return the whole output
        got = r["wan_models"][case.name]
        assert rel(got["sp"], ref["out"]) <= 1e-5
        assert rel(got["sp_odd"], ref["odd"]) <= 1e-5
        assert rel(got["fsdp_sp"], ref["odd"]) <= 1e-5
        for row, branch in enumerate(("cond", "uncond")):
            assert rel(got["sp"][row], golden[f"dit.step0.{branch}.out"]) <= 1e-4


@needs_cases
@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_fsdp_dit_and_umt5_equal_one_process_holding_half_each(case, two_processes, one_process):
    ref = one_process[case.name]
    for r in two_processes[1]:
        got = r["wan_models"][case.name]
        assert rel(got["fsdp"], ref["out"]) <= 1e-6
        assert got["fsdp_fraction"] == pytest.approx(0.5, abs=0.02)
        if "t5" in ref:
            assert rel(got["t5"], ref["t5"]) <= 1e-6 and rel(got["t5_shard"], ref["t5"]) <= 1e-6
            assert got["t5_fraction"] == pytest.approx(0.5, abs=0.02)
            assert got["t5_shard_fraction"] == pytest.approx(0.5, abs=0.02)


# --------------------------------------------------------------------------------------------- training

def _train_here(out, steps, *extra, resume=False):
    from i2v.train import load_config, train

    cfg = load_config("configs/builtin_unet.toml", [*TINY, f"train.steps={steps}", f"train.out_dir='{out}'", *extra])
    return train(cfg, resume=resume, progress=False, log=lambda *a: None)


def test_ddp_gradients_of_two_processes_equal_one_process_with_the_whole_batch(two_processes, tmp_path):
    """train.batch_size = 4: 2 processes of 2 clips vs 1 process of 4, one step, no clipping; AdamW's first
    moment after step 1 is (1 - beta1) g, so the checkpoints hold the gradients (rank 0 wrote the 2-process one)."""
    out, results = two_processes
    one = _train_here(tmp_path / "one", 1, NO_CLIP)
    a = load_file(tmp_path / "one" / "checkpoint.safetensors")
    b = load_file(out / "ddp" / "checkpoint.safetensors")
    assert a.keys() == b.keys()
    moments = [k for k in a if k.endswith(".exp_avg")]
    zero = [k for k in moments if not a[k].any()]  # zero-initialised output layers get no gradient at step 1
    assert len(moments) - len(zero) > 10 and all(not b[k].any() for k in zero)
    errors = {k: rel(b[k], a[k]) for k in moments if k not in zero}
    assert max(errors.values()) <= 1e-6, max(errors.items(), key=lambda kv: kv[1])
    for r in results:  # each process logs the whole batch's loss (the mean of the shares' means)
        assert [s for s, _ in r["train_steps"]["loss"]] == [1]
        assert r["train_steps"]["loss"][0][1] == pytest.approx(one["loss"][0][1], rel=1e-6)
    assert float((out / "ddp" / "log.txt").read_text().split()[3]) == pytest.approx(one["loss"][0][1], abs=1e-5)


def _torchrun(*args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_process_run_resumed_on_one_continues_the_loss_curve(tmp_path):
    run = tmp_path / "run"
    r = _torchrun("-m", "i2v", "train", "--config", "configs/builtin_unet.toml", "--threads", "1",
                  *[a for s in [*TINY, "train.steps=3", f"train.out_dir='{run}'"] for a in ("--set", s)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("training unet") == 1 and r.stdout.count("done: step 3") == 1  # rank 0 alone prints
    assert "2 processes of 2 clips" in r.stdout and r.stderr.count("0/3") == 1  # one progress bar
    straight = _train_here(tmp_path / "straight", 6)
    two = [float(line.split()[3]) for line in (run / "log.txt").read_text().splitlines()]
    resumed = _train_here(run, 6, resume=True)  # the same checkpoint, now one process of 4 clips
    assert [s for s, _ in resumed["loss"]] == [4, 5, 6]
    curve = two + [v for _, v in resumed["loss"]]
    assert curve == pytest.approx([v for _, v in straight["loss"]], rel=1e-4, abs=1e-5)


def test_a_failing_process_ends_the_launch_with_its_message_once_and_no_output(tmp_path):
    run = tmp_path / "run"
    r = _torchrun(str(ROOT / "tests" / "distributed_workers.py"), "fail-train", "--config",
                  "configs/builtin_unet.toml", "--threads", "1",
                  *[a for s in [*TINY, "train.steps=50", f"train.out_dir='{run}'"] for a in ("--set", s)])
    assert r.returncode != 0
    both = r.stdout + r.stderr
    assert both.count(f"i2v train: error: {FAILURE}") == 1, both[-3000:]
    frames = [line for line in both.splitlines() if line.lstrip().startswith("File ")]
    assert not [f for f in frames if "i2v" in f], frames  # no process printed a traceback (torchrun's own summary may)
    left = sorted(p.name for p in run.iterdir()) if run.exists() else []
    assert not [n for n in left if n.endswith(".safetensors") or n.startswith(".")], left


def test_a_bad_config_every_process_meets_is_shown_once(two_processes):
    out, results = two_processes
    outcomes = [r["same_error_everywhere"] for r in results]
    shown = [o["shown"] for o in outcomes if "shown" in o]
    assert len(shown) == 1 and "train.batch_size = 3 clips per step do not split over 2 processes" in shown[0]
    assert [o.get("quiet_exit") for o in outcomes if "shown" not in o] == [1]
    assert not (out / "bad").exists()


def test_the_collective_helpers(two_processes):
    got = [r["helpers"] for r in two_processes[1]]
    assert [g["broadcast"] for g in got] == ["seed of rank 0"] * 2  # rank 0's value everywhere
    assert [g["on_main"] for g in got] == ["rank 0", None] and [g["is_main"] for g in got] == [True, False]
    assert [g["any_rank"] for g in got] == [(True, False)] * 2 and [g["mean"] for g in got] == [0.5, 0.5]


# --------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("world,options,message", [
    (1, {"sequence_parallel": 2}, "--sequence-parallel 2 splits the work over several processes, but this is a "
                                  "single process: launch it with `torchrun --nproc-per-node 2 -m i2v animate ...`"),
    (1, {"fsdp": ("dit", "text")}, "--fsdp dit,text splits the work over several processes, but this is a single "
                                   "process"),
    (2, {"sequence_parallel": 4}, "--sequence-parallel 4 is larger than the 2 processes torchrun started"),
    (4, {"sequence_parallel": 2}, "one video is split over all of them; use --sequence-parallel 4"),
    (4, {"sequence_parallel": 4, "heads": 6}, "--sequence-parallel 4 must divide the model's 6 attention heads "
                                              "(each process attends with heads / 4); use one of 1, 2, 3, 6"),
    (2, {"sequence_parallel": 0}, "--sequence-parallel must be >= 1, got 0"),
])
def test_options_that_cannot_work_are_one_line_errors(world, options, message):
    with pytest.raises(ConfigError) as e:
        parallel.check_options(world, **options)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_good_options_pass_and_fsdp_parts_are_checked():
    parallel.check_options(1)
    parallel.check_options(8, sequence_parallel=8, fsdp=("dit", "text"), heads=40)
    parallel.check_options(2, fsdp=("dit",))
    assert parallel.parse_fsdp("dit, text") == ("dit", "text") and parallel.parse_fsdp(None) == ()
    with pytest.raises(ConfigError, match="--fsdp dit,vae: vae is not a part i2v shards; give a comma-separated "
                                          "list of dit, text"):
        parallel.parse_fsdp("dit,vae")


def test_the_environment_of_one_process_and_of_torchrun():
    assert parallel.Launch.from_env({}) == parallel.Launch()  # no torchrun: rank 0 of 1
    launch = parallel.Launch.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (launch.rank, launch.world_size, launch.local_rank, launch.distributed, launch.main) == (3, 4, 1, True, False)
    assert launch.device("cpu") == torch.device("cpu") and launch.cpu_threads() >= 1
    with pytest.raises(ConfigError, match="RANK=4 is outside WORLD_SIZE=4"):
        parallel.Launch.from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ConfigError, match="must be integers"):
        parallel.Launch.from_env({"RANK": "x", "WORLD_SIZE": "4"})
    with parallel.launched() as one:  # this test process: nothing happens
        assert one == parallel.Launch() and not torch.distributed.is_initialized()


# ------------------------------------------------------------------------------------------ the Wan command line

def test_torchrun_animate_with_sequence_parallel_writes_the_single_process_frames(tmp_path):
    """`torchrun --nproc-per-node 2 -m i2v animate <image> --checkpoint <wan21-i2v-tiny> --sequence-parallel 2
    --fsdp dit,text` writes the frames one process writes (within 1 level on >= 99.9% of values), once."""
    import json

    import numpy as np
    from PIL import Image

    from conftest import SHARED, shared_path
    from i2v.cli import main

    case = shared_path("reference", "wan21-i2v-tiny")
    cfg = json.loads((case / "case.json").read_text())
    st, clip = cfg["settings"], cfg["config"]["clip"]
    common = ["animate", str(SHARED / "data" / st["image"]), "--checkpoint", str(case), "--prompt", st["prompt"],
              "--frames", str(st["frame_num"]), "--steps", "2", "--seed", str(st["seed"]), "--size",
              f"{st['max_area']}x1", "--clip-head-width", str(clip["vision_dim"] // clip["vision_heads"]),
              "--device", "cpu"]
    assert main([*common, "--threads", "1", "-o", str(tmp_path / "one")]) == 0
    r = _torchrun("-m", "i2v", *common, "--sequence-parallel", "2", "--fsdp", "dit,text", "--threads", "1",
                  "-o", str(tmp_path / "two"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("wrote ") == 1  # rank 0 alone writes and prints

    def frames(folder):
        return np.stack([np.asarray(Image.open(p)).astype(int) for p in sorted(folder.glob("*.png"))])

    one, two = frames(tmp_path / "one"), frames(tmp_path / "two")
    assert one.shape == two.shape and len(one) == st["frame_num"]
    diff = np.abs(one - two)
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_distributed_wan_options_need_torchrun(capsys, tmp_path):
    from conftest import shared_path
    from i2v.cli import main

    case = shared_path("reference", "wan21-i2v-tiny")
    img = tmp_path / "a.png"
    __import__("PIL.Image", fromlist=["Image"]).fromarray(__import__("numpy").zeros((48, 64, 3), "uint8")).save(img)
    assert main(["animate", str(img), "--checkpoint", str(case), "--sequence-parallel", "2", "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "torchrun --nproc-per-node 2" in err and err.count("\n") == 1 and not (tmp_path / "o").exists()
