# %% [markdown]
# # 03 · Optical flow and warping
#
# Everything that moves pixels in i2v goes through two primitives in `i2v/motion/warp.py`:
#
# * **backward warping** `out(p) = img(p + F(p))` — every output pixel *pulls* a colour (bilinear, `grid_sample`);
# * **forward splatting** — every input pixel *pushes* its colour to `p + F(p)`, shared bilinearly among the 4
#   pixels around it (Niklaus & Liu 2020). Where several land on one pixel, *softmax* splatting lets the one with
#   the larger importance `Z` (e.g. nearer) win; where nothing lands, there is a hole.
#
# We estimate flow with OpenCV's DIS, draw it with the Middlebury colour wheel, warp with it, find occlusions with
# a forward-backward check, and compare average and softmax splatting on a real stereo pair.
# Runs as a plain script: `python tutorials/03_flow_and_warping.py` (figures go to `$I2V_TUTORIAL_OUT`,
# default `docs/figures/`; `I2V_TUTORIAL_SMALL=1` makes it tiny).

# %%
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # use this checkout's i2v
from i2v.metrics import endpoint_error  # noqa: E402
from i2v.motion.flow import estimate_flow, flow_to_color, read_flo, wheel_image  # noqa: E402
from i2v.motion.warp import backward_warp, consistency_mask, forward_splat  # noqa: E402
from i2v.video import load_image  # noqa: E402
from i2v.figures import panel  # noqa: E402

SMALL = os.environ.get("I2V_TUTORIAL_SMALL") == "1"
OUT = Path(os.environ.get("I2V_TUTORIAL_OUT", ROOT / "docs" / "figures"))
OUT.mkdir(parents=True, exist_ok=True)
SHARED = Path(os.environ.get("I2V_SHARED", ROOT.parent / "shared"))
if SMALL:
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead


def to_t(a):  # (h, w, c) numpy -> (1, c, h, w) float tensor
    return torch.from_numpy(np.array(a, np.float32)).permute(2, 0, 1)[None]


def to_img(t):  # (1, c, h, w) tensor in 0..255 -> (h, w, c) uint8
    return t[0].permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).numpy()


