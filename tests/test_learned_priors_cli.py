"""The learned motion priors where users meet them: `i2v flow --method raft`, `i2v interpolate --flow raft`, and the
Python functions they mirror, against RAFT run directly (tests/test_raft.py checks RAFT itself against the
original code)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from conftest import shared_path
from i2v.cli import main
from i2v.motion.flow import estimate_flow, read_flo


@pytest.fixture(scope="module")
def raft_case():
    case = shared_path("reference", "raft-small")
    e = load_file(str(case / "expected.safetensors"))
    a, b = (e[f"inputs.image{i}"][0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy() for i in (1, 2))
    return case / "raft.pth", a, b


def test_cli_flow_raft_writes_what_raft_estimates(tmp_path, raft_case):
    from i2v.models.raft.raft import RAFT, estimate

    ckpt, a, b = raft_case
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    code = main(["flow", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "f.flo"),
                 "--method", "raft", "--checkpoint", str(ckpt), "--iters", "3", "--threads", "1"])
    assert code == 0
    want = estimate(RAFT.from_pretrained(ckpt), a, b, iters=3)
    np.testing.assert_allclose(read_flo(tmp_path / "f.flo"), want, atol=1e-4)
    np.testing.assert_allclose(estimate_flow(a, b, "raft", checkpoint=ckpt, iters=3), want, atol=1e-4)


@pytest.mark.parametrize("argv, words", [
    (["--method", "raft"], "needs --checkpoint"),
    (["--method", "dis", "--checkpoint", "x.pth"], "needs no weights"),
    (["--method", "raft", "--checkpoint", "CKPT", "--iters", "0"], "--iters must be >= 1"),
])
def test_cli_flow_option_errors(tmp_path, raft_case, capsys, argv, words):
    ckpt, a, b = raft_case
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    argv = [str(ckpt) if x == "CKPT" else x for x in argv]
    assert main(["flow", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "f.flo"), *argv]) == 1
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and not (tmp_path / "f.flo").exists()


def test_cli_interpolate_with_raft_flows(tmp_path, raft_case):
    from i2v.interpolate import interpolate_frames

    ckpt, a, b = raft_case
    (tmp_path / "in").mkdir()
    for i, f in enumerate((a, b)):
        Image.fromarray(f).save(tmp_path / "in" / f"{i}.png")
    code = main(["interpolate", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--factor", "2",
                 "--flow", "raft", "--flow-checkpoint", str(ckpt), "--flow-iters", "2", "--threads", "1"])
    assert code == 0
    got = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "out").iterdir())])
    want = interpolate_frames(np.stack([a, b]), 2, flow="raft", flow_checkpoint=ckpt, flow_iters=2, progress=False)
    assert got.shape == (3, *a.shape) and np.array_equal(got, want)
    dis = interpolate_frames(np.stack([a, b]), 2, progress=False)
    assert not np.array_equal(dis[1], want[1])  # the flow really came from RAFT
