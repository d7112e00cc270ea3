"""Optical flow against real ground truth (MPI-Sintel, FlyingChairs) and the reference EPEs in ../shared/README.md;
the .flo format against OpenCV's reader/writer; the colour wheel against Baker et al.'s definition."""

import numpy as np
import pytest

from conftest import shared_path
from i2v.cli import main
from i2v.errors import ConfigError, InputError
from i2v.metrics import angular_error, endpoint_error
from i2v.motion.flow import (color_wheel, estimate_flow, flow_to_color, read_flo,
                             write_flo)
from i2v.video import load_image



# ../shared/README.md: EPE (all pixels, frame 2 -> 3, clean) for OpenCV DIS medium and Farneback(0.5,5,15,3,5,1.2)
SINTEL_REF = {"alley_1": (0.34, 0.93), "cave_2": (1.65, 3.91), "market_5": (17.67, 24.99)}


@pytest.mark.parametrize("seq", list(SINTEL_REF))
def test_sintel_epe_matches_reference(seq):
    d = shared_path("data", "flow", "sintel", seq)
    a, b = load_image(d / "clean" / "frame_0002.png"), load_image(d / "clean" / "frame_0003.png")
    gt = read_flo(d / "gt" / "frame_0002.flo")
    dis, farneback = SINTEL_REF[seq]
    epe = endpoint_error(estimate_flow(a, b, "dis", "medium"), gt)
    assert epe <= dis * 1.02 + 0.005, f"{seq} DIS: {epe:.3f} vs reference {dis}"
    assert epe >= dis * 0.98 - 0.005, f"{seq} DIS: {epe:.3f} vs reference {dis} (better than the reference: a different method?)"
    epe_f = endpoint_error(estimate_flow(a, b, "farneback"), gt)
    assert abs(epe_f - farneback) <= farneback * 0.02 + 0.005, f"{seq} Farneback: {epe_f:.3f} vs {farneback}"
    assert epe < endpoint_error(np.zeros_like(gt), gt)


def test_chairs_mean_epe_matches_reference():
    d = shared_path("data", "flow", "chairs")
    epes = []
    for i in range(9):
        a, b = load_image(d / f"000000{i}-img0.png"), load_image(d / f"000000{i}-img1.png")
        epes.append(endpoint_error(estimate_flow(a, b), read_flo(d / f"000000{i}-gt.flo")))
    assert abs(np.mean(epes) - 3.70) <= 3.70 * 0.02, np.mean(epes)


def test_flo_round_trip_is_bit_exact_and_agrees_with_opencv(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    flow = rng.normal(0, 30, (17, 23, 2)).astype(np.float32)
    flow[0, 0] = [np.inf, -0.0]
    flow[1, 1] = [1e9, np.float32(1e-42)]  # the unknown-flow marker and a subnormal
    write_flo(tmp_path / "a.flo", flow)
    back = read_flo(tmp_path / "a.flo")
    assert back.dtype == np.float32 and back.tobytes() == flow.tobytes()
    assert cv2.readOpticalFlow(str(tmp_path / "a.flo")).tobytes() == flow.tobytes()
    cv2.writeOpticalFlow(str(tmp_path / "b.flo"), flow)
    assert (tmp_path / "b.flo").read_bytes() == (tmp_path / "a.flo").read_bytes()


def test_real_flo_reads_like_opencv():
    import cv2

    p = shared_path("data", "flow", "sintel", "alley_1", "gt", "frame_0002.flo")
    assert np.array_equal(read_flo(p), cv2.readOpticalFlow(str(p)))


def test_flo_errors(tmp_path):
    (tmp_path / "bad.flo").write_bytes(b"ABCD" + b"\0" * 8)  # the magic 202021.25 reads "PIEH" in ASCII
    with pytest.raises(InputError, match="magic"):
        read_flo(tmp_path / "bad.flo")
    write_flo(tmp_path / "t.flo", np.zeros((4, 5, 2)))
    (tmp_path / "t.flo").write_bytes((tmp_path / "t.flo").read_bytes()[:-8])
    with pytest.raises(InputError, match="header says 5x4"):
        read_flo(tmp_path / "t.flo")


def test_estimate_flow_errors():
    with pytest.raises(InputError, match="same size"):
        estimate_flow(np.zeros((10, 12, 3), np.uint8), np.zeros((10, 13, 3), np.uint8))
    with pytest.raises(ConfigError, match="valid: ultrafast, fast, medium"):
        estimate_flow(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8), preset="slow")
    with pytest.raises(InputError, match="too small for dis optical flow.*at least 12 px"):  # OpenCV would crash
        estimate_flow(np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1, 3), np.uint8))


