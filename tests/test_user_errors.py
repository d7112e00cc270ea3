"""What a new user meets when something is wrong: one line, non-zero exit, no traceback, nothing left behind, and
outputs with the permissions the umask says (issue: "every error a clean one"). Each case runs the CLI as a user
would, in a subprocess where signals or exit codes matter, else through main([...])."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from i2v.cli import main


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    img = np.asarray(Image.fromarray((rng.random((12, 16, 3)) * 255).astype(np.uint8)).resize((64, 48)))
    path = tmp_path / "photo.png"
    Image.fromarray(img).save(path)
    return path


@pytest.fixture
def clip(tmp_path, photo):
    folder = tmp_path / "clip"
    folder.mkdir()
    img = np.asarray(Image.open(photo))
    for k in range(3):
        Image.fromarray(np.roll(img, k, axis=1)).save(folder / f"{k}.png")
    return folder


def one_line_error(capsys, code, *words):
    err = capsys.readouterr().err
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("i2v ") and ": error: " in lines[0], err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def leftovers(folder):
    return [p.name for p in folder.rglob("*") if p.name.startswith(".")]


# ------------------------------------------------------------------------------ outputs

def test_unwritable_output_folder_is_refused_before_any_work(tmp_path, photo, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root): a read-only folder cannot be simulated")
        code = main(["camera", str(photo), "--frames", "2", "-o", str(locked / "out.mp4")])
        one_line_error(capsys, code, "not writable")
        code = main(["eval", "--backbone", "none", "--clips-per-class", "1", "--json", str(locked / "r.json")])
        one_line_error(capsys, code, "not writable")
    finally:
        locked.chmod(0o700)


def test_an_output_under_a_file_is_refused(tmp_path, photo, capsys):
    (tmp_path / "afile").write_text("x")
    code = main(["camera", str(photo), "--frames", "2", "-o", str(tmp_path / "afile" / "out.mp4")])
    one_line_error(capsys, code, "is a file, not a folder")


def test_a_full_disk_is_refused_before_any_work(tmp_path, photo, capsys, monkeypatch):
    import shutil

    from i2v import outputs

    real = shutil.disk_usage
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: real(p)._replace(free=1024))
    code = main(["camera", str(photo), "--frames", "2", "-o", str(tmp_path / "out.mp4")])
    one_line_error(capsys, code, "free")
    assert not (tmp_path / "out.mp4").exists()


def test_codec_that_cannot_go_in_the_container(tmp_path, photo, capsys):
    code = main(["camera", str(photo), "--frames", "2", "--codec", "h264", "-o", str(tmp_path / "out.webm")])
    line = one_line_error(capsys, code, "h264", ".webm", "vp9")
    assert "ffmpeg" not in line and not leftovers(tmp_path)


def test_unknown_suffix_names_the_same_list_as_help_and_readme(tmp_path, photo, capsys):
    from i2v.video import FORMATS, formats_text

    code = main(["camera", str(photo), "--frames", "2", "-o", str(tmp_path / "out.xyz")])
    line = one_line_error(capsys, code, ".xyz")
    assert formats_text() in line
    readme = (ROOT / "README.md").read_text()
    for suffix in FORMATS:
        if suffix:
            assert suffix in line and f"`{suffix}`" in readme, suffix
    with pytest.raises(SystemExit):
        main(["camera", "--help"])
    assert formats_text().split(",")[0] in " ".join(capsys.readouterr().out.split())


def test_outputs_get_the_umask_permissions(tmp_path, photo):
    old = os.umask(0o022)
    try:
        assert main(["camera", str(photo), "--frames", "2", "-o", str(tmp_path / "v.gif")]) == 0
        assert main(["camera", str(photo), "--frames", "2", "-o", str(tmp_path / "frames")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "v.gif").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "frames").stat().st_mode) == 0o755
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in (tmp_path / "frames").iterdir())


def test_the_second_of_two_runs_writing_one_new_output_refuses(tmp_path):
    from i2v.errors import OutputExistsError
    from i2v.outputs import atomic

    target = tmp_path / "same.mp4"
    with pytest.raises(OutputExistsError, match="created by someone else"):
        with atomic(target) as mine:  # both runs checked that same.mp4 did not exist, then started writing
            mine.write_bytes(b"second run")
            target.write_bytes(b"first run")  # the other run finishes first and publishes
    assert target.read_bytes() == b"first run" and not leftovers(tmp_path)  # its output survives, ours is gone


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_writing_leaves_no_temporary(tmp_path, sig, code):
    """The writer is stopped while frames are being written; the hidden temporary folder must go."""
    # a background job (e.g. a CI runner started with `&`) inherits SIGINT ignored and Python keeps it so; a user
    # at a terminal has the default handler, which the child restores first
    script = (f"import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              f"import sys, time; sys.argv = ['i2v']; from i2v import video; import numpy as np; "
              f"from PIL import Image; save = Image.Image.save\n"
              f"def slow(self, *a, **k):\n    save(self, *a, **k); print('writing', flush=True); time.sleep(0.3)\n"
              f"Image.Image.save = slow\n"
              f"from i2v.cli import main\nsys.exit(main(['camera', '{tmp_path / 'photo.png'}', '--frames', '20', "
              f"'-o', '{tmp_path / 'out'}']))")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "photo.png")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    while proc.stdout.readline().strip() != "writing":  # notes come first
        pass
    time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and "Traceback" not in err and "nothing half-written" in err, err
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_flow_checks_every_output_before_writing_any(tmp_path, photo, capsys):
    code = main(["flow", str(photo), str(photo), "-o", str(tmp_path / "f.flo"), "--viz", str(tmp_path / "v.jpg")])
    one_line_error(capsys, code, "--viz")
    code = main(["flow", str(photo), str(photo), "-o", str(tmp_path / "f.flo"), "--gt", str(tmp_path / "none.flo")])
    one_line_error(capsys, code, "none.flo")
    assert not (tmp_path / "f.flo").exists()


# ------------------------------------------------------------------------------ inputs and values

@pytest.mark.parametrize("argv, words", [
    (["flow", "TINY", "TINY", "-o", "OUT/f.flo"], ("too small", "12 px")),
    (["camera", "TINY", "-o", "OUT/c.mp4"], ("1x1", "8 px")),
    (["cinemagraph", "TINY", "--motion", "BRUSH", "-o", "OUT/c.mp4"], ("1x1",)),
])
def test_images_too_small_for_the_method(tmp_path, capsys, argv, words):
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "tiny.png")
    (tmp_path / "brush.json").write_text('{"regions": [{"box": [0, 0, 1, 1], "direction": 0, "speed": 1}]}')
    sub = {"TINY": str(tmp_path / "tiny.png"), "BRUSH": str(tmp_path / "brush.json")}
    argv = [sub.get(a, a.replace("OUT", str(tmp_path))) for a in argv]
    one_line_error(capsys, main(argv), *words)
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("command", ["camera", "cinemagraph", "interpolate"])
@pytest.mark.parametrize("device, words", [("banana", ("--device", "banana")), ("cuda", ("--device", "cpu"))])
def test_devices_are_checked_first(tmp_path, photo, clip, capsys, command, device, words):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "brush.json").write_text('{"regions": [{"box": [0, 0, 8, 8], "direction": 0, "speed": 1}]}')
    argv = {"camera": ["camera", str(photo), "--frames", "2"],
            "cinemagraph": ["cinemagraph", str(photo), "--motion", str(tmp_path / "brush.json"), "--frames", "2"],
            "interpolate": ["interpolate", str(clip)]}[command]
    one_line_error(capsys, main([*argv, "--device", device, "-o", str(tmp_path / "out.mp4")]), *words)


@pytest.mark.parametrize("argv, words", [
    (["camera", "PHOTO", "--frames", "100000", "-o", "OUT"], ("--frames", "2000")),
    (["cinemagraph", "PHOTO", "--motion", "BRUSH", "--frames", "100000", "-o", "OUT"], ("--frames",)),
    (["camera", "PHOTO", "--interpolate", "1000", "-o", "OUT"], ("--interpolate",)),
    (["camera", "PHOTO", "--depth-scale", "0", "-o", "OUT"], ("--depth-scale", "> 0")),
    (["camera", "PHOTO", "--amount", "1000", "-o", "OUT"], ("--amount",)),
    (["camera", "PHOTO", "--fps", "0", "-o", "OUT"], ("--fps", "> 0")),
    (["cinemagraph", "PHOTO", "--motion", "BRUSH", "--speed", "0", "-o", "OUT"], ("--speed",)),
    (["cinemagraph", "PHOTO", "--motion", "BRUSH", "--speed", "-1", "-o", "OUT"], ("--speed",)),
    (["cinemagraph", "PHOTO", "--motion", "BRUSH", "--speed", "nan", "-o", "OUT"], ("--speed",)),
    (["interpolate", "CLIP", "--input-fps", "0", "-o", "OUT"], ("--input-fps",)),
    (["interpolate", "CLIP", "--duplicate-threshold", "-1", "-o", "OUT"], ("--duplicate-threshold",)),
    (["interpolate", "CLIP", "--fps", "4", "--input-fps", "8", "-o", "OUT"], ("--fps 4", "not above")),
    (["interpolate", "CLIP", "--fps", "0", "-o", "OUT"], ("--fps", "> 0")),
    (["interpolate", "CLIP", "--factor", "100000", "-o", "OUT"], ("--factor",)),
    (["animate", "PHOTO", "--sampler", "flow_unipc", "-o", "OUT"], ("flow_unipc", "flow-matching", "euler")),
    (["eval", "--threads", "0"], ("--threads",)),
    (["eval", "--merge", "MISSING"], ("--merge", "no such file")),
    (["eval", "--merge", "NOTJSON"], ("--merge", "not a report")),
])
def test_values_out_of_range_name_the_flag(tmp_path, photo, clip, capsys, argv, words):
    (tmp_path / "brush.json").write_text('{"regions": [{"box": [0, 0, 8, 8], "direction": 0, "speed": 1}]}')
    (tmp_path / "notes.json").write_text("these are notes, not JSON")
    sub = {"PHOTO": str(photo), "CLIP": str(clip), "BRUSH": str(tmp_path / "brush.json"), "OUT": str(tmp_path / "o.mp4"),
           "MISSING": str(tmp_path / "missing.json"), "NOTJSON": str(tmp_path / "notes.json")}
    one_line_error(capsys, main([sub.get(a, a) for a in argv]), *words)
    assert not (tmp_path / "o.mp4").exists()


def test_camera_refuses_frames_that_would_not_fit_in_memory(tmp_path, capsys, monkeypatch):
    from i2v import runtime

    monkeypatch.setattr(runtime, "available_memory", lambda: 2 * 2**30)  # as if 2 GiB were free
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((4000, 6000, 3), np.uint8)).save(path)
    line = one_line_error(capsys, main(["camera", str(path), "--frames", "48", "-o", str(tmp_path / "o.mp4")]),
                          "GiB", "--frames")
    assert "6000x4000" in line
