"""Start-up stays light: the command line, `i2v --help`, `i2v samplers`, `i2v inspect` on a safetensors file and
`i2v flow` with a classical method never import torch (each would otherwise pay ~2 s before doing anything)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

PROBE = """
import sys
from i2v.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print("TORCH", "torch" in sys.modules, file=sys.stderr)
sys.exit(code or 0)
"""


def run_cli(*argv):
    r = subprocess.run([sys.executable, "-c", PROBE, *map(str, argv)], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    return r.returncode, r.stdout, r.stderr


def test_importing_the_cli_does_not_import_torch():
    r = subprocess.run([sys.executable, "-c", "import sys, i2v.cli, i2v, i2v.registry; print('torch' in sys.modules)"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


@pytest.mark.parametrize("argv", [["--help"], ["samplers"], ["camera", "--help"], ["animate", "--help"],
                                  ["inspect", "weights/builtin_unet.safetensors"]])
def test_light_commands_run_without_torch(argv):
    code, out, err = run_cli(*argv)
    assert code == 0, err
    assert "TORCH False" in err


def test_classical_flow_runs_without_torch(tmp_path):
    rng = np.random.default_rng(0)
    a = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(np.roll(a, 2, axis=1)).save(tmp_path / "b.png")
    code, out, err = run_cli("flow", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "f.flo", "--threads", "1")
    assert code == 0, err
    assert "TORCH False" in err and (tmp_path / "f.flo").is_file()


def test_the_catalog_names_every_sampler_and_schedule():
    from i2v.diffusion import catalog, samplers, schedules

    assert list(catalog.SAMPLERS) == list(samplers.SAMPLERS)
    assert list(catalog.SCHEDULES) == list(schedules.SCHEDULES)
