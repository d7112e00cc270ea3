"""A built wheel carries the built-in weights, and an installed (non-editable) i2v finds them."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ["builtin_unet.safetensors", "builtin_dit.safetensors"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(ROOT)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"could not build a wheel here (pip wheel failed: {r.stderr.strip()[-300:]})")
    (whl,) = out.glob("i2v-*.whl")
    return whl


def test_wheel_ships_the_weights_byte_for_byte(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        for w in WEIGHTS:
            (member,) = [n for n in names if n.endswith(f".data/data/share/i2v/weights/{w}")]
            assert z.read(member) == (ROOT / "weights" / w).read_bytes()
        assert any(n == "i2v/assets/example.png" for n in names)


def test_installed_package_loads_weights_from_prefix(wheel, tmp_path):
    """Unpack the wheel the way pip lays it out (package in site-packages, data under the prefix), then load
    the built-in model from there in a fresh interpreter that cannot see the repository checkout."""
    site, prefix = tmp_path / "site", tmp_path / "prefix"
    with zipfile.ZipFile(wheel) as z:
        for n in z.namelist():
            if n.startswith("i2v/"):
                z.extract(n, site)
            elif ".data/data/" in n:
                target = prefix / n.split(".data/data/", 1)[1]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(n))
    import torch  # noqa: F401  (its site-packages folder goes on the path after the unpacked wheel)
    deps = str(Path(torch.__file__).parents[1])
    code = ("import sys; sys.prefix = sys.argv[1]; import i2v.pipelines.builtin as b; "
            "assert b.__file__.startswith(sys.argv[2]), b.__file__; "
            "p = b.BuiltinPipeline.load('dit'); print(b.weights_dir(), p.backbone)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), deps])}
    env.pop("I2V_WEIGHTS", None)
    # -S: no site processing, so the development checkout's editable-install hook is not loaded
    r = subprocess.run([sys.executable, "-S", "-c", code, str(prefix), str(site)], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    where, backbone = r.stdout.split()
    assert Path(where) == prefix / "share" / "i2v" / "weights" and backbone == "dit"
