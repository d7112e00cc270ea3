"""Depth-driven camera: projection against OpenCV (cv2.warpFrame and cv2.projectPoints), analytic moves, and a
real stereo pair (Middlebury Teddy: a sideways camera move by the stereo baseline must reproduce the other view)."""

import math

import numpy as np
import pytest
import torch

from conftest import shared_path
from i2v.cli import main
from i2v.errors import ConfigError, InputError
from i2v.motion.camera import (MOVES, intrinsics, render_camera_move, reproject, rot_x, rot_y, trajectory,
                               unproject)
from i2v.motion.depth import FALLBACK_PRIOR, load_depth, prepare_depth
from i2v.video import load_image



def scene(h=60, w=80):
    """A tilted plane with a box in front of it, and a random texture."""
    yy, xx = np.mgrid[0:h, 0:w]
    depth = (2.0 + 0.01 * xx + 0.02 * yy).astype(np.float32)
    depth[20:40, 30:50] = 1.2
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return depth, img


def test_projection_matches_cv2_warpframe():
    import cv2

    depth, img = scene()
    h, w = depth.shape
    K = intrinsics(h, w, 60.0)
    R = rot_y(0.05) @ rot_x(-0.03)
    t = torch.tensor([0.1, -0.05, 0.2], dtype=torch.float64)
    flow, z = reproject(torch.from_numpy(depth), K, R, t)
    Rt = np.eye(4)
    Rt[:3, :3], Rt[:3, 3] = R.numpy(), t.numpy()
    ref_depth, ref_img, _ = cv2.warpFrame(depth, img, None, Rt, K.numpy())
    # OpenCV's warpFrame: nearest-pixel z-buffer at the truncated projected position. Do the same with our projection.
    yy, xx = np.mgrid[0:h, 0:w]
    u, v = np.floor(xx + flow[0].numpy()).astype(int), np.floor(yy + flow[1].numpy()).astype(int)
    ours_d, ours_i = np.full((h, w), np.inf), np.zeros_like(img)
    for x, y, uu, vv, zz in zip(xx.ravel(), yy.ravel(), u.ravel(), v.ravel(), z.numpy().ravel()):
        if 0 <= uu < w and 0 <= vv < h and 0 < zz < ours_d[vv, uu]:
            ours_d[vv, uu], ours_i[vv, uu] = zz, img[y, x]
    hit = np.isfinite(ours_d)
    np.testing.assert_array_equal(hit, ref_depth > 0)
    np.testing.assert_allclose(ours_d[hit], ref_depth[hit], rtol=1e-5)
    np.testing.assert_array_equal(ours_i[hit], ref_img[hit])
    assert 0.6 < hit.mean() < 0.95  # the move really moves things


def test_projection_matches_cv2_projectpoints():
    import cv2

    depth, _ = scene(31, 45)
    K = intrinsics(31, 45, 50.0)
    R, t = rot_y(-0.1) @ rot_x(0.07), torch.tensor([-0.2, 0.1, 0.3], dtype=torch.float64)
    X = unproject(torch.from_numpy(depth), K).reshape(3, -1).T.numpy()  # (n, 3)
    # independent check of unproject: z is the depth and K X / z gives back the pixel
    assert np.allclose(X[:, 2], depth.ravel())
    rvec, _ = cv2.Rodrigues(R.numpy())
    uv, _ = cv2.projectPoints(X, rvec, t.numpy(), K.numpy(), None)
    flow, _ = reproject(torch.from_numpy(depth), K, R, t)
    yy, xx = np.mgrid[0:31, 0:45]
    ours = np.stack([xx + flow[0].numpy(), yy + flow[1].numpy()], -1).reshape(-1, 2)
    np.testing.assert_allclose(ours, uv[:, 0], atol=1e-6)


