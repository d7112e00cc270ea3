"""Training keeps the user's work: --resume without a checkpoint is an error, an interrupted run writes a checkpoint
before it exits (and resumes from it), and train.init / --resume with a code-running pickle or a truncated file give
the loader's one-line message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from conftest import ROOT
from i2v.cli import main

SMALL = ["--set", "data.frames=4", "--set", "data.size=32", "--set", "unet.channels=[16, 32]",
         "--set", "unet.spatial_attention=[false, false]", "--set", "train.bf16=false", "--set", "train.log_every=1"]


def test_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    code = main(["train", "--config", "configs/builtin_unet.toml", "--resume", "--set",
                 f"train.out_dir='{tmp_path / 'run'}'", *SMALL])
    err = capsys.readouterr().err
    assert code == 1 and "no" in err and "checkpoint.safetensors" in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "log.txt").exists()


def test_an_interrupted_run_saves_a_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "i2v", "train", "--config", "configs/builtin_unet.toml", "--threads", "1",
           "--set", "train.steps=100000", "--set", f"train.out_dir='{out}'", *SMALL]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "log.txt").exists() and "step 2 " in (out / "log.txt").read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-1000:]
    from safetensors import safe_open

    with safe_open(str(out / "checkpoint.safetensors"), "pt") as f:
        saved = int(f.metadata()["step"])
    assert saved >= 2 and (out / "model.safetensors").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
    code = main(["train", "--config", "configs/builtin_unet.toml", "--resume", "--set", f"train.steps={saved + 1}",
                 "--set", f"train.out_dir='{out}'", *SMALL])
    assert code == 0
    with safe_open(str(out / "checkpoint.safetensors"), "pt") as f:
        assert int(f.metadata()["step"]) == saved + 1


class _RunsCode:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.target}",))


def test_init_and_resume_refuse_bad_files_cleanly(tmp_path, capsys):
    sentinel = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(2), "x": _RunsCode(sentinel)}, evil)
    code = main(["train", "--config", "configs/builtin_unet.toml", "--set", f"train.init='{evil}'",
                 "--set", f"train.out_dir='{tmp_path / 'a'}'", *SMALL])
    err = capsys.readouterr().err
    assert code == 1 and "refused" in err and err.count("\n") == 1 and not sentinel.exists()
    run = tmp_path / "b"
    run.mkdir()
    (run / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1")  # truncated
    code = main(["train", "--config", "configs/builtin_unet.toml", "--resume", "--set", f"train.out_dir='{run}'", *SMALL])
    err = capsys.readouterr().err
    assert code == 1 and "checkpoint.safetensors" in err and err.count("\n") == 1
