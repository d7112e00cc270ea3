"""Runs tutorials/04_camera_and_cinemagraph.py in small settings (a subprocess, as a user would) and checks its figures."""

from conftest import run_tutorial


def test_tutorial_runs_small_and_draws_its_figures(tmp_path):
    out = run_tutorial("04_camera_and_cinemagraph.py", tmp_path, ("04_camera_point_cloud.png", "04_camera_moves.png", "04_cinemagraph_strip.png"))
    assert "frame N == frame 0: True" in out  # the loop closes
