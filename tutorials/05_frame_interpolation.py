# %% [markdown]
# # 05 · Frame interpolation: from two frames to the one in between
#
# A generated clip has 14-25 frames; to play it smoothly we need the frames *between* them. Blending the two
# frames (cross-dissolve) gives ghosts: every moving edge appears twice, half transparent. Instead we find
# where every pixel of the in-between frame comes from in each input — the *intermediate flows* F_t->0 and
# F_t->1 — sample both inputs there, and blend the two samples, trusting the one that actually sees the pixel.
#
# This tutorial builds a scene whose true in-between frame we know (a textured disc moving over a textured
# background), then looks at every piece: the flows, the intermediate flows, the occlusion maps, the blend
# weights, and finally RIFE's five coarse-to-fine blocks. Figures go to `$I2V_TUTORIAL_OUT` (default
# `docs/figures/`); `I2V_TUTORIAL_SMALL=1` runs it at a tiny size in seconds.

# %%
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw

from i2v.interpolate import flow_based as fb
from i2v.models.rife import ifnet as rife

SMALL = os.environ.get("I2V_TUTORIAL_SMALL") == "1"
OUT = Path(os.environ.get("I2V_TUTORIAL_OUT", "docs/figures"))
OUT.mkdir(parents=True, exist_ok=True)
H, W = (64, 128) if SMALL else (128, 256)
SHIFT = 8 if SMALL else 16  # disc motion between the two inputs, pixels
torch.manual_seed(0)


# %% [markdown]
# ## A scene with a known answer
# Background: smooth random texture. Foreground: a disc with its own texture, at x0 in frame 0, x0 + SHIFT in
# frame 1, and x0 + t * SHIFT in the true frame at time t.

