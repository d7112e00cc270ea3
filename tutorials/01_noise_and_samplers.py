# %% [markdown]
# # 01 · Noise and samplers
#
# Diffusion in one picture: data x0 is buried under Gaussian noise of level sigma,
# `x = x0 + sigma * eps`, and a sampler walks back from pure noise to data using a *denoiser*
# `D(x, sigma) ≈ E[x0 | x]`. This tutorial
#
# 1. noises a photo at several sigmas (the forward process),
# 2. builds a 2-D toy distribution whose ideal denoiser we can write down exactly,
# 3. runs three samplers of `i2v.diffusion` on it and draws their trajectories,
# 4. measures how sample quality changes with the number of steps.
#
# Runs as plain Python (`python tutorials/01_noise_and_samplers.py`) or cell by cell in an editor that
# understands `# %%`. Figures go to `$I2V_TUTORIAL_OUT` (default `docs/figures/`);
# `I2V_TUTORIAL_SMALL=1` shrinks everything so CI runs it in seconds. No matplotlib: figures are drawn
# with Pillow.

# %%
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from i2v.diffusion import get_sampler, get_schedule

SMALL = os.environ.get("I2V_TUTORIAL_SMALL") == "1"
ROOT = Path(__file__).resolve().parents[1] if "__file__" in globals() else Path.cwd()
OUT = Path(os.environ.get("I2V_TUTORIAL_OUT", ROOT / "docs" / "figures"))
OUT.mkdir(parents=True, exist_ok=True)
torch.set_default_dtype(torch.float64)  # the toy problem is tiny: float64 keeps the numbers clean
t_start = time.time()

IMAGE_SIZE = 96 if SMALL else 128  # pixels per panel in the noising figure
N_POINTS = 400 if SMALL else 3000  # samples per sampler on the toy problem
N_PATHS = 12 if SMALL else 40  # trajectories drawn per sampler
PANEL = 200 if SMALL else 320  # pixels per panel in the 2-D figures


def font(size=14):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def save(img: Image.Image, name: str) -> Path:
    path = OUT / name
    img.save(path, optimize=True)
    print(f"  wrote {path} ({img.width}x{img.height})")
    return path


# %% [markdown]
# ## 1. The forward process on a photo
#
# In the variance-exploding form every noise level is just `x = x0 + sigma * eps`. A network trained in
# the variance-preserving form (DDPM, Stable Diffusion, SVD) sees the same thing rescaled,
# `c_in * x = x / sqrt(1 + sigma^2)` — the bottom row. With pixels in [-1, 1], sigma = 0.1 is a light
# grain; by sigma = 3 the image is gone to the eye, though its coarsest structure survives in the
# statistics (that is why samplers start even higher: SVD starts at sigma = 700).

# %%
from skimage import data as skdata

photo = Image.fromarray(skdata.astronaut()).resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
x0 = torch.from_numpy(np.array(photo)).permute(2, 0, 1) / 127.5 - 1  # (3, h, w) in [-1, 1]
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
noise_levels = [0.0, 0.1, 0.3, 1.0, 3.0, 10.0]


def to_image(x: torch.Tensor) -> Image.Image:
    """(3, h, w) in [-1, 1] -> PIL image (values outside are clipped)."""
    return Image.fromarray(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())


