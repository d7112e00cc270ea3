import subprocess
import sys

from i2v.cli import main
from i2v.diffusion import SAMPLERS, SCHEDULES


def test_samplers_lists_every_name(capsys):
    assert main(["samplers"]) == 0
    out = capsys.readouterr().out
    for name in list(SAMPLERS) + list(SCHEDULES):
        assert f"  {name} " in out


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "i2v", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "samplers" in r.stdout