def test_moves_match_their_geometry():
    h, w = 41, 61  # odd: the principal point is a pixel centre
    K = intrinsics(h, w, 60.0)
    f, c = K[0, 0].item(), np.array([(w - 1) / 2, (h - 1) / 2])
    yy, xx = np.mgrid[0:h, 0:w]
    rel = np.stack([xx - c[0], yy - c[1]])  # pixel offsets from the centre
    plane = torch.ones(h, w, dtype=torch.float64)  # fronto-parallel plane at depth 1

    def flow_of(move, amount, depth=plane):
        R_c, C, fs = trajectory(move, 2, amount, "linear")[1]
        Kn = K.clone()
        Kn[0, 0] *= fs
        Kn[1, 1] *= fs
        fl, _ = reproject(depth, K, R_c.T, -(R_c.T @ C), Kn)
        return fl.numpy()

    # dolly in by d: the plane at depth 1 is now at 1 - d, magnified by 1 / (1 - d)
    np.testing.assert_allclose(flow_of("dolly-in", 0.2), rel * (1 / 0.8 - 1), atol=1e-9)
    np.testing.assert_allclose(flow_of("zoom-in", 0.3), rel * 0.3, atol=1e-9)
    # truck right by b: everything at depth 1 moves left by f b
    np.testing.assert_allclose(flow_of("truck-right", 0.1), np.stack([-f * 0.1 * np.ones((h, w)), 0 * rel[1]]), atol=1e-9)
    np.testing.assert_allclose(flow_of("pedestal-up", 0.1)[1], f * 0.1, atol=1e-9)
    # pan right by a: the centre pixel moves left by f tan(a), whatever its depth
    far = torch.full((h, w), 7.0, dtype=torch.float64)
    assert abs(flow_of("pan-right", 5.0, far)[0, h // 2, w // 2] + f * math.tan(math.radians(5))) < 1e-9
    # orbit keeps the pivot (centre pixel at depth 1) fixed and moves nearer/farther points opposite ways
    fl = flow_of("orbit", 10.0, torch.from_numpy(np.where(xx < 20, 0.5, np.where(xx > 40, 2.0, 1.0))))
    assert abs(fl[0, h // 2, w // 2]) < 1e-9 and fl[0, h // 2, 5] * fl[0, h // 2, 55] < 0
    # dolly-zoom: the plane at depth 1 does not move at all; the background does
    np.testing.assert_allclose(flow_of("dolly-zoom", 0.5), 0, atol=1e-9)
    assert np.abs(flow_of("dolly-zoom", 0.5, far)).max() > 5


def test_easings_start_at_the_photo_and_swing_returns():
    for easing in ("linear", "ease-in-out", "ease-in", "ease-out", "swing"):
        cams = trajectory("orbit", 9, 12.0, easing)
        R_c, C, fs = cams[0]
        assert torch.equal(R_c, torch.eye(3, dtype=torch.float64)) and C.abs().max() < 1e-12 and fs == 1.0
    swing = trajectory("truck-right", 9, 0.2, "swing")
    assert swing[4][1][0] == pytest.approx(0.2) and swing[8][1].abs().max() < 1e-12  # out at the middle, back at the end
    smooth = trajectory("truck-right", 9, 0.2, "ease-in-out")
    assert smooth[1][1][0] < 0.2 / 8 and smooth[8][1][0] == pytest.approx(0.2)  # slow start, full move at the end


def test_nearer_points_win_and_frame_zero_is_the_photo():
    h, w = 48, 64
    depth = np.full((h, w), 3.0, np.float32)
    depth[16:32, 20:40] = 1.0  # a near box
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 2] = 255  # blue background
    img[16:32, 20:40] = (255, 0, 0)  # red box
    frames, holes = render_camera_move(img, depth, move="truck-right", frames=3, amount=0.05, easing="linear",
                                       fill="none", progress=False, return_holes=True)
    assert torch.equal((frames[0] * 255).round().to(torch.uint8), torch.from_numpy(img).permute(2, 0, 1))
    f = (frames[-1] * 255).round().numpy()
    K = intrinsics(h, w)
    # depth is normalised to median 1: background 1, box 1/3; a truck by b moves points left by f b / z
    shift_box, shift_bg = K[0, 0].item() * 0.05 * 3, K[0, 0].item() * 0.05
    x0, x1 = int(np.ceil(20 - shift_box)), int(np.floor(39 - shift_box))
    box = f[:, 17:31, x0 + 1:x1]
    assert (box[0] == 255).all() and (box[2] == 0).all()  # pure red: the background behind never leaks in
    assert holes[-1].any() and not holes[0].any()  # the box uncovered background that nothing lands on
    # the background away from the box moved by its own (smaller) parallax
    assert f[2, 5, int(np.ceil(45 - shift_bg)):55].min() == 255


def test_teddy_truck_by_the_baseline_gives_the_other_view():
    import cv2

    d = shared_path("data", "stereo", "teddy")
    im2, im6 = load_image(d / "im2.png"), load_image(d / "im6.png")
    disp = cv2.imread(str(d / "disp2.pgm"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 4
    h, w = disp.shape
    f = intrinsics(h, w, 60.0)[0, 0].item()
    # depth is disparity^-1 normalised to median 1, so a truck by b shifts a pixel by f b d median(1/d):
    # choose b so the shift is exactly the disparity d (view 2 -> view 6 moves the camera right)
    b = 1 / (f * np.median(1 / disp[disp > 0]))
    frames, holes = render_camera_move(im2, d / "disp2.pgm", move="truck-right", frames=2, amount=b, easing="linear",
                                       fill="none", depth_scale=4, progress=False, return_holes=True, verbose=False)
    out = frames[1].permute(1, 2, 0).numpy() * 255
    covered = ~holes[1, 0].numpy()
    mse = ((out - im6.astype(np.float64)) ** 2)[covered].mean()
    assert 10 * np.log10(255**2 / mse) >= 29.0  # splatting alone on known disparity: 29.7 (test_motion_warp)
    assert covered.mean() > 0.88


def test_depth_inputs_and_errors(tmp_path, capsys):
    import cv2

    d16 = (np.arange(12 * 16).reshape(12, 16) + 500).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "d16.png"), d16)
    dm = load_depth(tmp_path / "d16.png", (12, 16))
    np.testing.assert_allclose(dm.depth, d16 / np.median(d16), rtol=1e-6)  # 16-bit: depth
    d8 = np.full((12, 16), 100, np.uint8)
    d8[:, 8:] = 50
    d8[0, 0] = 0  # unknown
    cv2.imwrite(str(tmp_path / "d8.png"), d8)
    dm = load_depth(tmp_path / "d8.png", (12, 16))
    assert dm.depth[5, 12] == pytest.approx(2 * dm.depth[5, 3])  # 8-bit: disparity, half the disparity = twice as far
    assert not dm.valid[0, 0] and "no value" in dm.note
    dm = load_depth(tmp_path / "d8.png", (24, 32))  # wrong size: resized with a note
    assert dm.depth.shape == (24, 32) and "resized" in dm.note
    np.save(tmp_path / "zero.npy", np.zeros((12, 16), np.float32))
    with pytest.raises(InputError, match="no valid values"):
        load_depth(tmp_path / "zero.npy", (12, 16))
    with pytest.raises(ConfigError, match="valid: dolly-in, dolly-out, .*orbit, .*dolly-zoom"):
        render_camera_move(np.zeros((8, 8, 3), np.uint8), move="spin", frames=2)
    with pytest.raises(InputError, match=r"expected a \(h, w\) array"):
        prepare_depth(np.ones((4, 4, 4)), "depth", (4, 4))
    frames = render_camera_move(np.zeros((8, 8, 3), np.uint8), move="orbit", frames=2, progress=False)
    assert FALLBACK_PRIOR in capsys.readouterr().out and frames.shape == (2, 3, 8, 8)


def test_camera_cli(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    np.save(tmp_path / "d.npy", (1 + rng.random((40, 56))).astype(np.float32))
    out = tmp_path / "o.mp4"
    args = ["camera", str(tmp_path / "p.png"), "--depth", str(tmp_path / "d.npy"), "--move", "dolly-in", "--frames", "6", "-o", str(out)]
    assert main(args) == 0 and out.exists()
    assert main(args) == 1 and "exists" in capsys.readouterr().err
    assert main(args[:4] + ["--move", "spin", "-o", str(tmp_path / "x.mp4")]) == 1
    err = capsys.readouterr().err
    assert "valid: dolly-in" in err and len(err.strip().splitlines()) == 1
    assert all(name in err for name in MOVES)
