# %% [markdown]
# # 04 · A camera through a photo, and a photo that loops
#
# Two motion priors that need no diffusion model:
#
# 1. **Depth-driven camera** (`i2v/motion/camera.py`): lift every pixel to 3D with its depth and a pinhole camera,
#    move the camera, project back, splat with *nearer points winning*, and inpaint the holes that open up behind
#    foreground edges.
# 2. **Eulerian cinemagraph** (`i2v/motion/eulerian.py`, Holynski et al. 2021): a *static* velocity field painted
#    with a motion brush, integrated over time, rendered with symmetric splatting so the last frame runs into the
#    first without a jump.
#
# `python tutorials/04_camera_and_cinemagraph.py`; figures go to `$I2V_TUTORIAL_OUT` (default `docs/figures/`);
# `I2V_TUTORIAL_SMALL=1` makes it tiny.

# %%
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # use this checkout's i2v
from i2v.motion.camera import MOVES, intrinsics, render_camera_move, render_view, trajectory, unproject  # noqa: E402
from i2v.motion.depth import prepare_depth  # noqa: E402
from i2v.motion.eulerian import brush_to_motion, cinemagraph  # noqa: E402
from i2v.motion.flow import flow_to_color  # noqa: E402
from i2v.video import load_image  # noqa: E402
from i2v.figures import panel  # noqa: E402

SMALL = os.environ.get("I2V_TUTORIAL_SMALL") == "1"
OUT = Path(os.environ.get("I2V_TUTORIAL_OUT", ROOT / "docs" / "figures"))
OUT.mkdir(parents=True, exist_ok=True)
SHARED = Path(os.environ.get("I2V_SHARED", ROOT.parent / "shared"))
if SMALL:
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead


def u8(frame):  # (3, h, w) float in [0, 1] -> (h, w, 3) uint8
    return (frame.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


# %% [markdown]
# ## A photo and its depth
# Middlebury Teddy with its true disparity (8-bit, disparity = value / 4, 0 = unknown) from `../shared` when present;
# otherwise a synthetic scene: a ground plane and a near disc. Disparity becomes depth 1/d, normalised to median 1,
# and unknown pixels take the farther of their left/right neighbours.

# %%
ted = SHARED / "data" / "stereo" / "teddy"
if ted.exists():
    import cv2

    photo = load_image(ted / "im2.png")
    disp = cv2.imread(str(ted / "disp2.pgm"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 4
else:
    h, w = 240, 320
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    photo = np.stack([(xx * 0.8) % 256, (yy * 1.0) % 256, (rng.random((h, w)) * 80 + 100)], -1).astype(np.uint8)
    disp = (0.3 + 0.7 * yy / h).astype(np.float32)
    disc = (xx - 160) ** 2 + (yy - 120) ** 2 < 50**2
    disp[disc], photo[disc] = 1.5, (220, 60, 60)
if SMALL:
    photo, disp = photo[::3, ::3], disp[::3, ::3]
h, w = disp.shape
dm = prepare_depth(disp, "disparity", (h, w))
print(f"image {w}x{h}; depth range {dm.depth.min():.2f} .. {dm.depth.max():.2f} (median 1)", dm.note)

# %% [markdown]
# ## The point cloud, from above and from the moving camera
# `unproject` gives X = z K^-1 (x, y, 1). Seen from above (x against z) the scene is a set of layers. An orbit moves
# the camera on a circle around the point at median depth; `render_view` splats the cloud into the new camera
# with softmax weights z^-60 (nearer wins). Magenta: pixels nothing lands on — the disocclusions to fill.

# %%
K = intrinsics(h, w, 60.0)
depth = torch.from_numpy(dm.depth)
X = unproject(depth, K).reshape(3, -1).numpy()  # (3, h*w)
cols = photo.reshape(-1, 3)
top = np.full((160, 200, 3), 255, np.uint8)  # bird's-eye: x -> column, z -> row (far at the top)
xs = ((X[0] - X[0].min()) / np.ptp(X[0]) * 199).astype(int)
zs = (159 - (X[2] - X[2].min()) / np.ptp(X[2]) * 150).astype(int)
order = np.argsort(-X[1])  # draw high points last
top[zs[order], xs[order]] = cols[order]
cams = trajectory("orbit", 5, 14.0, "linear")
img = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 255
views, labels = [top], ["from above (x, z)"]
for i in (2, 4):
    R_c, C, fs = cams[i]
    frame, hole = render_view(img, depth, K, R_c, C, fs)
    v = u8(frame)
    v[hole.numpy()] = (255, 0, 255)
    views.append(v)
    labels.append(f"orbit {14 * i / 4:.0f} deg, holes magenta")
    cx = int((C[0].item() - X[0].min()) / np.ptp(X[0]) * 199)
    cz = int(159 - (C[2].item() - X[2].min()) / np.ptp(X[2]) * 150)
    top[max(0, min(159, cz)) - 2: max(0, min(159, cz)) + 3, max(0, min(199, cx)) - 2: max(0, min(199, cx)) + 3] = (0, 0, 255)
filled = render_camera_move(photo, dm, move="orbit", frames=5, amount=14.0, easing="linear", progress=False,
                            verbose=False)[-1]
views.append(u8(filled))
labels.append("holes inpainted (Telea)")
panel(views, labels, OUT / "04_camera_point_cloud.png", height=110 if SMALL else 180)

# %% [markdown]
# ## The moves
# Every move is a small function of eased time s in [0, 1] returning the camera rotation, centre and focal
# scale; frame 0 is always the photo. The last frame of each:

# %%
names = ["dolly-in", "truck-right", "pan-left", "pedestal-up", "orbit", "zoom-in", "dolly-zoom"]
last = [u8(render_camera_move(photo, dm, move=m, frames=3, progress=False, verbose=False)[-1]) for m in names]
panel([photo] + last, ["photo"] + names, OUT / "04_camera_moves.png", height=70 if SMALL else 110)
print("all moves:", ", ".join(MOVES))

# %% [markdown]
# ## A cinemagraph from a motion brush
# Two painted regions: the top band drifts right, the lower-left corner drifts up-right. Symmetric splatting:
# frame t mixes the photo pushed forward t steps (weight 1 - t/N) and pushed backward N - t steps (weight t/N),
# so frame N is the photo again and the loop has no seam.

# %%
brush = {"regions": [
    {"box": [0, 0, w, h // 3], "direction": 0, "speed": 0.5, "feather": 6},
    {"polygon": [[0, h], [0, 2 * h // 3], [w // 3, h]], "direction": -60, "speed": 0.6, "feather": 6}]}
N = 12 if SMALL else 40
loop = cinemagraph(photo, brush, frames=N, include_end=True, progress=False)
diffs = (loop[1:] - loop[:-1]).abs().mean(dim=(1, 2, 3)) * 255
print(f"loop of {N}: frame N == frame 0: {torch.equal(loop[N], loop[0])}; mean |frame change| "
      f"{diffs[:-1].mean():.3f} (max {diffs[:-1].max():.3f}), at the seam {diffs[-1]:.3f} (grey levels)")
motion = brush_to_motion(brush, h, w)
strip = [flow_to_color(motion)] + [u8(loop[t]) for t in np.linspace(0, N - 1, 5).astype(int)]
panel(strip, ["motion brush"] + [f"frame {t}" for t in np.linspace(0, N - 1, 5).astype(int)],
      OUT / "04_cinemagraph_strip.png", height=90 if SMALL else 140)
