# %% [markdown]
# # 09 · Learned motion priors: RAFT optical flow and Depth Anything V2 depth
#
# Tutorials 03 and 04 moved pixels with classical priors: OpenCV's DIS flow, and a depth map you had to bring.
# Here are the two learned models people download for those jobs, run from i2v's own modules:
#
# * **RAFT** (Teed & Deng 2020, `i2v/models/raft/raft.py`): features of both frames, the correlation of *every*
#   pixel of frame 1 with *every* pixel of frame 2, and a recurrent unit that reads that volume around its
#   current guess and refines the flow, 12 times;
# * **Depth Anything V2** (Yang et al. 2024, `i2v/models/depth_anything/model.py`): a ViT and a DPT head that turn
#   one photo into relative inverse depth, which the camera of tutorial 04 can fly through.
#
# **About the weights.** The reference files in `../shared/reference` (`raft-large/raft.pth`, `dav2-tiny/`) have
# the released files' key layout but **random weights**: they show every mechanism of the models exactly, but
# their flow and depth are *not* meaningful. For real results download the released files and point the tutorial
# at them: `I2V_RAFT_WEIGHTS=raft-things.pth` (princeton-vl/RAFT, `download_models.sh`) and
# `I2V_DAV2_WEIGHTS=depth_anything_v2_vits.pth` (DepthAnything/Depth-Anything-V2). Without `../shared` and without
# those variables the tutorial builds randomly initialised models and synthetic images, and says so.
#
# `python tutorials/09_learned_flow_and_depth.py`; figures go to `$I2V_TUTORIAL_OUT` (default `docs/figures/`);
# `I2V_TUTORIAL_SMALL=1` makes it small (the Sintel pair at 316x130, Depth Anything at input size 266).

# %%
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # use this checkout's i2v
from i2v.figures import panel  # noqa: E402
from i2v.metrics import endpoint_error  # noqa: E402
from i2v.models.depth_anything.model import Config as DepthConfig, DepthAnythingV2  # noqa: E402
from i2v.models.raft.raft import RAFT, Config as RaftConfig, CorrPyramid, coords_grid, pad, unpad  # noqa: E402
from i2v.motion.camera import intrinsics, render_camera_move, reproject  # noqa: E402
from i2v.motion.depth import depth_from_model, depth_preview, estimate_depth, prepare_depth  # noqa: E402
from i2v.motion.flow import estimate_flow, flow_to_color, read_flo  # noqa: E402
from i2v.video import load_image  # noqa: E402

SMALL = os.environ.get("I2V_TUTORIAL_SMALL") == "1"
OUT = Path(os.environ.get("I2V_TUTORIAL_OUT", ROOT / "docs" / "figures"))
OUT.mkdir(parents=True, exist_ok=True)
SHARED = Path(os.environ.get("I2V_SHARED", ROOT.parent / "shared"))
TILE = 100 if SMALL else 110  # figure row height in pixels
torch.set_num_threads(1 if SMALL else max(1, min(4, os.cpu_count() or 1)))
torch.manual_seed(0)


