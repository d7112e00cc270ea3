"""Eulerian cinemagraphs: the loop closes exactly, the seam is no jumpier than the rest, a uniform motion field
gives the analytic blend of two shifted copies, and brush JSON errors point at the field."""

import json

import numpy as np
import pytest
import torch

from i2v.cli import main
from i2v.errors import InputError
from i2v.motion.eulerian import brush_to_motion, cinemagraph, integrate
from i2v.motion.flow import write_flo
from i2v.video import load



def texture(h=48, w=64, seed=0):
    import cv2

    img = cv2.GaussianBlur(np.random.default_rng(seed).random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    return ((img - img.min()) / np.ptp(img) * 255).astype(np.uint8)


BRUSH = {"regions": [{"box": [8, 10, 56, 40], "direction": 20, "speed": 1.2, "feather": 4},
                     {"polygon": [[0, 40], [30, 40], [30, 48], [0, 48]], "direction": [0, -1], "speed": 0.7}]}


def test_loop_closes_and_seam_is_smooth():
    img = texture()
    N = 24
    f = cinemagraph(img, BRUSH, frames=N, include_end=True, progress=False)
    assert f.shape == (N + 1, 3, 48, 64)
    assert torch.equal(f[N], f[0])  # frame N is frame 0: the loop closes
    assert torch.equal((f[0] * 255).round().to(torch.uint8), torch.from_numpy(img).permute(2, 0, 1))
    diffs = (f[1:] - f[:-1]).abs().mean(dim=(1, 2, 3))  # consecutive pairs; the last pair (N-1, N) is the seam
    seam, others = diffs[-1], diffs[:-1]
    # the seam step (N-1 -> N = 0) mirrors the first step (0 -> 1: forward by one step instead of backward), so it
    # is as large as the largest step elsewhere up to content (2%), and close to the average step
    assert seam <= 1.02 * others.max() and seam <= 1.2 * others.mean(), (seam, others)
    assert others.min() > 0  # it moves
    # without the symmetric half (a plain forward loop) the seam would jump: frame N-1 is far from frame 0
    F = integrate(torch.from_numpy(brush_to_motion(BRUSH, 48, 64)).permute(2, 0, 1)[None], N)
    assert F[N - 1].abs().max() > 20


def test_uniform_integer_motion_gives_the_analytic_blend():
    # M = (1, 0) everywhere: F_{0->t} = (t, 0) and F_{0->t-N} = (t - N, 0), so inside the image frame t is
    # (1 - t/N) I(x - t) + (t/N) I(x + N - t), normalised where only one copy lands
    img = texture(20, 40)
    N, t = 8, 3
    f = cinemagraph(img, np.tile([1.0, 0.0], (20, 40, 1)).astype(np.float32), frames=N, progress=False)
    a = t / N
    ref = (1 - a) * img[:, 10 - t:30 - t].astype(np.float64) + a * img[:, 10 + N - t:30 + N - t]
    np.testing.assert_allclose(f[t].permute(1, 2, 0).numpy()[:, 10:30] * 255, ref, atol=1e-3)


def test_integrate_follows_particles():
    # M(x, y) = (0.5, 0) left of x = 10, 0 beyond: a particle starting at x = 6 stops at x >= 10 after 8 steps
    m = torch.zeros(1, 2, 4, 20)
    m[0, 0, :, :10] = 0.5
    F = integrate(m, 12)
    assert torch.allclose(F[4, 0, 0, 1, 6], torch.tensor(2.0))
    # near x = 10 the bilinear field fades to 0, so the particle creeps toward the edge and never passes it
    assert 3.95 < F[12, 0, 0, 1, 6] <= 4.0


@pytest.mark.parametrize("brush, field", [
    ({}, "regions"),
    ({"regions": [{"box": [0, 0, 5, 5], "direction": 0, "speed": "fast"}]}, r"regions\[0\].speed: expected a number"),
    ({"regions": [{"polygon": [[0, 0], [1, 1]], "direction": 0, "speed": 1}]}, r"regions\[0\].polygon: expected at least 3"),
    ({"regions": [{"box": [0, 0, 5, 5], "speed": 1}]}, r"regions\[0\]: needs 'direction'"),
    ({"regions": [{"direction": 0, "speed": 1}]}, r"regions\[0\]: needs exactly one of polygon, box, mask"),
    ({"regions": [{"box": [0, 0, 5, 5], "direction": 0, "speed": 1, "sped": 2}]}, r"unknown field\(s\) sped"),
    ({"regions": [{"box": [5, 0, 0, 5], "direction": 0, "speed": 1}]}, r"regions\[0\].box: expected x0 < x1"),
    ({"regions": [{"box": [0, 0, 5, 5], "direction": [0, 0], "speed": 1}]}, r"regions\[0\].direction"),
])
def test_brush_schema_errors_point_to_the_field(brush, field):
    with pytest.raises(InputError, match=field):
        brush_to_motion(brush, 16, 16)


def test_brush_geometry_and_json_errors(tmp_path):
    m = brush_to_motion({"size": [32, 32], "regions": [{"box": [0, 0, 16, 32], "direction": 90, "speed": 2,
                                                        "feather": 0}]}, 16, 64)
    np.testing.assert_allclose(m[8, 10], [0, 1], atol=1e-6)  # down, speed 2 scaled by 16/32 vertically
    np.testing.assert_allclose(m[8, 40], [0, 0])
    from PIL import Image

    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")  # a mask region, path relative to the JSON, resized to the image
    (tmp_path / "mask.json").write_text(json.dumps({"regions": [{"mask": "m.png", "direction": 180, "speed": 1,
                                                                 "feather": 0}]}))
    m = brush_to_motion(tmp_path / "mask.json", 16, 16)
    np.testing.assert_allclose(m[3, 12], [-1, 0], atol=1e-6)
    np.testing.assert_allclose(m[3, 3], [0, 0])
    (tmp_path / "b.json").write_text('{"regions": [}')
    with pytest.raises(InputError, match="not valid JSON .line 1"):
        brush_to_motion(tmp_path / "b.json", 8, 8)


def test_cinemagraph_cli_from_brush_and_from_flo(tmp_path, capsys):
    from PIL import Image

    Image.fromarray(texture()).save(tmp_path / "p.png")
    (tmp_path / "b.json").write_text(json.dumps(BRUSH))
    out = tmp_path / "loop.gif"
    assert main(["cinemagraph", str(tmp_path / "p.png"), "--motion", str(tmp_path / "b.json"), "--frames", "8",
                 "-o", str(out)]) == 0
    frames, _ = load(out)
    assert frames.shape == (8, 48, 64, 3)
    write_flo(tmp_path / "m.flo", np.tile([0.5, 0.25], (24, 32, 1)))  # half size: resized and scaled
    assert main(["cinemagraph", str(tmp_path / "p.png"), "--motion", str(tmp_path / "m.flo"), "--frames", "6",
                 "-o", str(tmp_path / "loop.mp4")]) == 0
    assert "note: " in capsys.readouterr().out  # the .flo was resized and its vectors scaled
    capsys.readouterr()
    (tmp_path / "bad.json").write_text(json.dumps({"regions": [{"box": [0, 0, 5, 5], "direction": 0, "speed": -1}]}))
    assert main(["cinemagraph", str(tmp_path / "p.png"), "--motion", str(tmp_path / "bad.json"),
                 "-o", str(tmp_path / "x.mp4")]) == 1
    err = capsys.readouterr().err
    assert "regions[0].speed: expected a number >= 0, got -1" in err and len(err.strip().splitlines()) == 1
