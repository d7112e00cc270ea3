"""The built-in model at the photo's own resolution and aspect ratio: non-square grids in both backbones, the
geometry that carries the motion to full resolution (checked against clips whose true frames are known), and
the default against the old 64x64 path on held-out clips rendered at 256x256."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from i2v.data.procedural import PAN_PX, make_clip
from i2v.errors import ConfigError, InputError
from i2v.image import fit_grid
from i2v.metrics import psnr
from i2v.models.builtin.dit import DiT, DiTConfig
from i2v.models.builtin.heads import WarpMotion, aspect_corrected
from i2v.models.builtin.unet3d import UNet3D, UNet3DConfig
from i2v.motion.warp import normalized_grid, transfer_detail
from i2v.nn.rope import apply_rope, rope_3d
from i2v.pipelines.builtin import BuiltinPipeline, carry_to_resolution, flow_motion

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------------
# non-square grids in the backbones
# ---------------------------------------------------------------------------------------------------------------

def _randomize(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def _inputs(t, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 3, t, h, w, generator=g), torch.randn(1, generator=g),
            dict(first_frame=torch.randn(1, 3, h, w, generator=g), motion=torch.tensor([3]), speed=torch.tensor([1.0])))


def test_unet_on_a_non_square_grid_is_local_where_it_should_be():
    """A one-level U-Net without spatial attention sees +-6 cells (3x3 convs: conv_in, 2 + 2 in the levels,
    conv_out) of 4x4 pixels: a change at one pixel of a 96x48 clip changes the outputs within 28 px of it, in
    that orientation, and elsewhere only through the GroupNorm statistics (1e-3 of it). Swapped h and w anywhere
    in the reshapes would put large changes elsewhere."""
    model = _randomize(UNet3D(UNet3DConfig(channels=(16,), spatial_attention=(False,), emb_dim=32)))
    assert model.multiple == 4
    x, c, kw = _inputs(3, 48, 96)
    with torch.no_grad():
        a = model(x, c, **kw)
        x2 = x.clone()
        x2[0, :, 1, 5, 80] += 1.0  # frame 1, row 5, column 80
        b = model(x2, c, **kw)
    diff = (a - b).abs().amax(dim=(0, 1, 2))  # (h, w): any channel, any frame
    changed = diff > 1e-3 * diff.max()
    ys, xs = torch.nonzero(changed, as_tuple=True)
    assert diff.max() > 0.1 and ys.max() < 5 + 28 and xs.min() > 80 - 28 - 4
    assert changed[5, 80] and not changed[:, :48].any() and not changed[40:].any()


def test_unet_multiple_is_patch_times_two_to_the_levels():
    model = UNet3D(UNet3DConfig(channels=(16, 32, 32), spatial_attention=(False, True, True), emb_dim=32))
    assert model.multiple == 16
    x, c, kw = _inputs(2, 48, 32)
    with torch.no_grad():
        assert model(x, c, **kw).shape == (1, 3, 2, 48, 32)
    x, c, kw = _inputs(2, 40, 32)
    with pytest.raises(InputError, match="divisible by 16"):
        model(x, c, **kw)


def test_dit_on_a_non_square_grid_keeps_patches_in_place():
    """With the spatial attention switched off (output projection zero) a DiT token only talks to the same
    patch position in other frames: a change inside one patch of a 24x40 clip stays in that patch's 4x4 pixels
    (every frame) and leaves every other output bit-identical."""
    model = _randomize(DiT(DiTConfig(dim=32, depth=2, emb_dim=32)))
    assert model.multiple == 4
    with torch.no_grad():
        for block in model.blocks:
            block.spatial.proj.weight.zero_()
            block.spatial.proj.bias.zero_()
    x, c, kw = _inputs(3, 24, 40)
    with torch.no_grad():
        a = model(x, c, **kw)
        x2 = x.clone()
        x2[0, :, 2, 5, 30] += 1.0  # frame 2, pixel (5, 30): patch row 1, patch column 7
        b = model(x2, c, **kw)
    changed = (a - b).abs().amax(dim=(0, 1)) > 0  # (t, h, w)
    assert changed[:, 4:8, 28:32].all(dim=(1, 2)).any()
    outside = changed.clone()
    outside[:, 4:8, 28:32] = False
    assert not outside.any()


def test_rope_scores_depend_only_on_offsets_on_a_non_square_grid():
    """The DiT orders tokens (h w), row-major; with the rotary tables of rope_3d(1, h, w) the attention score of
    two tokens with the same content depends only on their (dy, dx) offset, for h != w."""
    h, w, e = 3, 5, 24
    cos, sin = rope_3d(1, h, w, e, dtype=torch.float64)
    q = torch.randn(1, 1, 1, e, dtype=torch.float64).expand(1, 1, h * w, e)
    k = torch.randn(1, 1, 1, e, dtype=torch.float64).expand(1, 1, h * w, e)
    s = (apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2))[0, 0]  # (n, n)
    y, x = torch.arange(h * w) // w, torch.arange(h * w) % w
    by_offset = {}
    for i in range(h * w):
        for j in range(h * w):
            by_offset.setdefault((int(y[i] - y[j]), int(x[i] - x[j])), []).append(float(s[i, j]))
    assert len(by_offset) == (2 * h - 1) * (2 * w - 1)
    for vals in by_offset.values():
        assert max(vals) - min(vals) < 1e-9


# ---------------------------------------------------------------------------------------------------------------
# geometry: grid fit, aspect correction, detail transfer
# ---------------------------------------------------------------------------------------------------------------

def test_fit_grid_sizes_pads_and_coordinates():
    f = fit_grid(480, 640, 64, 16)
    assert (f.content, f.grid, f.pad, f.describe()) == ((48, 64), (48, 64), (0, 0, 0, 0), "64x48")
    f = fit_grid(667, 1000, 64, 16)
    assert (f.content, f.grid, f.pad) == ((43, 64), (48, 64), (2, 3, 0, 0))
    assert f.describe() == "64x43 (padded to 64x48)"
    assert fit_grid(1080, 1920, 64, 4).grid == (36, 64) and fit_grid(640, 480, 64, 16).grid == (64, 48)
    # the image's outer edges sit at the content's edges: y = -1 -> 2 rows below the grid's top edge
    corners = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
    g = f.to_grid(corners)
    np.testing.assert_allclose(g.numpy(), [[-1, -1 + 2 * 2 / 48], [1, 1 - 2 * 3 / 48]], atol=1e-6)
    np.testing.assert_allclose(f.from_grid(g).numpy(), corners.numpy(), atol=1e-6)
    img = np.random.default_rng(0).integers(0, 256, (667, 1000, 3), dtype=np.uint8)
    out = f.resize(img)
    assert out.shape == (48, 64, 3)
    np.testing.assert_array_equal(out[1], out[3])  # reflection about row 2, the content's first row
    np.testing.assert_array_equal(f.crop(out.transpose(2, 0, 1)).transpose(1, 2, 0),
                                  cv2.resize(img, (64, 43), interpolation=cv2.INTER_AREA))


def test_aspect_correction_keeps_pixel_motions_on_a_non_square_grid():
    """On a 48x64 grid the head's maps (learned on squares) mean, in pixels, what they meant on a 64x64 grid:
    a rotation stays a rotation, a translation of 0.1 moves 3.2 px on both axes."""
    a = np.deg2rad(20)
    theta = torch.tensor([[[np.cos(a), -np.sin(a), 0.1], [np.sin(a), np.cos(a), 0.1]]], dtype=torch.float64)
    h, w = 48, 64
    th, _ = aspect_corrected(theta, None, h, w)
    pts = normalized_grid(h, w).double()
    src = WarpMotion(th, None).source(pts)[0]  # (h, w, 2) normalised
    to_px = torch.tensor([w / 2, h / 2], dtype=torch.float64)  # normalised -> pixels from the centre
    p, q = pts[0] * to_px, src * to_px
    R = torch.tensor([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], dtype=torch.float64)
    np.testing.assert_allclose(q.numpy(), (p @ R.T + 3.2).numpy(), atol=1e-4)  # source() works in float32
    assert aspect_corrected(theta, None, 32, 32)[0] is theta  # square: unchanged


def test_transfer_detail_limits():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 96, generator=g)
    source = normalized_grid(64, 96) * 0.9  # a slight zoom-in, inside the image
    big = F.grid_sample(image, source, mode="bicubic", padding_mode="border", align_corners=False)
    low = F.adaptive_avg_pool2d(big, (16, 24))
    ones, zeros = torch.ones(1, 1, 16, 24), torch.zeros(1, 1, 16, 24)
    # the frame is the moved image and fully trusted: the moved image itself, at full resolution
    np.testing.assert_allclose(transfer_detail(low, image, source, ones).numpy(), big.clamp(0, 1).numpy(), atol=1e-5)
    # nothing trusted: the frame, upsampled bicubically
    up = F.interpolate(low, size=(64, 96), mode="bicubic", align_corners=False).clamp(0, 1)
    np.testing.assert_allclose(transfer_detail(low, image, source, zeros).numpy(), up.numpy(), atol=1e-6)
    # sources outside the image (content entering the picture) come from the frame too
    out = transfer_detail(low, image, source + torch.tensor([1.5, 0.0]), ones)
    np.testing.assert_allclose(out[..., :, 60:].numpy(), up[..., :, 60:].numpy(), atol=1e-6)


@pytest.mark.parametrize("motion,rows", [("pan-up", (32, 224)), ("pan-left", (44, 212))])
def test_a_known_pan_renders_the_true_full_resolution_frames(motion, rows):
    """A clip whose frames are known at 64 px and at 256 px (the same scene, ``make_clip(scale=4)``), cropped to
    a non-square band (256x192, and 256x168 whose 42-row content the U-Net's grid pads to 48). Given the 64 px
    frames and their true motion (1 px per frame), the renderer must produce the 256 px frames: far closer
    than the 64 px frames enlarged bicubically."""
    # seed 10: a background (scikit-image's grass) with detail at 256 px; most crops of the bundled photos are
    # enlarged at scale 4, with little more detail than at 64 px
    c = make_clip(10, motion=motion, speed=1 / PAN_PX, sprites=0, frames=6)
    big = make_clip(10, motion=motion, speed=1 / PAN_PX, sprites=0, frames=6, scale=4)
    r0, r1 = rows
    true = big.frames[:, r0:r1]  # (t, H, 256, 3)
    fit = fit_grid(r1 - r0, 256, 64, 16)
    assert fit.content == ((r1 - r0) // 4, 64)
    top, bottom, _, _ = fit.pad
    low = np.stack([cv2.copyMakeBorder(f[r0 // 4:r1 // 4], top, bottom, 0, 0, cv2.BORDER_REFLECT_101)
                    for f in c.frames])  # the 64 px frames on the padded grid, (t, gh, 64, 3)
    frames = torch.from_numpy(low).permute(0, 3, 1, 2)
    gh = fit.grid[0]
    k = torch.arange(6.0)
    theta = torch.zeros(6, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    if motion == "pan-up":  # content moves +y by k px: frame k shows frame 0 at y - k (grid units 2 / gh per px)
        theta[:, 1, 2] = -2 * k / gh
    else:  # pan-left: content moves +x
        theta[:, 0, 2] = -2 * k / 64
    photo = torch.from_numpy(true[0]).permute(2, 0, 1)[None]
    out = carry_to_resolution(photo, frames, fit, WarpMotion(theta, None), torch.ones(6, 1, gh, 64),
                              true.shape[1:3]).permute(0, 2, 3, 1).numpy()
    assert out.shape == true.shape
    inner = (slice(24, -24), slice(24, -24))  # away from the content entering at the edge (4 px per frame)
    enlarged = F.interpolate(fit.crop(frames), size=true.shape[1:3], mode="bicubic",
                             align_corners=False).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    full, old = psnr(out[1:, inner[0], inner[1]], true[1:, inner[0], inner[1]]), \
        psnr(enlarged[1:, inner[0], inner[1]], true[1:, inner[0], inner[1]])
    assert full > 36 and full > old + 5, (full, old)


def test_flow_motion_reads_a_shift_from_generated_frames():
    """Models without a warp mask: the DIS flow of the frames to frame 0 is the motion. Frames shifted right by
    2 px per frame give, in normalised units, a flow of -2k * 2 / w inside and trust where it is consistent."""
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.random((48, 80, 3)).astype(np.float32), (0, 0), 1.5)
    base = (base - base.min()) / (base.max() - base.min())
    frames = np.stack([np.roll(base, 2 * k, axis=1) for k in range(4)])
    motion, trust = flow_motion(torch.from_numpy(frames).permute(0, 3, 1, 2))
    assert torch.equal(motion.theta[2], torch.tensor([[1.0, 0, 0], [0, 1, 0]]))
    inner = motion.flow[:, :, 8:-8, 16:-16]
    for k in range(4):
        np.testing.assert_allclose(inner[k, 0].median().item(), -2 * k * 2 / 80, atol=0.1 * 2 / 80)
        np.testing.assert_allclose(inner[k, 1].median().item(), 0, atol=0.1 * 2 / 48)
    assert trust[:, :, 8:-8, 16:-16].mean() > 0.9


# ---------------------------------------------------------------------------------------------------------------
# the pipeline and the CLI
# ---------------------------------------------------------------------------------------------------------------

def _photo(h=120, w=200):
    """A non-square photo-like test image (a crop of scikit-image's astronaut, resized)."""
    import skimage.data
    return cv2.resize(skimage.data.astronaut()[40:340, :500], (w, h), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("backbone,grid", [("unet", "64x38 (padded to 64x48)"), ("dit", "64x38 (padded to 64x40)")])
def test_pipeline_renders_at_the_photos_size(backbone, grid):
    pipe = BuiltinPipeline.load(backbone)
    lines = []
    img = _photo()
    out = pipe(img, motion="rotate-cw", steps=3, seed=0, frames=5, progress=False, log=lines.append)
    assert lines == [f"200x120 -> motion at {grid}, rendered at 200x120"]
    assert out.shape == (5, 3, 120, 200) and out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), img / 255, atol=1e-6)  # frame 0: the photo
    big = pipe(img, motion="rotate-cw", steps=3, seed=0, frames=5, progress=False, upscale=1.5)
    assert big.shape == (5, 3, 180, 300)
    old = pipe(img, motion="rotate-cw", steps=3, seed=0, frames=5, progress=False, size=32, log=lines.append)
    assert old.shape == (5, 3, 32, 32) and lines[-1] == "200x120 -> centre square at 32x32, output 32x32"
    with pytest.raises(ConfigError, match=f"multiple of {pipe.multiple}"):
        pipe(img, steps=2, size=30, progress=False)


def test_pipeline_without_a_warp_mask_uses_the_flow_of_its_frames():
    model = UNet3D(UNet3DConfig(channels=(16, 32), spatial_attention=(False, True), emb_dim=32))
    pipe = BuiltinPipeline(model, "edm", frames=4, size=32)
    lines = []
    out = pipe(_photo(60, 90), steps=2, progress=False, log=lines.append)
    assert out.shape == (4, 3, 60, 90) and lines == ["90x60 -> motion at 32x21 (padded to 32x24), rendered at 90x60"]


def test_cli_renders_a_non_square_photo_at_its_size(tmp_path, capsys):
    from PIL import Image

    from i2v.cli import main

    src = tmp_path / "photo.png"
    Image.fromarray(_photo(96, 128)).save(src)
    out = tmp_path / "frames"
    assert main(["animate", str(src), "--steps", "2", "--frames", "3", "--threads", "1", "-o", str(out)]) == 0
    assert "128x96 -> motion at 64x48, rendered at 128x96" in capsys.readouterr().out
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3 and all(Image.open(p).size == (128, 96) for p in pngs)
    old = tmp_path / "old"
    assert main(["animate", str(src), "--size", "64", "--steps", "2", "--frames", "3", "--threads", "1",
                 "-o", str(old)]) == 0
    assert "128x96 -> centre square at 64x64" in capsys.readouterr().out
    assert Image.open(sorted(old.glob("*.png"))[0]).size == (64, 64)


# ---------------------------------------------------------------------------------------------------------------
# verification on held-out clips at 256x256
# ---------------------------------------------------------------------------------------------------------------

def test_full_resolution_beats_the_old_path_on_held_out_clips():
    """Held-out clips rendered at 256x256 (``make_clip(scale=4)``), one per class listed, 8 steps, U-Net. The
    full table (every class, both backbones, 3 clips, 20 steps) is in docs/builtin-model.md: the photo's detail
    gains >= 3 dB where the picture moves as a whole and stays in view (zoom-in, rotations); pans and sprites
    gain little, because content entering the picture and the sprites' own motion are generated at 64 px."""
    from i2v.evaluate import evaluate_fullres

    pipe = BuiltinPipeline.load("unet")
    motions = ("zoom-in", "rotate-cw", "rotate-ccw", "pan-left", "slide")
    r = evaluate_fullres(pipe, clips_per_class=1, steps=8, motions=motions, progress=False)
    gain = {m: r.rows[m]["full"][0] - r.rows[m]["old"][0] for m in motions}
    assert np.mean([gain[m] for m in ("zoom-in", "rotate-cw", "rotate-ccw")]) >= 3, gain
    assert min(gain.values()) > -1, gain  # never much worse
    sharp = {m: (r.rows[m]["old"][1], r.rows[m]["full"][1]) for m in motions}  # lap(frame 15) / lap(frame 0)
    assert all(sharp[m][1] >= 0.8 for m in ("rotate-cw", "rotate-ccw")), sharp
    assert all(sharp[m][1] > sharp[m][0] + 0.1 for m in ("zoom-in", "rotate-cw", "rotate-ccw", "pan-left")), sharp