def figure(images, labels, name):
    """i2v.figures.panel, then the PNG re-saved with a 256-colour palette (a third of the size, for the docs)."""
    path = panel(images, labels, OUT / name, height=TILE)
    Image.open(path).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def heat(values, lo=None, hi=None):
    """(h, w) numbers -> (h, w, 3) uint8 RGB, dark = low, yellow = high (OpenCV's viridis)."""
    v = np.asarray(values, np.float64)
    lo, hi = (v.min() if lo is None else lo), (v.max() if hi is None else hi)
    grey = np.clip((v - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(grey, cv2.COLORMAP_VIRIDIS)[..., ::-1].copy()


def blocks(img, cell, size):
    """Show a coarse map at full size: every cell becomes a cell x cell block, padded with black to ``size``."""
    big = np.repeat(np.repeat(img, cell, 0), cell, 1)
    out = np.zeros((*size, 3), np.uint8)
    out[: big.shape[0], : big.shape[1]] = big[: size[0], : size[1]]
    return out


# %% [markdown]
# ## The weights
# `I2V_RAFT_WEIGHTS` / `I2V_DAV2_WEIGHTS` when set; otherwise the random-weight reference files of `../shared`;
# otherwise random models built here (the same architectures; the Depth Anything one at the reference's tiny
# width). Every path goes through the public loaders (`RAFT.from_pretrained`, `i2v.motion.depth`), as a user's
# file would.

# %%
RANDOM_NOTE = "RANDOM weights: the mechanics are exact, the {} is not meaningful"
raft_file = os.environ.get("I2V_RAFT_WEIGHTS") or SHARED / "reference" / "raft-large" / "raft.pth"
if os.environ.get("I2V_RAFT_WEIGHTS"):
    raft, raft_what = RAFT.from_pretrained(raft_file), f"your weights {raft_file}"
elif Path(raft_file).exists():
    raft = RAFT.from_pretrained(raft_file)
    raft_what = (f"the reference file {raft_file} -- {RANDOM_NOTE.format('flow')}; set I2V_RAFT_WEIGHTS to "
                 "raft-things.pth for real flow")
else:
    raft = RAFT(RaftConfig()).eval()  # the large model (raft-things.pth layout), PyTorch's default init
    raft_what = (f"no {raft_file} (../shared is absent): a randomly initialised RAFT large -- "
                 f"{RANDOM_NOTE.format('flow')}; set I2V_RAFT_WEIGHTS to raft-things.pth")
print("RAFT:", raft_what)

dav2_file = os.environ.get("I2V_DAV2_WEIGHTS") or SHARED / "reference" / "dav2-tiny" / "depth_anything_v2_tiny.pth"
if os.environ.get("I2V_DAV2_WEIGHTS"):
    dav2_what = f"your weights {dav2_file}"
elif Path(dav2_file).exists():
    dav2_what = (f"the tiny reference file {dav2_file} (width 128) -- {RANDOM_NOTE.format('depth')}; set "
                 "I2V_DAV2_WEIGHTS to depth_anything_v2_vits.pth for real depth")
else:  # the reference's tiny layout, random, saved to a file so the same loader reads it
    torch.manual_seed(0)
    tiny = DepthAnythingV2(DepthConfig(width=128, heads=2, mlp_hidden=512, features=32, out_channels=(24, 48, 96, 128)))
    with torch.no_grad():  # lift the last conv's bias so the final ReLU does not zero a random network's output
        tiny.depth_head.scratch.output_conv2[2].bias += 1.0
    dav2_file = Path(tempfile.mkdtemp()) / "depth_anything_v2_random_tiny.pth"
    torch.save(tiny.state_dict(), dav2_file)
    dav2_what = (f"no reference file (../shared is absent): a randomly initialised tiny Depth Anything V2 -- "
                 f"{RANDOM_NOTE.format('depth')}; set I2V_DAV2_WEIGHTS to depth_anything_v2_vits.pth")
print("Depth Anything V2:", dav2_what)
cfg = raft.config
R = cfg.corr_radius
print(f"RAFT {'small' if cfg.small else 'large'}: features D = {cfg.feature_dim}, hidden {cfg.hidden_dim}, "
      f"context {cfg.context_dim}, lookup radius r = {R} -> {cfg.corr_planes} correlation features per pixel")

# %% [markdown]
# ## A Sintel pair with ground truth
# MPI-Sintel `alley_1`, frames 2 -> 3 and the true flow. The small run resizes them to 316x130 with
# `cv2.INTER_AREA` (the size of the RAFT reference case), scaling the flow vectors with the image. No `../shared`:
# a synthetic pair (a texture drifting 3 px right, a square moving 10 px over it).

# %%
seq = SHARED / "data" / "flow" / "sintel" / "alley_1"
if seq.exists():
    a, b = load_image(seq / "clean" / "frame_0002.png"), load_image(seq / "clean" / "frame_0003.png")
    gt = read_flo(seq / "gt" / "frame_0002.flo")
    if SMALL:
        (h0, w0), (h, w) = a.shape[:2], (130, 316)
        a, b = (cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA) for x in (a, b))
        gt = cv2.resize(gt, (w, h), interpolation=cv2.INTER_AREA) * np.float32([w / w0, h / h0])
    pair = "Sintel alley_1 frames 2->3"
else:
    print(f"no {seq} (../shared is absent): a synthetic pair instead")
    h, w = (136, 320) if SMALL else (272, 640)
    rng = np.random.default_rng(0)
    tex = np.asarray(cv2.resize((rng.random((h // 4, w // 4, 3)) * 255).astype(np.uint8), (w, h)))
    a, b = tex.copy(), np.roll(tex, 3, axis=1)
    y0, x0, s = h // 3, w // 4, h // 3
    a[y0:y0 + s, x0:x0 + s] = b[y0:y0 + s, x0 + 10:x0 + 10 + s] = 255 - tex[y0:y0 + s, x0:x0 + s]
    gt = np.zeros((h, w, 2), np.float32)
    gt[..., 0], gt[y0:y0 + s, x0:x0 + s, 0] = 3, 10
    pair = "a synthetic pair"
H, W = a.shape[:2]
print(f"{pair}: {W}x{H}; zero flow end-point error {endpoint_error(0 * gt, gt):.4f} px")

# %% [markdown]
# ## Features and the all-pairs correlation volume
# The images (scaled to [-1, 1], replicate-padded to multiples of 8) go through the feature encoder g: D-channel
# features at 1/8 resolution, F1 = g(I1), F2 = g(I2). Then every pixel p of frame 1 meets every pixel q of frame 2:
#
# $$C(p, q) = \frac{\langle F_1(p), F_2(q) \rangle}{\sqrt{D}}, \qquad
#   C^{m+1}(p, \cdot) = \text{avgpool}_{2\times 2}\, C^m(p, \cdot), \quad m = 0, 1, 2$$
#
# a (h w) x (h w) volume and a 4-level pyramid pooled over frame 2's dimensions only: pixel p keeps its full 1/8
# resolution, while the same (2r+1)^2 window reaches r, 2r, 4r, 8r cells away on levels 0..3 (r = 4: up to
# 256 px). Below, one pixel's slice
# C^m(p, .) over the whole second frame at each level (circle: where the true flow says p went; box: the
# (2r+1)^2 window RAFT reads at the start, f = 0), and the 4 x (2r+1)^2 numbers it reads there: the motion
# encoder's input at that pixel. Channel order (the trained weights depend on it): level, then x offset, then y.

# %%
img1, img2 = (torch.from_numpy(np.array(x)).permute(2, 0, 1)[None].float() for x in (a, b))  # 0..255
(p1, pads), (p2, _) = pad(img1), pad(img2)  # (1, 3, H8, W8)
Hp, Wp = p1.shape[-2:]
h8, w8 = Hp // 8, Wp // 8
gt_t = torch.from_numpy(gt).permute(2, 0, 1)[None]
gt_low = F.avg_pool2d(pad(gt_t)[0], 8) / 8  # (1, 2, h8, w8): the true flow on RAFT's grid, in 1/8 pixels
with torch.no_grad():
    f1, f2 = raft.fnet(torch.cat([2 * p1 / 255 - 1, 2 * p2 / 255 - 1])).chunk(2)  # (1, D, h8, w8) each
    corr = CorrPyramid(f1, f2, R)  # corr.pyramid[m]: (h8 w8, 1, h8 / 2^m, w8 / 2^m)
# the pixel: the 1/8 cell with the longest true motion, at least r cells from the border
mag = gt_low[0].norm(dim=0)
inner = torch.zeros_like(mag, dtype=torch.bool)
inner[R:-R, R:-R] = True
i, j = divmod(int(torch.where(inner, mag, -1.0).argmax()), w8)
u, v = gt_low[0, :, i, j].tolist()
print(f"pixel p = cell (x {j}, y {i}) of the {w8}x{h8} grid (image pixels ~({8 * j + 3.5 - pads[0]:.1f}, "
      f"{8 * i + 3.5 - pads[2]:.1f})); true motion ({8 * u:.2f}, {8 * v:.2f}) px = ({u:.2f}, {v:.2f}) cells")


def correlation_figure(volume, name, what):
    """Frame 1 with p, C^m(p, .) for m = 0..3 over frame 2, and the 4 lookup windows at f = 0."""
    pyramid = volume.pyramid
    k = i * w8 + j  # row of the volume that belongs to p
    frame1 = pad(img1)[0][0].permute(1, 2, 0).numpy().astype(np.uint8).copy()
    thick = max(2, Wp // 200)  # marks stay visible when the figure shrinks the frame
    cv2.circle(frame1, (8 * j + 4, 8 * i + 4), 3 * thick, (255, 0, 0), thick)
    tiles, labels = [frame1], ["frame 1, pixel p"]
    for m, level in enumerate(pyramid):
        c = level[k, 0].numpy()  # (h8 / 2^m, w8 / 2^m)
        cell = 8 * 2**m
        t = blocks(heat(c), cell, (Hp, Wp))
        cx, cy = (j + u) / 2**m, (i + v) / 2**m  # the true match in level-m cells
        cv2.circle(t, (int(cx * cell + cell / 2), int(cy * cell + cell / 2)), 3 * thick, (255, 255, 255), thick)
        x0, y0 = (j / 2**m - R) * cell, (i / 2**m - R) * cell
        cv2.rectangle(t, (int(x0), int(y0)), (int(x0 + (2 * R + 1) * cell), int(y0 + (2 * R + 1) * cell)),
                      (255, 60, 60), thick)
        tiles.append(t)
        labels.append(f"C^{m}(p, .) {c.shape[1]}x{c.shape[0]}")
    look = volume(coords_grid(1, h8, w8, "cpu"))  # (1, 4 (2r+1)^2, h8, w8): the lookup at p + f, f = 0
    win = look[0, :, i, j].reshape(4, 2 * R + 1, 2 * R + 1).numpy()  # (level, x offset, y offset)
    n = 2 * R + 1
    grid = np.full((2 * n * 10 + 4, 2 * n * 10 + 4, 3), 255, np.uint8)
    for m in range(4):
        lv = pyramid[m][k, 0].numpy()
        colours = heat(win[m].T, lv.min(), lv.max())  # .T: rows = y offset for display
        r0, c0 = (m // 2) * (n * 10 + 4), (m % 2) * (n * 10 + 4)
        grid[r0:r0 + n * 10, c0:c0 + n * 10] = np.repeat(np.repeat(colours, 10, 0), 10, 1)
    tiles.append(grid)
    labels.append(f"lookup: 4 x {n}x{n}")
    figure(tiles, labels, name)
    c0 = pyramid[0][k, 0]
    y, x = divmod(int(c0.argmax()), c0.shape[1])
    print(f"{what}: the level-0 peak of C(p, .) is at offset ({x - j:+d}, {y - i:+d}) cells from p "
          f"(true: ({u:+.2f}, {v:+.2f})); C(p, p) = {float(c0[i, j]):.3f}, max {float(c0.max()):.3f}")
    return win


win = correlation_figure(corr, "09_correlation.png", "RAFT features")
block = corr.pyramid[0][i * w8 + j, 0, i - R:i + R + 1, j - R:j + R + 1].numpy()  # C^0 around p: rows y, columns x
print(f"the level-0 lookup window at f = 0 is the volume's {2 * R + 1}x{2 * R + 1} block around p, x offset first: "
      f"max difference {np.abs(win[0].T - block).max():.1e}")

# %% [markdown]
# With random weights the features are random filters of the image: the slice has structure, but its peak need
# not sit on the true match. What a matching feature gives is easy to see with a hand-made one: the grey image
# blurred (Gaussian, sigma 4 px) and sampled on an 8x8 grid of points 3 px apart around each cell, a 64-vector,
# mean removed and scaled to norm D^(1/4) so that C is the cosine similarity of the two patches (classical block
# matching). The same `CorrPyramid` turns it into a volume. Trained RAFT features give sharper peaks still, and
# keep them under lighting changes, blur and large motion. Printed: how often the level-0 peak lands within one
# cell of the true match, over all pixels (and how often zero motion would).

# %%
def patch_features(img):  # (1, 3, H8, W8) 0..255 -> (1, 64, h8, w8): blurred 22x22 patches, cosine scale
    grey = cv2.GaussianBlur(img[0].mean(0).numpy(), (0, 0), 4)
    f = F.unfold(torch.from_numpy(grey)[None, None], 8, dilation=3, padding=7, stride=8)  # (1, 64, h8 w8)
    f = f.reshape(1, 64, h8, w8)
    f = f - f.mean(1, keepdim=True)
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-6) * 64 ** 0.25


def peak_hits(volume):
    """Fraction of pixels whose level-0 correlation peak is within one cell of the true match."""
    peak = volume.pyramid[0][:, 0].flatten(1).argmax(1).reshape(h8, w8)
    py, px = peak // w8, peak % w8
    gy, gx = torch.meshgrid(torch.arange(h8), torch.arange(w8), indexing="ij")
    return float((torch.hypot(px - gx - gt_low[0, 0], py - gy - gt_low[0, 1]) < 1).float().mean())


patches = CorrPyramid(patch_features(p1), patch_features(p2), R)
correlation_figure(patches, "09_correlation_patches.png", "blurred patches")
still = float((gt_low[0].norm(dim=0) < 1).float().mean())  # pixels whose true match is within 1 cell of p itself
print(f"level-0 peak within 1 cell of the true match: RAFT features {peak_hits(corr):.1%}, blurred patches "
      f"{peak_hits(patches):.1%} (zero motion is within 1 cell for {still:.1%})")

# %% [markdown]
# ## One GRU update, and twelve
# The context encoder reads frame 1 once: h_0 = tanh(.), x = relu(.). Each iteration looks up the correlation
# around p + f_k, encodes it with f_k into motion features, and a convolutional GRU updates the hidden state:
#
# $$z = \sigma(\text{conv}_z[h, x']),\quad r = \sigma(\text{conv}_r[h, x']),\quad
#   q = \tanh(\text{conv}_q[r \odot h, x']),\quad h \leftarrow (1 - z) \odot h + z \odot q$$
#
# ($x'$ = context and motion features; the large model runs it twice, 1x5 then 5x1 kernels). The flow head turns
# h into a residual, $f_{k+1} = f_k + \Delta f(h)$, and the next lookup happens at the new position: RAFT searches
# by lookup, not by warping. Forward hooks on `update_block.gru` and `update_block` catch iteration 1: the update
# gate z (of the first, horizontal step; channel mean, dark = keep h, bright = replace it), how much h changed,
# and the residual Delta f. Then the full-resolution flow after iterations 1, 2, 4, 12 (convex upsampling of
# 8 f; `return_all=True`), all in one colour scale: the true flow's longest vector (longer ones are darker).

# %%
ITERS = 12
caught = {}


def catch(name):  # a forward hook that keeps the first call's (inputs, output); returning None keeps the output
    def hook(module, inputs, output):
        caught.setdefault(name, (inputs, output))
    return hook


hooks = [raft.update_block.gru.register_forward_hook(catch("gru")),
         raft.update_block.register_forward_hook(catch("update"))]
with torch.no_grad():
    out = raft(p1, p2, iters=ITERS, return_all=True)
    for hk in hooks:
        hk.remove()
    (h_before, x_in), h_after = caught["gru"]  # SepConvGRU.forward(h, x') -> h
    gru = raft.update_block.gru
    convz = gru.convz1 if hasattr(gru, "convz1") else gru.convz  # large: SepConvGRU's horizontal step
    z = torch.sigmoid(convz(torch.cat([h_before, x_in], 1)))[0].mean(0)  # (h8, w8), channel mean
    dh = (h_after - h_before)[0].abs().mean(0)
    delta = caught["update"][1][1][0].permute(1, 2, 0).numpy() * 8  # 1/8-cell residual -> image pixels
flows = [unpad(f, pads)[0].permute(1, 2, 0).numpy() for f in out["flow_predictions"]]  # (H, W, 2) per iteration
for k, f in enumerate(flows, 1):
    if k in (1, 2, 4, 8) or k == ITERS:
        print(f"RAFT after iteration {k:2d}: end-point error {endpoint_error(f, gt):.3f} px")
print(f"iteration 1: update gate z in [{float(z.min()):.3f}, {float(z.max()):.3f}] (mean {float(z.mean()):.3f}), "
      f"mean |h_1 - h_0| {float(dh.mean()):.4f}, |Delta f| up to {np.hypot(*delta.transpose(2, 0, 1)).max():.3f} px")
top = float(np.hypot(*gt.transpose(2, 0, 1)).max())  # one colour scale for every flow: the truth's longest vector


def crop(img):  # a picture of the padded 1/8 grid -> the image's own size (what unpad does to tensors)
    left, right, top_, bottom = pads
    return img[top_:Hp - bottom, left:Wp - right]


figure([a, crop(blocks(heat(z.numpy()), 8, (Hp, Wp))), crop(blocks(heat(dh.numpy()), 8, (Hp, Wp))),
       crop(blocks(flow_to_color(delta, top), 8, (Hp, Wp)))],
      ["frame 1", "iteration 1: gate z", "|h_1 - h_0|", "Delta f (flow colours)"], "09_gru_update.png")
shown = sorted({1, 2, 4, ITERS})
figure([flow_to_color(flows[k - 1], top) for k in shown] + [flow_to_color(gt, top)],
      [f"iteration {k}" for k in shown] + [f"true flow (colours: {top:.1f} px)"], "09_iterations.png")

# %% [markdown]
# ## RAFT against DIS, with the ground truth
# The same pair through `estimate_flow`, the one table of flow methods (`FLOW_METHODS`): OpenCV's DIS and RAFT.
# Error maps: |F - F_true| per pixel, black = 0, white >= 5 px. With the real raft-things.pth, RAFT's advantage is
# on large motions (docs/motion.md: DIS has 17.7 px mean error on Sintel market_5), where the all-pairs volume
# sees the match that DIS's coarse-to-fine search misses. The full run prints the three Sintel scenes of
# `../shared` at full size.

# %%
dis = estimate_flow(a, b, "dis", "medium")
raft_flow = estimate_flow(a, b, "raft", model=raft, iters=ITERS)
e_dis, e_raft = endpoint_error(dis, gt), endpoint_error(raft_flow, gt)
print(f"estimate_flow(a, b, 'raft') = the last iteration above (max difference "
      f"{float(np.abs(raft_flow - flows[-1]).max()):.1e} px)")
print(f"end-point error on {pair} ({W}x{H}): DIS medium {e_dis:.4f} px, RAFT ({ITERS} iterations) {e_raft:.4f} px, "
      f"zero flow {endpoint_error(0 * gt, gt):.4f} px")


def err_map(f):
    return (np.clip(np.hypot(*(f - gt).transpose(2, 0, 1)) / 5, 0, 1) * 255).astype(np.uint8)


figure([a, flow_to_color(gt, top), flow_to_color(dis, top), flow_to_color(raft_flow, top), err_map(dis),
        err_map(raft_flow)],
      ["frame 2", "true flow", f"DIS: {e_dis:.2f} px", f"RAFT: {e_raft:.2f} px", "DIS error", "RAFT error"],
      "09_raft_vs_dis.png")
if not SMALL and (SHARED / "data" / "flow" / "sintel").exists():  # every Sintel scene in ../shared
    print("| scene | zero flow | DIS medium | RAFT |")
    for scene in sorted(p for p in (SHARED / "data" / "flow" / "sintel").iterdir() if p.is_dir()):
        sa, sb = load_image(scene / "clean" / "frame_0002.png"), load_image(scene / "clean" / "frame_0003.png")
        sg = read_flo(scene / "gt" / "frame_0002.flo")
        print(f"| {scene.name} | {endpoint_error(0 * sg, sg):.2f} | {endpoint_error(estimate_flow(sa, sb), sg):.2f} | "
              f"{endpoint_error(estimate_flow(sa, sb, 'raft', model=raft), sg):.2f} |")

# %% [markdown]
# ## A depth map from Depth Anything V2
# The photo is resized keeping its aspect so both sides are >= the input size and multiples of 14 (bicubic),
# normalised with ImageNet's mean and std, cut into 14x14 patches for the ViT; four of its blocks feed the DPT
# head, whose output is resized back. What comes out is **relative inverse depth** d ~ a / z + b (larger =
# nearer, unknown scale a and shift b). Middlebury Teddy has a true disparity, which *is* inverse depth up to scale,
# so the Pearson correlation of d with it on the known pixels says how good d is (1 = perfect up to scale and
# shift). No `../shared`: the synthetic scene of tutorial 04 (a ground plane and a near disc).

# %%
teddy = SHARED / "data" / "stereo" / "teddy"
if teddy.exists():
    photo = load_image(teddy / "im2.png")
    true_disp = cv2.imread(str(teddy / "disp2.pgm"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 4  # 0 = unknown
    scene = "Middlebury Teddy"
else:
    print(f"no {teddy} (../shared is absent): the synthetic scene instead")
    hh, ww = 180, 240
    yy, xx = np.mgrid[0:hh, 0:ww]
    rng = np.random.default_rng(0)
    photo = np.stack([(xx * 0.8) % 256, (yy * 1.0) % 256, rng.random((hh, ww)) * 80 + 100], -1).astype(np.uint8)
    true_disp = (0.3 + 0.7 * yy / hh).astype(np.float32)
    disc = (xx - ww // 2) ** 2 + (yy - hh // 2) ** 2 < (hh // 5) ** 2
    true_disp[disc], photo[disc] = 1.5, (220, 60, 60)
    scene = "the synthetic scene"
INPUT = 266 if SMALL else 518  # the network's short side: 518 as trained; the small run uses the reference's 266
inv = estimate_depth(photo, dav2_file, input_size=INPUT)  # (h, w) float32, larger = nearer
known = true_disp > 0
r = float(np.corrcoef(inv[known].astype(np.float64), true_disp[known].astype(np.float64))[0, 1])
print(f"Depth Anything V2 on {scene} ({photo.shape[1]}x{photo.shape[0]}, input size {INPUT}): inverse depth "
      f"min {inv.min():.4f}, max {inv.max():.4f}, mean {inv.mean():.4f}; correlation with the true disparity {r:.3f}")

# %% [markdown]
# ## What the camera does with it
# The camera needs depth z > 0. `depth_from_model` (= `estimate_depth` + `to_camera_depth`) fixes the unknown
# shift by a stated range R (farthest / nearest), since d = 0 (the ReLU's floor, e.g. sky) would otherwise be at
# infinity:
#
# $$z = \frac{1}{d / \max d + 1 / (R - 1)}, \qquad z \leftarrow z / \text{median}(z)$$
#
# A sideways camera slide (`truck-right` by b median depths) then shifts each pixel by f b / z: near pixels move
# more than far ones, and that parallax is the whole 3D effect. Below, the last frame of an orbit with holes
# (disocclusions) in magenta before inpainting, driven by the model's depth, by the true disparity, and by the
# stated fallback prior (a tilted ground plane) that `i2v camera` uses without any depth.

# %%
R_RANGE = 10.0
dm = depth_from_model(photo, dav2_file, input_size=INPUT, depth_range=R_RANGE)
zmin, zmax = float(dm.depth.min()), float(dm.depth.max())
print(f"camera depth: nearest {zmin:.4f}, farthest {zmax:.4f} (ratio {zmax / zmin:.3f}, R = {R_RANGE:g}), median 1")
ph, pw = photo.shape[:2]
K = intrinsics(ph, pw, 60.0)
B = 0.12  # truck-right's default amount
shift, _ = reproject(torch.from_numpy(dm.depth), K, torch.eye(3, dtype=torch.float64),
                     torch.tensor([-B, 0.0, 0.0], dtype=torch.float64))  # X' = X - C, C = (b, 0, 0)
sx = -shift[0].numpy()
print(f"truck-right by {B} median depths, f = {float(K[0, 0]):.2f} px: pixels slide left by f b / z, "
      f"{sx.min():.3f} px (farthest) to {sx.max():.3f} px (nearest)")
views = [photo, depth_preview(inv), heat(np.log(dm.depth))]
labels = ["photo", "d (bright: near)", "log z (bright: far)"]
sources = [("model depth", dm), ("true disparity", prepare_depth(true_disp, "disparity", (ph, pw))),
           ("fallback prior", None)]
for name, depth in sources:
    frames, holes = render_camera_move(photo, depth, move="orbit", frames=2, amount=10.0, easing="linear",
                                       progress=False, return_holes=True, verbose=False)
    last = (frames[-1].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # frames=2: photo, end of the move
    last[holes[-1, 0].numpy()] = (255, 0, 255)
    views.append(last)
    labels.append(f"orbit: {name}")
    print(f"orbit by 10 degrees with the {name}: {holes[-1].float().mean():.1%} of the last frame was disoccluded")
figure(views, labels, "09_depth_camera.png")