def shrink(a, f):
    """Every f-th pixel (maps and images alike stay aligned; fine for the tiny CI run)."""
    return a[: a.shape[0] // f * f: f, : a.shape[1] // f * f: f]


# %% [markdown]
# ## A pair of frames with ground truth
# MPI-Sintel `alley_1`, frames 2 and 3, with the true flow and occlusion mask (from `../shared` when present;
# otherwise a synthetic pair: a texture and a square moving over it).

# %%
seq = SHARED / "data" / "flow" / "sintel" / "alley_1"
if seq.exists():
    a, b = load_image(seq / "clean" / "frame_0002.png"), load_image(seq / "clean" / "frame_0003.png")
    gt = read_flo(seq / "gt" / "frame_0002.flo")
    occ_gt = load_image(seq / "gt" / "occlusions_0002.png")[..., 0] > 127
else:
    rng = np.random.default_rng(0)
    tex = (np.asarray(Image.fromarray((rng.random((60, 120, 3)) * 255).astype(np.uint8)).resize((480, 240))))
    a, b = tex.copy(), np.roll(tex, 3, axis=1)
    a[80:160, 100:180], b[80:160, 110:190] = 255 - tex[80:160, 100:180], 255 - tex[80:160, 100:180]
    gt = np.zeros(a.shape[:2] + (2,), np.float32)
    gt[..., 0], gt[80:160, 100:180, 0] = 3, 10
    occ_gt = np.zeros(a.shape[:2], bool)
    occ_gt[80:160, 180:190] = True
if SMALL:  # a quarter of the size; flow vectors shrink with it
    a, b, occ_gt, gt = shrink(a, 4), shrink(b, 4), shrink(occ_gt, 4), shrink(gt, 4) / 4
print("frames", a.shape)

# %% [markdown]
# ## Flow, and its colours
# `estimate_flow(a, b)` returns F with `a(p) ~ b(p + F(p))`. The Middlebury wheel codes direction as hue and
# length as saturation (white = still).

# %%
flow = estimate_flow(a, b, "dis", "medium")
print(f"DIS medium: end-point error {endpoint_error(flow, gt):.3f} px (zero flow: {endpoint_error(0 * gt, gt):.3f} px)")
top = float(np.hypot(gt[..., 0], gt[..., 1]).max())
panel([a, flow_to_color(flow, top), flow_to_color(gt, top), wheel_image(101)],
      ["frame 2", "DIS flow", "true flow", "colour wheel"], OUT / "03_flow_wheel.png", height=100 if SMALL else 150)

# %% [markdown]
# ## Backward warping
# Pulling frame 3 back along the flow should reproduce frame 2 — except where frame 2 shows something that frame 3
# hides (occlusions), which no backward warp can recover.

# %%
warped = to_img(backward_warp(to_t(b), to_t(flow)))


def psnr(x, y, m):
    return 10 * np.log10(255**2 / ((x.astype(np.float64) - y) ** 2)[m].mean())


vis = ~occ_gt
print(f"PSNR of warped frame 3 vs frame 2 on visible pixels: {psnr(warped, a, vis):.2f} dB "
      f"(frame 3 as is: {psnr(b, a, vis):.2f} dB)")

# %% [markdown]
# ## Occlusions from a forward-backward check
# Follow the flow a->b and then the flow b->a back: where you do not return home, the pixel was probably occluded
# (Sundaram et al. 2010): `|F_ab(p) + F_ba(p + F_ab(p))|^2 < 0.01 (|F_ab|^2 + |F_ba|^2) + 0.5`.

# %%
back = estimate_flow(b, a)
ok = consistency_mask(to_t(flow), to_t(back))[0, 0].numpy()
err = np.abs(warped.astype(int) - a).mean(-1).clip(0, 255).astype(np.uint8)
print(f"flagged {np.mean(~ok):.1%} of pixels; {np.mean(~ok[occ_gt]):.1%} of truly occluded ones")
panel([warped, 255 - 4 * err.clip(0, 63), (~ok * 255).astype(np.uint8), (occ_gt * 255).astype(np.uint8)],
      ["warped frame 3", "error (dark = large)", "forward-backward check", "true occlusions"],
      OUT / "03_occlusion_masks.png", height=100 if SMALL else 150)

# %% [markdown]
# ## Splatting: average vs softmax on a stereo pair
# Middlebury Teddy: view 2 moves to view 6 by `x - d(x)` with the true disparity d. Average splatting blends the
# foreground with the background that lands on the same pixel; softmax splatting with `Z = d` lets the nearer
# point win. (No ../shared: a synthetic near square over a far background.)

# %%
ted = SHARED / "data" / "stereo" / "teddy"
if ted.exists():
    import cv2

    left, right = load_image(ted / "im2.png"), load_image(ted / "im6.png")
    disp = cv2.imread(str(ted / "disp2.pgm"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 4  # value / 4
else:
    rng = np.random.default_rng(1)
    left = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    disp = np.full((120, 160), 4.0, np.float32)
    disp[40:80, 60:100] = 16.0
    right = left.copy()  # not a real view; the figure then only shows the mechanics
if SMALL:
    left, right, disp = shrink(left, 2), shrink(right, 2), shrink(disp, 2) / 2
fl = np.stack([-disp, np.zeros_like(disp)], -1)
fl[disp == 0] = np.nan  # unknown disparity: drop those pixels
avg, cov = forward_splat(to_t(left), to_t(fl), "average", return_coverage=True)
soft = forward_splat(to_t(left), to_t(fl), "softmax", torch.from_numpy(disp)[None, None])
covered = cov[0, 0].numpy() > 0
for name, img in (("no warp", left), ("average", to_img(avg)), ("softmax", to_img(soft))):
    print(f"{name:>8}: {psnr(img, right, covered):.2f} dB on covered pixels")
holes = to_img(soft).copy()
holes[~covered] = (255, 0, 255)
panel([left, to_img(avg), holes, right], ["view 2", "average splat", "softmax splat (holes magenta)", "view 6"],
      OUT / "03_splatting.png", height=100 if SMALL else 170)
