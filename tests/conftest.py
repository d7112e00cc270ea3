"""Shared test helpers. Reference data lives in ../shared beside the repository (present in CI, absent in a
user's fresh clone); tests that need it use the ``shared`` fixture and skip with a clear reason without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("I2V_SHARED", ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path inside ../shared, or skip the calling test with the reason."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs the reference data {p} (../shared beside the repository; absent in a fresh clone)")
    return p


def case_dirs(prefix: str, env_var: str) -> list[Path]:
    """Every directory in ../shared/reference whose name starts with ``prefix``, plus the directories listed
    in the environment variable ``env_var`` (os.pathsep-separated). Used to parametrize golden tests."""
    found = sorted(p for p in (SHARED / "reference").glob(f"{prefix}*") if p.is_dir()) if SHARED.exists() else []
    extra = [Path(p) for p in os.environ.get(env_var, "").split(os.pathsep) if p]
    return found + extra


@pytest.fixture
def shared():
    if not SHARED.exists():
        pytest.skip(f"needs the reference data in {SHARED} (../shared beside the repository; absent in a fresh clone)")
    return SHARED


@pytest.fixture(autouse=True)
def one_thread():
    """Tests use small tensors: with several OpenMP threads (and other work on a 2-core machine) torch spends far
    longer spin-waiting than computing, so each test runs on one thread and restores the setting afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_tutorial(script: str, out_dir: Path, figures: tuple[str, ...]) -> str:
    """Run tutorials/<script> as plain Python with the small CI settings, check that it drew each figure
    (a real image, not an empty file) into ``out_dir``, and return what it printed."""
    import subprocess
    import sys

    from PIL import Image

    env = dict(os.environ, I2V_TUTORIAL_SMALL="1", I2V_TUTORIAL_OUT=str(out_dir), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "tutorials" / script)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in figures:
        with Image.open(out_dir / name) as im:
            assert im.width > 100 and im.height > 50, name
    return r.stdout


def pytest_collection_modifyitems(items):
    """A golden test parametrized over case directories has nothing to run without ../shared; pytest would say only
    "got empty parameter set". Say what is missing instead."""
    for item in items:
        for mark in item.iter_markers("skip"):
            if "empty parameter set" in str(mark.kwargs.get("reason", "")):
                item.add_marker(pytest.mark.skip(reason=f"needs the reference cases in {SHARED / 'reference'} "
                                                        "(../shared beside the repository; absent in a fresh clone)"),
                                append=False)
                break