label_h, pad = 22, 4
fig = Image.new("RGB", (len(noise_levels) * (IMAGE_SIZE + pad) + 150, 2 * (IMAGE_SIZE + pad) + label_h), "white")
draw = ImageDraw.Draw(fig)
draw.text((4, label_h + IMAGE_SIZE // 2 - 8), "x0 + sigma*eps", fill="black", font=font(13))
draw.text((4, label_h + IMAGE_SIZE + pad + IMAGE_SIZE // 2 - 8), "x / sqrt(1+sigma^2)", fill="black", font=font(13))
print("1. forward noising of a photo: x = x0 + sigma * eps")
for j, sigma in enumerate(noise_levels):
    x = x0 + sigma * eps
    left = 150 + j * (IMAGE_SIZE + pad)
    draw.text((left + 4, 2), f"sigma = {sigma:g}", fill="black", font=font(14))
    fig.paste(to_image(x), (left, label_h))
    fig.paste(to_image(x / math.sqrt(1 + sigma**2)), (left, label_h + IMAGE_SIZE + pad))
    snr_db = 10 * math.log10(x0.var().item() / sigma**2) if sigma > 0 else float("inf")
    print(f"  sigma {sigma:5g}: signal-to-noise {snr_db:6.1f} dB, measured std(x - x0) = {(x - x0).std().item():.3f}")
save(fig.quantize(colors=256), "01_forward_noising.png")  # a palette keeps the noisy PNG small

# %% [markdown]
# ## 2. A toy distribution with an exact denoiser
#
# Eight Gaussian blobs on a circle: `p(x0) = sum_k w_k N(m_k, s^2 I)`. Noise of level sigma widens every
# blob to variance `s^2 + sigma^2`, and the ideal denoiser is a responsibility-weighted average of each
# blob's own posterior mean:
#
#     r_k(x) ∝ w_k N(x; m_k, (s^2 + sigma^2) I)
#     D(x, sigma) = sum_k r_k(x) (s^2 x + sigma^2 m_k) / (s^2 + sigma^2)
#
# This is exactly the `denoiser(x, sigma, cond) -> x0` contract every i2v sampler uses — a trained network
# is only an approximation of it.

# %%
K, RADIUS, S = 8, 2.0, 0.15
angles = torch.arange(K) * 2 * math.pi / K
means = torch.stack([RADIUS * angles.cos(), RADIUS * angles.sin()], dim=1)  # (K, 2)
weights = torch.full((K,), 1 / K)


def mixture_denoiser(x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor:
    """Exact E[x0 | x] for the mixture. x: (n, 2), sigma: (n,)."""
    var = S**2 + sigma[:, None] ** 2  # (n, 1): each blob's variance after noising
    sq_dist = ((x[:, None, :] - means[None]) ** 2).sum(-1)  # (n, K)
    log_r = weights.log()[None] - sq_dist / (2 * var) - math.log(2 * math.pi) - var.log()  # log of w_k N(x; m_k, var I)
    r = torch.softmax(log_r, dim=1)  # (n, K) responsibilities
    post_mean = (S**2 * x[:, None, :] + sigma[:, None, None] ** 2 * means[None]) / var[:, :, None]  # (n, K, 2)
    return (r[:, :, None] * post_mean).sum(1)


def sample_data(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, K, (n,), generator=g)
    return means[k] + S * torch.randn(n, 2, generator=g)


def nearest_mode_distance(x: torch.Tensor) -> float:
    """Mean distance to the nearest blob centre. For perfect samples it is s * sqrt(pi/2) (Rayleigh mean)."""
    return torch.cdist(x, means).min(dim=1).values.mean().item()


print(f"2. toy data: {K} Gaussians (std {S}) on a circle of radius {RADIUS}; "
      f"ideal nearest-mode distance s*sqrt(pi/2) = {S * math.sqrt(math.pi / 2):.4f}")

# %% [markdown]
# ## 3. Three samplers, one start
#
# Every sampler has the same signature, `sampler(denoiser, x, sigmas, *, cond, generator, callback)`;
# swapping one for another is changing a name. We start all three from the same noise
# `x_T = sigma_max * z` on a Karras schedule and record the state after every step with the callback.
# The paths are drawn in the variance-preserving view `x / sqrt(1 + sigma^2)`, in which the start is a
# unit Gaussian and the end is data.

# %%
SAMPLER_NAMES = ["euler", "dpmpp_2m", "euler_ancestral"]
STEPS = 12
sigmas = get_schedule("karras")(STEPS, sigma_min=0.01, sigma_max=20.0, rho=7.0)
z = torch.randn(N_POINTS, 2, generator=torch.Generator().manual_seed(1))
results = {}
for name in SAMPLER_NAMES:
    path = [z[:N_PATHS] * sigmas[0] / math.sqrt(1 + sigmas[0] ** 2)]  # VP view of the start

    def record(info, path=path):
        path.append(info["x"][:N_PATHS] / math.sqrt(1 + info["sigma_next"] ** 2))

    out = get_sampler(name)(mixture_denoiser, z * sigmas[0], sigmas, callback=record,
                            generator=torch.Generator().manual_seed(2))
    results[name] = (out, torch.stack(path))  # (n, 2), (steps + 1, paths, 2)
    print(f"3. {name:16s} {STEPS} steps: nearest-mode distance {nearest_mode_distance(out):.4f}")


def canvas(title: str, lim: float = 3.2):
    img = Image.new("RGB", (PANEL, PANEL + 24), "white")
    d = ImageDraw.Draw(img)
    d.text((6, 4), title, fill="black", font=font(14))

    def px(p):  # data coordinates -> pixel coordinates (y up)
        return ((p[..., 0] + lim) / (2 * lim) * PANEL, 24 + (lim - p[..., 1]) / (2 * lim) * PANEL)

    return img, d, px


def dots(d, px, pts, colour, r=1.5):
    xs, ys = px(pts)
    for x, y in zip(xs.tolist(), ys.tolist()):
        d.ellipse((x - r, y - r, x + r, y + r), fill=colour)


panels = []
data_pts = sample_data(N_POINTS, seed=3)
for name in SAMPLER_NAMES:
    out, path = results[name]
    img, d, px = canvas(f"{name}, {STEPS} steps")
    dots(d, px, data_pts, (215, 215, 215))  # the data, light grey
    for i in range(path.shape[1]):
        xs, ys = px(path[:, i])
        d.line(list(zip(xs.tolist(), ys.tolist())), fill=(70, 110, 200), width=1)
    dots(d, px, path[0], (120, 120, 120), r=2)  # starts: grey
    dots(d, px, path[-1], (220, 60, 40), r=2.5)  # ends: red
    panels.append(img)
fig = Image.new("RGB", (len(panels) * PANEL, PANEL + 24), "white")
for j, p in enumerate(panels):
    fig.paste(p, (j * PANEL, 0))
save(fig, "01_sampler_trajectories.png")

# %% [markdown]
# ## 4. Quality against steps
#
# With too few steps every sampler lands between the blobs (the nearest-mode distance grows). The
# deterministic samplers solve the probability-flow ODE: DPM-Solver++(2M) is second order and needs fewer
# steps than Euler for the same quality. Euler ancestral adds fresh noise at each step (its paths above
# jump around), which forgives earlier errors.

# %%
step_counts = [5, 10, 20, 40] if not SMALL else [5, 20]
target = S * math.sqrt(math.pi / 2)
print(f"4. nearest-mode distance vs steps (perfect samples: {target:.4f})")
print("   steps " + "".join(f"{n:>18s}" for n in SAMPLER_NAMES))
rows = []
for n in step_counts:
    sig = get_schedule("karras")(n, sigma_min=0.01, sigma_max=20.0)
    row = [nearest_mode_distance(get_sampler(name)(mixture_denoiser, z * sig[0], sig,
                                                   generator=torch.Generator().manual_seed(2)))
           for name in SAMPLER_NAMES]
    rows.append(row)
    print(f"   {n:5d} " + "".join(f"{v:18.4f}" for v in row))

# one row per step count, one column per sampler
fig = Image.new("RGB", (len(SAMPLER_NAMES) * PANEL, 2 * (PANEL + 24)), "white")
for r, n in enumerate((step_counts[0], step_counts[-1])):
    sig = get_schedule("karras")(n, sigma_min=0.01, sigma_max=20.0)
    for c, name in enumerate(SAMPLER_NAMES):
        out = get_sampler(name)(mixture_denoiser, z * sig[0], sig, generator=torch.Generator().manual_seed(2))
        img, d, px = canvas(f"{name}, {n} steps")
        dots(d, px, out, (40, 40, 40), r=1.2)
        fig.paste(img, (c * PANEL, r * (PANEL + 24)))
save(fig, "01_samples_vs_steps.png")

print(f"done in {time.time() - t_start:.1f} s; figures in {OUT}")
