"""Runs tutorials/03_flow_and_warping.py in small settings (a subprocess, as a user would) and checks its figures."""

from conftest import run_tutorial


def test_tutorial_runs_small_and_draws_its_figures(tmp_path):
    out = run_tutorial("03_flow_and_warping.py", tmp_path, ("03_flow_wheel.png", "03_occlusion_masks.png", "03_splatting.png"))
    assert "softmax:" in out and "DIS medium: end-point error" in out
