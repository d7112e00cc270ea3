# %% [markdown]
# # 06 — Train your own image-to-video model
#
# i2v's built-in model was trained by exactly the code you run here: procedural clips whose motion is known,
# a small video backbone (factorised 3D U-Net or spatio-temporal DiT), EDM preconditioning from the diffusion
# core, and any core sampler to generate. This tutorial does the whole loop in a few minutes on a CPU:
#
# 1. look at the training data, 2. train a small model, 3. sample from it, 4. evaluate it against the static
# baseline and the oracle. Figures go to `$I2V_TUTORIAL_OUT` (default `docs/figures/`).
# `I2V_TUTORIAL_SMALL=1` shrinks everything so it runs in seconds (CI). Run it from the repository root
# (it reads `configs/builtin_unet.toml`): `python tutorials/06_train_your_own.py`.

# %%
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from i2v.data.procedural import MOTIONS, clip_seed, make_clip
from i2v.errors import CheckpointError
from i2v.evaluate import evaluate, format_table
from i2v.pipelines.builtin import BuiltinPipeline
from i2v.train import load_config, train

SMALL = os.environ.get("I2V_TUTORIAL_SMALL") == "1"
OUT = Path(os.environ.get("I2V_TUTORIAL_OUT", "docs/figures"))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1 if SMALL else torch.get_num_threads())


def to_png(rows, path, scale=2):
    """rows: list of (t, h, w, 3) float arrays -> one image, a row per clip (a contact sheet)."""
    sheet = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    img = Image.fromarray((np.clip(sheet, 0, 1) * 255).astype(np.uint8))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    print("wrote", path)


# %% [markdown]
# ## 1. The data: clips with known motion
# Each clip is a pure function of a seed. Camera moves (pans, zooms, rotations) over a textured background
# (crops of scikit-image's bundled photos, or procedural noise), sprites at different depths for parallax, and
# object motion (slide, bounce). Below: one clip per motion class, every third frame.

# %%
size = 32 if SMALL else 64
rows = [make_clip(clip_seed("train", i), motion=m, size=size, sprites=2).frames[::3]
        for i, m in enumerate(MOTIONS)]
to_png(rows, OUT / "06_data.png", scale=1 if not SMALL else 2)

# %% [markdown]
# ## 2. Train
# The presets in `configs/` are the shipped models' recipes; here we shrink them with type-checked overrides
# (the same `--set` syntax as `i2v train`). The loss is EDM's (the network's output vs its own target) plus
# the warp head's auxiliary loss (the first frame moved by the predicted affine map vs the true frames).

# %%
run_dir = Path(tempfile.mkdtemp(prefix="i2v_tutorial_"))
overrides = [f"train.out_dir='{run_dir}'", "train.checkpoint_every=100000", "train.log_every=1",
             "unet.channels=[32, 64]", "unet.spatial_attention=[false, true]", "train.ema_decay=0.99",
             "train.lr=1e-3", "train.warmup=20"]
if SMALL:
    overrides += ["train.steps=4", "data.frames=4", "data.size=32", "unet.channels=[16, 32]"]
else:
    overrides += ["train.steps=100000", "train.max_minutes=4", "data.frames=8"]
cfg = load_config("configs/builtin_unet.toml", overrides)
result = train(cfg, progress=not SMALL)
print(f"trained {result['step']} steps in {result['minutes']:.1f} min")


def plot(values, path, w=480, h=200):
    """A minimal line plot with Pillow (matplotlib is not a dependency)."""
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    v = np.asarray(values, dtype=float)
    if len(v) > 20:  # moving average, so the trend is visible under the per-batch noise
        v = np.convolve(v, np.ones(10) / 10, mode="valid")
    lo, hi = float(v.min()), float(v.max()) + 1e-9
    pts = [(10 + i * (w - 20) / max(len(v) - 1, 1), h - 20 - (x - lo) / (hi - lo) * (h - 40)) for i, x in enumerate(v)]
    d.line(pts, fill=(200, 40, 40), width=2)
    d.text((10, 2), f"training loss (smoothed): {v[0]:.3f} -> {v[-1]:.3f}", fill="black")
    img.save(path)
    print("wrote", path)


plot([loss for _, loss in result["loss"]], OUT / "06_loss.png")

# %% [markdown]
# ## 3. Sample
# `BuiltinPipeline.load(path=...)` reads the exported EMA weights; the config comes from the tensor shapes.
# Rows: the true held-out clip, our few-minute model, and the shipped model (trained much longer).

# %%
mine = BuiltinPipeline.load(path=run_dir / "model.safetensors")
clip = make_clip(clip_seed("eval", 0), motion="pan-left", speed=1.5, frames=mine.frames, size=mine.size)
steps = 2 if SMALL else 20
ours = mine(clip.frames[0], motion="pan-left", speed=1.5, steps=steps, seed=0, progress=False)
rows = [clip.frames, ours.permute(0, 2, 3, 1).numpy()]
try:
    shipped = BuiltinPipeline.load("unet")
    big = make_clip(clip_seed("eval", 0), motion="pan-left", speed=1.5, frames=shipped.frames, size=shipped.size)
    out = shipped(big.frames[0], motion="pan-left", speed=1.5, steps=steps, seed=0, progress=False)
    import torch.nn.functional as F
    rows.append(F.interpolate(out, size=(mine.size, mine.size), mode="area")[:mine.frames].permute(0, 2, 3, 1).numpy())
except CheckpointError as e:  # the shipped weights are optional for this tutorial
    print("shipped model not available:", e)
to_png(rows, OUT / "06_samples.png", scale=2)

# %% [markdown]
# ## 4. Evaluate
# PSNR/SSIM against the true frames on held-out seeds, for the static baseline (repeat frame 0), the oracle
# (warp frame 0 with the true motion) and our model. `i2v eval` prints the same table for the shipped models.

# %%
motions = ("static", "pan-left", "zoom-in") if SMALL else MOTIONS
print(f"held-out clips: {mine.frames} frames at {mine.size}x{mine.size}, 1 per class")
report = evaluate({"tutorial model": mine}, clips_per_class=1, steps=steps, motions=motions, progress=not SMALL)
print(format_table(report))