# %%
def texture(h, w, cells, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, cells, cells * w // h, generator=g)
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    return (x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)


BG, FG = texture(H, W, 8, 1), texture(H, W, 4, 2)


def scene(dx: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    cx, cy, r = W * 0.35 + dx, H * 0.5, H * 0.3
    inside = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
    fg = np.roll(FG, int(round(dx)), axis=1)  # the disc's texture moves with it
    return np.where(inside[..., None], fg, BG)


I0, TRUTH, I1 = scene(0), scene(SHIFT / 2), scene(SHIFT)


# %% [markdown]
# Small drawing helpers (no matplotlib): flows as colour (hue = direction, brightness = speed), maps as grey.

# %%
def flow_rgb(f: torch.Tensor, max_mag: float | None = None) -> np.ndarray:
    u, v = f[0, 0].numpy(), f[0, 1].numpy()
    mag, ang = cv2.cartToPolar(u.astype(np.float32), v.astype(np.float32), angleInDegrees=True)
    max_mag = max_mag or max(float(mag.max()), 1e-6)
    hsv = np.stack([ang / 2, np.full_like(ang, 255), np.clip(mag / max_mag * 255, 0, 255)], -1).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def grey(m: torch.Tensor) -> np.ndarray:
    m = m[0, 0].clamp(0, 1).numpy() if isinstance(m, torch.Tensor) else m
    return np.repeat((m * 255).astype(np.uint8)[..., None], 3, -1)


def rgb(x) -> np.ndarray:
    return (x[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) if isinstance(x, torch.Tensor) else x


def grid(rows: list[list[tuple[str, np.ndarray]]], name: str) -> Path:
    """Save a grid of labelled tiles as a PNG."""
    h, w = rows[0][0][1].shape[:2]
    pad, label = 4, 14
    cols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (cols * (w + pad) + pad, len(rows) * (h + label + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, row in enumerate(rows):
        for j, (text, img) in enumerate(row):
            x, y = pad + j * (w + pad), pad + i * (h + label + pad)
            draw.text((x, y), text, fill="black")
            canvas.paste(Image.fromarray(img), (x, y + label))
    path = OUT / name
    canvas.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(path, optimize=True)  # small PNGs
    print("wrote", path)
    return path


# %% [markdown]
# ## 1. Bidirectional flow and intermediate flows
# DIS gives F_0->1 and F_1->0. For the frame at t we need F_t->0 (where to look in I_0). The *linear
# approximation* (Super SloMo) mixes the two flows at the same pixel; it is right inside smooth motion but
# smears motion boundaries. *Flow projection* moves every pixel along its flow to time t and drops its flow
# there (forward splatting), so the boundary sits where the disc really is at time t.

# %%
x0, x1 = (torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255 for im in (I0, I1))  # (1, 3, H, W) in [0, 1]
f01, f10 = fb.bidirectional_flow(I0, I1)
lin_t0, _ = fb.intermediate_flows(f01, f10, 0.5, "linear")
spl_t0, _ = fb.intermediate_flows(f01, f10, 0.5, "splat")
m = SHIFT
grid([[("I0", I0), ("I1", I1), ("true I_0.5", TRUTH)],
      [("F 0->1", flow_rgb(f01, m)), ("F 1->0", flow_rgb(f10, m)), ("", np.full_like(I0, 255))],
      [("F t->0 linear", flow_rgb(lin_t0, m)), ("F t->0 projected", flow_rgb(spl_t0, m)), ("", np.full_like(I0, 255))]],
     "05_flows.png")

# %% [markdown]
# ## 2. Occlusions: who can see the pixel?
# Background in front of the disc is covered in I_1; behind it, uncovered. A pixel's flow that does not come
# back (F_0->1(p) + F_1->0(p + F_0->1(p)) far from 0) marks such a place. At time t, content only I_0 sees
# must not be taken from I_1: the blend weight of warped I_0 (white = all I_0) shows that.

# %%
out_lin = fb.blend(x0, x1, f01, f10, 0.5, intermediate="linear")
out = fb.blend(x0, x1, f01, f10, 0.5, intermediate="splat")
grid([[("occluded in I1 (on I0)", grey(out["occ0"])), ("occluded in I0 (on I1)", grey(out["occ1"])),
       ("weight of warped I0", grey(out["weight0"]))],
      [("warped I0", rgb(out["warped0"])), ("warped I1", rgb(out["warped1"])), ("holes", grey(out["holes"]))]],
     "05_occlusion.png")


# %% [markdown]
# ## 3. The result, against the truth

# %%
def psnr(a, b):
    return 10 * np.log10(255**2 / max(((a.astype(float) - b.astype(float)) ** 2).mean(), 1e-10))


dissolve = ((I0.astype(float) + I1) / 2).round().astype(np.uint8)
results = {"cross-dissolve": dissolve, "linear flows": rgb(out_lin["frame"]), "projected flows": rgb(out["frame"])}
for k, v in results.items():
    print(f"{k:>16}: {psnr(v, TRUTH):5.2f} dB")
grid([[(f"{k} {psnr(v, TRUTH):.1f} dB", v) for k, v in results.items()],
      [(f"|error| x4 {k}", np.clip(np.abs(v.astype(int) - TRUTH) * 4, 0, 255).astype(np.uint8)) for k, v in results.items()]],
     "05_result.png")

# %% [markdown]
# ## 4. RIFE: five blocks, coarse to fine
# RIFE 4.25 predicts F_t->0, F_t->1 and the blend mask directly. Block 0 sees the frames at 1/16 size and
# guesses a coarse flow; each next block sees the frames *warped by the current guess* at a finer size
# (1/8, 1/4, 1/2, 1) and adds a correction. With `I2V_RIFE_CHECKPOINT=/path/flownet.pkl` this uses the real
# weights; without, the weights are **random** — the pictures then show only the mechanics (shapes, the
# coarse-to-fine resolution of each block's output), not a good interpolation.

# %%
ckpt = os.environ.get("I2V_RIFE_CHECKPOINT")
net = rife.load(ckpt) if ckpt else rife.IFNet().eval()
with torch.no_grad():
    xs = [torch.nn.functional.pad(x, (0, -W % 128, 0, -H % 128)) for x in (x0, x1)]
    res = net(xs[0], xs[1], 0.5)
crop = lambda t: t[..., :H, :W]  # noqa: E731
mags = max(float(crop(f[:, :2]).abs().max()) for f in res["flows"]) or 1.0
grid([[(f"block{i} F t->0", flow_rgb(crop(f[:, :2]), mags)) for i, f in enumerate(res["flows"])],
      [(f"block{i} mask", grey(crop(mk))) for i, mk in enumerate(res["masks"])],
      [(f"block{i} frame", rgb(crop(fr))) for i, fr in enumerate(res["frames"])]],
     "05_rife_blocks.png")
print("RIFE weights:", ckpt or "random (mechanics only)")
