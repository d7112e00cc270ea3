"""`i2v animate` is one command for two models: the built-in one (default) and SVD (--checkpoint).
Options of one model given to the other are refused before any work, naming the options."""

from pathlib import Path

from i2v.cli import main

EXAMPLE = str(Path(__file__).resolve().parents[1] / "i2v" / "assets" / "example.png")


def test_svd_only_option_without_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert main(["animate", EXAMPLE, "--motion-bucket-id", "3", "--fps-id", "5", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--fps-id" in err and "--motion-bucket-id" in err and "--checkpoint" in err and "them" in err
    assert not out.exists()


def test_builtin_only_option_with_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "o.mp4"
    ckpt = tmp_path / "svd.safetensors"  # never opened: the options are checked first
    assert main(["animate", EXAMPLE, "--checkpoint", str(ckpt), "--backbone", "dit", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--backbone" in err and "built-in" in err and "drop it" in err
    assert not out.exists()


def test_svd_path_gets_svd_defaults(tmp_path, capsys, shared):
    """With --checkpoint the SVD defaults apply (euler, 7 fps) although the parser leaves them unset."""
    case = shared / "reference" / "svd-sgm-tiny"
    out = tmp_path / "frames"
    assert main(["animate", EXAMPLE, "--checkpoint", str(case / "checkpoint.safetensors"),
                 "--unet-head-channels", "16", "--clip-head-width", "32", "--frames", "2", "--steps", "1",
                 "--seed", "0", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "euler" in text and "at 7 fps" in text
    assert len(list(out.glob("*.png"))) == 2