def test_flow_recovers_a_known_translation():
    import cv2

    rng = np.random.default_rng(3)
    base = cv2.GaussianBlur(rng.random((140, 180, 3)).astype(np.float32), (0, 0), 3)
    base = ((base - base.min()) / np.ptp(base) * 255).astype(np.uint8)
    a, b = base[20:120, 20:160], base[17:117, 25:165]  # b(p) = a(p + (-5, 3)) -> flow a->b is (-5, 3)... see below
    # a(p) = base(p + (20, 20)); b(p) = base(p + (25, 17)) so a(p) = b(p - (5, -3)): flow a->b = (-5, 3)
    flow = estimate_flow(a, b)
    inner = flow[15:-15, 15:-15]
    assert endpoint_error(inner, np.broadcast_to([-5, 3], inner.shape)) < 0.1
    assert angular_error(inner, np.broadcast_to([-5, 3], inner.shape)) < 2


def test_colour_wheel_follows_baker_et_al():
    wheel = color_wheel()
    assert wheel.shape == (55, 3)
    # segment starts: red, yellow, green, cyan, blue, magenta (RY=15, YG=6, GC=4, CB=11, BM=13, MR=6)
    for k, rgb in ((0, (255, 0, 0)), (15, (255, 255, 0)), (21, (0, 255, 0)), (25, (0, 255, 255)), (36, (0, 0, 255)),
                   (49, (255, 0, 255))):
        assert tuple(wheel[k]) == rgb
    f = np.zeros((1, 6, 2), np.float32)
    f[0, 1], f[0, 2], f[0, 3], f[0, 4], f[0, 5] = [1, 0], [-1, 0], [0, -1], [0.5, 0], [np.nan, 0]
    c = flow_to_color(f, max_flow=1.0)[0].astype(int)
    assert tuple(c[0]) == (255, 255, 255)  # no motion: white
    # right: a = atan2(-0, -1)/pi = -1 (as in C, -v of v = 0 is -0) -> wheel[0], pure red, full saturation
    assert tuple(c[1]) == (255, 0, 0)
    # left: a = 0 -> k = 27, cyan-blue; up: a = 0.5 -> k = 40.5 between two blue-magenta colours
    assert tuple(c[2]) == tuple(np.floor(wheel[27]).astype(int))
    assert tuple(c[3]) == tuple(np.floor((wheel[40] + wheel[41]) / 2).astype(int))
    assert tuple(c[4]) == (255, 127, 127)  # half length: half way from white to red
    assert tuple(c[5]) == (0, 0, 0)


def test_flow_cli_writes_flo_and_picture(tmp_path, capsys):
    d = shared_path("data", "flow", "chairs")
    a, b, gt = d / "0000000-img0.png", d / "0000000-img1.png", d / "0000000-gt.flo"
    out, viz = tmp_path / "f.flo", tmp_path / "f.png"
    assert main(["flow", str(a), str(b), "-o", str(out), "--viz", str(viz), "--gt", str(gt)]) == 0
    flow = read_flo(out)
    np.testing.assert_array_equal(flow, estimate_flow(load_image(a), load_image(b)))
    np.testing.assert_array_equal(load_image(viz), flow_to_color(flow))
    assert "end-point error" in capsys.readouterr().out
    assert main(["flow", str(a), str(b), "-o", str(out)]) == 1  # exists
    assert "exists" in capsys.readouterr().err


def test_flow_cli_refuses_images_of_different_sizes(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (32, 24)).save(tmp_path / "a.png")
    Image.new("RGB", (30, 24)).save(tmp_path / "b.png")
    assert main(["flow", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "f.flo")]) == 1
    err = capsys.readouterr().err
    assert "same size" in err and len(err.strip().splitlines()) == 1
