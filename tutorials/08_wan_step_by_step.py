# %% [markdown]
# # 08 · One Wan step, by hand
#
# Tutorial 07 made the inputs: a latent video from the causal VAE and T5 rows from the prompt. Here we follow one
# call of the Wan diffusion transformer (`i2v/models/wan/dit.py`, Wan2.1 image-to-video) at tiny size, writing
# each stage out with the model's own weights and checking it against the module: the patch embedding, the 3D
# rotary position angles, the timestep modulation (shift, scale, gate), the self-attention and the text + image
# cross-attention, the head and unpatchify -- then classifier-free guidance and one update of Wan's FlowUniPC
# sampler (`i2v/diffusion/samplers.py`).
#
# **About the weights.** `../shared/reference/wan21-i2v-tiny` holds a DiT in the released layout
# (`diffusion_pytorch_model.safetensors` + `config.json`, original key names) at width 64 with **RANDOM weights**,
# and the tensors the original Wan code (`WanI2V.generate`) computed with it: the inputs of this call (the noise,
# the T5 rows of the prompt and of the negative prompt, the CLIP tokens, the conditioning y) and every stage. So
# every number below is the original's -- but the velocity is not a meaningful picture. Point
# `WanDiT.from_pretrained` at a released folder for a real one. Without `../shared` the tutorial builds a random DiT
# of the same size and random inputs, and says so.
#
# `python tutorials/08_wan_step_by_step.py`; figures go to `$I2V_TUTORIAL_OUT` (default `docs/figures/`);
# `I2V_TUTORIAL_SMALL=1` is the CI setting (smaller figures).

# %%
import contextlib
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # use this checkout's i2v
from i2v.diffusion import CFGDenoiser, Denoiser, flow_timestep, get_sampler, get_schedule  # noqa: E402
from i2v.diffusion.samplers import flow_lambda  # noqa: E402
from i2v.figures import panel  # noqa: E402
from i2v.models.wan.dit import WanDiT, WanDiTConfig, modulate, pad_context  # noqa: E402
from i2v.nn.embeddings import timestep_embedding  # noqa: E402
from i2v.nn.rope import apply_rope, axis_pairs, rope_3d, rope_frequencies  # noqa: E402

SMALL = os.environ.get("I2V_TUTORIAL_SMALL") == "1"
OUT = Path(os.environ.get("I2V_TUTORIAL_OUT", ROOT / "docs" / "figures"))
OUT.mkdir(parents=True, exist_ok=True)
SHARED = Path(os.environ.get("I2V_SHARED", ROOT.parent / "shared"))
TILE = 90 if SMALL else 120  # figure row height in pixels
torch.set_num_threads(1)  # a tiny model: threads only add overhead
torch.manual_seed(0)


def figure(rows, name):
    """Rows of (images, labels[, height]), each drawn by i2v.figures.panel, stacked into OUT/name, saved with a
    256-colour palette (small files for the docs)."""
    tiles = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        for k, (images, labels, *height) in enumerate(rows):
            path = panel(images, labels, Path(tmp) / f"{k}.png", height=height[0] if height else TILE)
            tiles.append(Image.open(path).convert("RGB"))
    fig = Image.new("RGB", (max(t.width for t in tiles), sum(t.height + 6 for t in tiles) - 6), "white")
    y = 0
    for t in tiles:
        fig.paste(t, (0, y))
        y += t.height + 6
    fig.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(OUT / name, optimize=True)
    print("wrote", OUT / name)


def heat(a, lo=None, hi=None, cell=1):
    """(h, w) numbers -> (h, w, 3) uint8, blue (low) .. white .. red (high), centred on 0 unless lo / hi are given;
    each value a cell x cell block."""
    a = np.asarray(a, np.float64)
    m = np.abs(a).max() or 1.0
    lo, hi = (-m if lo is None else lo), (m if hi is None else hi)
    u = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)[..., None] * 2 - 1
    blue, white, red = np.array([40, 70, 160.0]), np.array([250, 250, 250.0]), np.array([170, 30, 40.0])
    img = np.where(u < 0, white + (blue - white) * -u, white + (red - white) * u).round().astype(np.uint8)
    return np.repeat(np.repeat(img, cell, 0), cell, 1)


def weights(a, cell=(1, 1)):
    """Attention weights (rows sum to 1) -> white .. dark blue, scaled to the largest weight."""
    a = np.asarray(a, np.float64)
    u = (a / (a.max() or 1.0))[..., None]
    img = (np.array([252, 252, 252.0]) * (1 - u) + np.array([20, 50, 140.0]) * u).round().astype(np.uint8)
    return np.repeat(np.repeat(img, cell[0], 0), cell[1], 1)


def font(size=12):
    with contextlib.suppress(OSError):
        return ImageFont.truetype("DejaVuSans.ttf", size)
    with contextlib.suppress(OSError):
        return ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", size)
    return ImageFont.load_default()


def labelled(images, row_labels, col_labels, title, gap=4):
    """A grid of equal-size uint8 images with a label before each row and above each column (drawn with Pillow)."""
    fnt = font(12)
    ih, iw = images[0][0].shape[:2]
    left = int(max(fnt.getlength(r) for r in row_labels)) + 10
    top = 40 if col_labels else 22
    cols = len(images[0])
    width = max(left + cols * (iw + gap), int(fnt.getlength(title)) + 8)
    img = Image.new("RGB", (width, top + len(images) * (ih + gap)), "white")
    dr = ImageDraw.Draw(img)
    dr.text((4, 3), title, fill="black", font=fnt)
    for j, label in enumerate(col_labels):
        dr.text((left + j * (iw + gap) + 2, 22), label, fill=(80, 80, 80), font=fnt)
    for i, (row, label) in enumerate(zip(images, row_labels)):
        y = top + i * (ih + gap)
        dr.text((4, y + ih // 2 - 7), label, fill="black", font=fnt)
        for j, im in enumerate(row):
            img.paste(Image.fromarray(im), (left + j * (iw + gap), y))
    return img


def save(img, name):
    img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(OUT / name, optimize=True)
    print("wrote", OUT / name)


def vec(t, k=4):
    return [round(v, 4) for v in t.flatten()[:k].tolist()]


# %% [markdown]
# ## 1. The model and the inputs of one call
# `WanDiT.from_pretrained` reads the config off the tensor shapes (width, layers, in/out channels, the CLIP width of
# `img_emb`) and the head count from `config.json`. One call takes
#
# * `x` (b, 16, F', H', W'): the noisy latent (at step 0 pure noise, `torch.randn(16, F', H', W')` from a generator
#   seeded with the seed);
# * `t`: the timestep, an integer in [0, 1000];
# * `context`: the umT5 rows of the prompt (L, 4096 at full size);
# * `clip`: the 257 CLIP ViT-H tokens of the image (penultimate block);
# * `y` (b, 20, F', H', W'): 4 mask channels + the VAE latent of [image, F - 1 zero frames] (tutorial 07).

# %%
RANDOM = "RANDOM weights: the mechanics are exact, the pictures are not meaningful"
case = SHARED / "reference" / "wan21-i2v-tiny"
E = {}
if (case / "diffusion_pytorch_model.safetensors").exists():
    from safetensors.torch import load_file

    dit = WanDiT.from_pretrained(case)
    E = load_file(case / "expected.safetensors")  # what the original Wan code computed with these weights
    settings = json.loads((case / "case.json").read_text())["settings"]
    steps, shift, guide, frames = (settings[k] for k in ("sampling_steps", "shift", "guide_scale", "frame_num"))
    x, t = E["dit.step0.x"][None], E["dit.step0.t"]  # (1, 16, 3, 6, 8), (1,) = [999]
    context, negative = E["t5.prompt.out"][None], E["t5.neg.out"][None]  # (1, L, 32): prompt, negative prompt
    clip, image_latent = E["clip.out"], E["vae.out"][None]  # (1, 257, 64), (1, 16, 3, 6, 8)
    print(f"the DiT and inputs of {case} -- {RANDOM}")
else:
    cfg = WanDiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, in_dim=36, out_dim=16, text_dim=32,
                       image_dim=64)
    dit = WanDiT(cfg).eval().requires_grad_(False)
    with torch.no_grad():  # the modulations start at zero in training; make them do something
        for name, p in dit.named_parameters():
            if name.endswith("modulation"):
                p.normal_(0, 0.1)
    steps, shift, guide, frames = 4, 3.0, 5.0, 9
    x, t = torch.randn(1, 16, 3, 6, 8, generator=torch.Generator().manual_seed(1234)), torch.tensor([999])
    context, negative = torch.randn(1, 20, 32), torch.randn(1, 12, 32)
    clip, image_latent = torch.randn(1, 257, 64), torch.randn(1, 16, 3, 6, 8)
    print(f"no {case} (../shared is absent): a randomly initialised tiny Wan DiT and random inputs -- {RANDOM}")
cfg = dit.config
print(f"Wan DiT ({cfg.model_type}): dim {cfg.dim}, {cfg.num_heads} heads of {cfg.head_dim}, {cfg.num_layers} blocks, "
      f"in {cfg.in_dim} = 16 + 20 channels, out {cfg.out_dim}; {sum(p.numel() for p in dit.parameters()) / 1e6:.2f} M "
      "parameters")

# %% [markdown]
# **The mask channels.** For F pixel frames, a per-frame mask is 1 on the given frame (frame 0) and 0 elsewhere.
# Frame 0's entry is taken 4 times (F + 3 = 4 F' entries: latent frame 0 stands for frame 0, each later one for 4
# frames), then viewed as (F', 4) and transposed: channel c of latent frame j is the mask of pixel frame 4j + c - 3
# (frame 0 for j = 0). `y = [mask, VAE latent of (image, F - 1 zero frames)]`.

# %%
per_frame = torch.zeros(frames)
per_frame[0] = 1  # the image is pixel frame 0
entries = torch.cat([per_frame[:1].repeat(4), per_frame[1:]])  # (F + 3,) = (4 F',)
mask = rearrange(entries, "(j c) -> c j", c=4)[None, :, :, None, None].expand(1, 4, *x.shape[2:])  # (1, 4, F', H', W')
y = torch.cat([mask, image_latent], dim=1)  # (1, 20, F', H', W')
if "cond.y" in E:
    print("mask built by the rule == the case's cond.mask:", torch.equal(mask[0], E["cond.mask"]),
          "; y == cond.y:", torch.equal(y[0], E["cond.y"]))
print("mask channels x latent frames:", mask[0, :, :, 0, 0].int().tolist())

# %% [markdown]
# ## 2. Patchify: a Conv3d that is a Linear
# The patch embedding is a Conv3d whose kernel equals its stride, (1, 2, 2): it cuts [x, y] into non-overlapping
# 1 x 2 x 2 patches of 36 channels = 144 numbers each and maps each to `dim` numbers -- a Linear on the patches.
# The tokens come out in (f, h, w) raster order: L = F' (H'/2) (W'/2).

# %%
xin = torch.cat([x, y], dim=1)  # (1, 36, F', H', W')
pt, ph, pw = cfg.patch_size
f, h, w = x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw
patches = rearrange(xin, "b c (f p) (h q) (w r) -> b (f h w) (c p q r)", p=pt, q=ph, r=pw)  # (1, L, 144)
W_patch, b_patch = dit.patch_embedding.weight, dit.patch_embedding.bias  # (dim, 36, 1, 2, 2), (dim,)
tokens = patches @ W_patch.flatten(1).T + b_patch  # (1, L, dim)
as_conv = rearrange(F.conv3d(xin, W_patch, b_patch, stride=cfg.patch_size), "b d f h w -> b (f h w) d")
L = tokens.shape[1]
print(f"tokens L = {f} x {h} x {w} = {L}, each patch {cfg.in_dim} x {pt} x {ph} x {pw} = {patches.shape[2]} numbers "
      f"-> dim {cfg.dim}")
print(f"Linear on patches vs Conv3d: max |diff| {(tokens - as_conv).abs().max():.1e}")
if E:
    ref = E["dit.step0.cond.x_embed"]
    print(f"tokens vs the original's x_embed: relative error {((tokens - ref).norm() / ref.norm()):.1e}")

# %% [markdown]
# ## 3. RoPE: the angles of the three axes
# Self-attention sees no positions unless they are put into q and k. Wan rotates each pair of channels
# (x_2j, x_2j+1) of every head's q and k by an angle that grows with the token's position (RoPE, Su et al. 2021);
# then q_a . k_b depends only on the *offset* b - a. The d/2 pairs of a head of width d are split between frames,
# rows and columns, d/2 - 2 floor(d/6), floor(d/6), floor(d/6) pairs, each axis with its own frequencies:
#
#     angle(token, pair j of axis a) = pos_a(token) * theta^(-j / n_a),   theta = 10000,  j = 0 .. n_a - 1
#
# The picture: the angle of every pair (rows, in band order) for every token (columns, in the (f, h, w) raster order
# of the sequence) of a 4 x 6 x 8 grid at the released head width 128, and of this model's grid; the colour goes
# once round the hue circle per 2 pi. The frame band changes once every 48 tokens, the row band every 8, the column
# band at every token; within a band pair 0 turns by 1 radian per step and the later pairs ever more slowly, so
# near and far offsets are both told apart.

# %%
d = cfg.head_dim
for width in (d, 128):
    nf, nh, nw = axis_pairs(width)
    print(f"head width d = {width}: {width // 2} pairs = (d/2 - 2 floor(d/6), floor(d/6), floor(d/6)) = "
          f"({nf}, {nh}, {nw}) for (frames, rows, columns)")
cos, sin = rope_3d(f, h, w, d, theta=cfg.theta)  # (L, d/2) each, float64 as the original
nf, nh, nw = axis_pairs(d)
token = (1, 2, 3)  # (f, h, w)
index = (token[0] * h + token[1]) * w + token[2]
angles = torch.cat([pos * rope_frequencies(n, cfg.theta) for pos, n in zip(token, (nf, nh, nw))])  # (d/2,)
print(f"token (f, h, w) = {token} (index {index}): pairs 0, 1 of the frame band {vec(angles[:2], 2)} rad, of the row "
      f"band {vec(angles[nf:nf + 2], 2)}, of the column band {vec(angles[nf + nh:nf + nh + 2], 2)}")
print(f"cos of those angles vs rope_3d's table: max |diff| {(angles.cos() - cos[index]).abs().max():.1e}")
# the offset property, on random q, k in float64: shift both positions by (1, 1, 2) and the score is the same
cos4, sin4 = rope_3d(3, 4, 5, d)
q0, k0 = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)


def score(a, b):  # q at grid position a . k at position b, both rotated
    ia, ib = (a[0] * 4 + a[1]) * 5 + a[2], (b[0] * 4 + b[1]) * 5 + b[2]
    return float(apply_rope(q0, cos4[ia], sin4[ia]) @ apply_rope(k0, cos4[ib], sin4[ib]))


print(f"q.k at (0, 1, 0), (1, 0, 2): {score((0, 1, 0), (1, 0, 2)):.6f}; both moved by (1, 1, 2): "
      f"{score((1, 2, 2), (2, 1, 4)):.6f}; unrotated {float(q0 @ k0):.6f}")


def hue(angles, cell):
    """Angles (radians) -> colours around the hue circle (one turn = 2 pi), so a rotation reads as a colour cycle."""
    u = np.mod(np.asarray(angles, np.float64) / (2 * np.pi), 1.0)
    hsv = np.stack([np.round(u * 255) % 256, np.full_like(u, 165), np.full_like(u, 242)], -1).astype(np.uint8)
    img = np.asarray(Image.frombytes("HSV", (u.shape[1], u.shape[0]), hsv.tobytes()).convert("RGB"))
    return np.repeat(np.repeat(img, cell[0], 0), cell[1], 1)


def grid_angles(fg, hg, wg, width):
    """(pairs, tokens) angles pos_a * theta^(-j / n_a) of every token of an fg x hg x wg grid, pairs in band order."""
    cos_, sin_ = rope_3d(fg, hg, wg, width)
    return torch.atan2(sin_, cos_).T.numpy()  # the angle mod 2 pi is all a rotation sees


def draw_bands(fg, hg, wg, width, cell):
    img = hue(grid_angles(fg, hg, wg, width), cell)
    pairs = axis_pairs(width)
    edges = np.cumsum(pairs)[:-1]
    for e_ in edges:
        img[e_ * cell[0] - 1] = 0
    names = [f"frames, {pairs[0]} pairs", f"rows, {pairs[1]} pairs", f"columns, {pairs[2]} pairs"]
    starts = [0, *edges]
    return img, [(st * cell[0], n_) for st, n_ in zip(starts, names)]


def band_figure(specs, name):
    fnt = font(12)
    drawn = [draw_bands(*sp) for sp in specs]
    titles = [f"head width {wd}, a {fg} x {hg} x {wg} grid: the angle of each rotation pair (rows) for each of the "
              f"{fg * hg * wg} tokens (columns, f-h-w raster order)" for fg, hg, wg, wd, _ in specs]
    left, gap = 130, 14
    width = max(left + max(im.shape[1] for im, _ in drawn), *(int(fnt.getlength(t_)) for t_ in titles)) + 8
    height = sum(im.shape[0] + 40 for im, _ in drawn) + 30
    img = Image.new("RGB", (width, height), "white")
    dr = ImageDraw.Draw(img)
    y = 0
    for (im, labels), title in zip(drawn, titles):
        dr.text((4, y + 4), title, fill="black", font=fnt)
        y += 22
        img.paste(Image.fromarray(im), (left, y))
        for off, lab in labels:
            dr.text((4, y + off + 2), lab, fill="black", font=fnt)
        y += im.shape[0] + gap + 4
    legend = "colour = angle mod 2 pi:"
    x0 = int(fnt.getlength(legend)) + 26
    dr.text((4, y + 2), legend, fill="black", font=fnt)
    dr.text((x0 - 12, y + 2), "0", fill="black", font=fnt)
    img.paste(Image.fromarray(hue(np.linspace(0, 2 * np.pi, 256)[None], (12, 1))), (x0, y + 4))
    dr.text((x0 + 262, y + 2), "2 pi", fill="black", font=fnt)
    save(img, name)


band_figure([(4, 6, 8, 128, (3, 3) if SMALL else (4, 4)), (f, h, w, d, (8, 8) if SMALL else (10, 10))],
            "08_rope_bands.png")

# %% [markdown]
# ## 4. Time and modulation: shift, scale, gate
# The timestep becomes a 256-wide sinusoid, `time_embedding` (Linear-SiLU-Linear) makes e (dim), and
# `time_projection` (SiLU-Linear) makes e0 (6 x dim), shared by all blocks. Each block adds its own learned
# `modulation` (1, 6, dim) and cuts the sum into shift1, scale1, gate1 (self-attention) and shift2, scale2, gate2
# (feed-forward) -- adaLN (DiT, Peebles & Xie 2023):
#
#     x = x + gate1 * SelfAttn(LN(x) * (1 + scale1) + shift1)
#     x = x + CrossAttn(LN3(x), text, image)                    (LN3 affine, not modulated)
#     x = x + gate2 * FFN(LN(x) * (1 + scale2) + shift2)

# %%
sinusoid = timestep_embedding(t.double(), cfg.freq_dim).float()  # (1, 256): cos | sin, float64 arguments
e = dit.time_embedding(sinusoid)  # (1, dim)
e0 = dit.time_projection(e).unflatten(-1, (6, -1))  # (1, 6, dim)
e_model, e0_model = dit.time_embeddings(t, 1, f, False)  # (1, 1, dim), (1, 1, 6, dim): the model's own
print(f"t = {int(t)}: e {tuple(e.shape)}, e0 {tuple(e0.shape)}; vs the model: max |diff| "
      f"{max((e - e_model[:, 0]).abs().max(), (e0 - e0_model[:, 0]).abs().max()):.1e}")
if E:
    print(f"e0 vs the original's: relative error {((e0 - E['dit.step0.e0']).norm() / E['dit.step0.e0'].norm()):.1e}")
block = dit.blocks[0]
mod = block.modulation + e0  # (1, 6, dim)
shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=1)  # (1, 1, dim) each
for name, v in zip(("shift1", "scale1", "gate1", "shift2", "scale2", "gate2"), mod.unbind(1)):
    print(f"  block 0 {name}: mean {v.mean():+.4f}, std {v.std():.4f}, [:3] = {vec(v, 3)}")
r0 = tokens  # r: the residual stream (1, L, dim), float32
h1 = modulate(block.norm1(r0), shift1, scale1)  # LN(x) (1 + scale1) + shift1
print(f"LN(x): mean {block.norm1(r0).mean():+.3f}, std {block.norm1(r0).std():.3f} -> modulated: mean "
      f"{h1.mean():+.3f}, std {h1.std():.3f}")
t_late = int(flow_timestep()(get_schedule("wan")(steps, shift=shift)[steps - 1:steps].float()))
_, e0_late = dit.time_embeddings(torch.tensor([t_late]), 1, f, False)
row_names = ["shift1", "scale1", "gate1", "shift2", "scale2", "gate2"]
mod_late = (block.modulation + e0_late[:, 0])[0]
lim = float(max(mod.abs().max(), mod_late.abs().max()))
cell = 6 if SMALL else 8
rows = [np.repeat(heat(v[None].numpy(), -lim, lim, cell=cell), 2, 0) for v in mod[0]]  # 2 cells tall per row
rows_late = [np.repeat(heat(v[None].numpy(), -lim, lim, cell=cell), 2, 0) for v in mod_late]
save(labelled([[a_, b_] for a_, b_ in zip(rows, rows_late)], row_names, [f"t = {int(t)} (step 0)",
                                                                         f"t = {t_late} (the last step)"],
              f"block 0: modulation + e0, {cfg.dim} channels per row (blue < 0 < red)"), "08_modulation.png")

# %% [markdown]
# ## 5. Self-attention, with RoPE
# q and k get an RMSNorm over the full width (all heads together), are split into heads and rotated; then every
# token attends to every token of the clip, all frames at once: softmax(q k^T / sqrt(d)) v, then `o`.

# %%
sa = block.self_attn
q = rearrange(sa.norm_q(sa.q(h1)), "b n (h d) -> b h n d", h=cfg.num_heads)  # (1, heads, L, d)
k = rearrange(sa.norm_k(sa.k(h1)), "b n (h d) -> b h n d", h=cfg.num_heads)
v = rearrange(sa.v(h1), "b n (h d) -> b h n d", h=cfg.num_heads)
cos32, sin32 = cos.float(), sin.float()  # applied in float32, as the model
q, k = apply_rope(q, cos32, sin32), apply_rope(k, cos32, sin32)
print(f"q after RoPE, head 0, token 5, [:4] = {vec(q[0, 0, 5])}")
A_self = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)  # (1, heads, L, L)
y_self = sa.o(rearrange(A_self @ v, "b h n d -> b n (h d)"))
print(f"by hand vs block.self_attn: max |diff| {(y_self - sa(h1, cos32, sin32)).abs().max():.1e}")
if E:
    ref = E["dit.step0.cond.block0.self_attn"]
    print(f"self-attention vs the original's: relative error {((y_self - ref).norm() / ref.norm()):.1e}")
r1 = r0 + gate1 * y_self

# %% [markdown]
# ## 6. Cross-attention: text and image, summed
# The text rows are the T5 output zero-padded to 512 and embedded (`text_embedding`, Linear-GELU-Linear); the image
# tokens are the CLIP tokens through `img_emb`. One query per video token (from LN3(x), q-normed), two sets of keys
# and values: `k`/`v` over the 512 text rows -- all of them: the original masks nothing, so the padding rows take
# part -- and `k_img`/`v_img` over the 257 image tokens. The two attention outputs are summed before `o`.
# (`WanDiT.embed_text` computes the same thing with the identical padding rows folded into one key: n equal keys
# weigh like one key whose logit is raised by ln n.)

# %%
ca = block.cross_attn
n_text = context.shape[1]
text = dit.text_embedding(pad_context(context))  # (1, 512, dim): all 512 rows, as the original
image = dit.img_emb(clip, torch.float32)  # (1, 257, dim)
hc = block.norm3(r1)
heads = lambda z: rearrange(z, "b n (h d) -> b h n d", h=cfg.num_heads)  # noqa: E731
qc = heads(ca.norm_q(ca.q(hc)))
A_text = torch.softmax(qc @ heads(ca.norm_k(ca.k(text))).transpose(-1, -2) / math.sqrt(d), dim=-1)  # (1, h, L, 512)
A_img = torch.softmax(qc @ heads(ca.norm_k_img(ca.k_img(image))).transpose(-1, -2) / math.sqrt(d), dim=-1)
y_cross = ca.o(rearrange(A_text @ heads(ca.v(text)) + A_img @ heads(ca.v_img(image)), "b h n d -> b n (h d)"))
compressed, bias = dit.embed_text(context)
print(f"text rows: {n_text} from the prompt + {512 - n_text} zero padding; the model embeds "
      f"{compressed.shape[1]} rows with a bias ln({512 - n_text}) = {math.log(512 - n_text):.3f} on the last")
y_module = ca(hc, compressed, image, bias)
print(f"by hand (all 512 rows) vs block.cross_attn: max |diff| {(y_cross - y_module).abs().max():.1e}")
print(f"the padding rows take {A_text[0, 0, :, n_text:].sum(-1).mean():.1%} of head 0's text attention, "
      f"{A_text[0, 1, :, n_text:].sum(-1).mean():.1%} of head 1's")
if E:
    ref = E["dit.step0.cond.block0.cross_attn"]
    print(f"cross-attention vs the original's: relative error {((y_cross - ref).norm() / ref.norm()):.1e}")
r2 = r1 + y_cross
r3 = r2 + gate2 * block.ffn(modulate(block.norm2(r2), shift2, scale2))  # FFN: Linear-GELU(tanh)-Linear
out0 = block(r0.view(1, f, h * w, -1), e0_model, cos32, sin32, compressed, image, bias).flatten(1, 2)
print(f"block 0 by hand vs the module: max |diff| {(r3 - out0).abs().max():.1e}")
if E:
    ref = E["dit.step0.cond.block0"]
    print(f"block 0 vs the original's: relative error {((r3 - ref).norm() / ref.norm()):.1e}")

cw = 2 if SMALL else 3
figure([([weights(A_self[0, 0].numpy(), (cw * 2, cw * 2)), weights(A_text[0, 0].numpy(), (cw * 2, 1)),
          weights(A_img[0, 0].numpy(), (cw * 2, 1))],
         ["self: video token (rows) -> video token", f"text: -> 512 rows (prompt = first {n_text}, then padding)",
          "image: -> 257 CLIP tokens"], 2 * TILE)], "08_attention.png")

# %% [markdown]
# ## 7. The other blocks, the head, unpatchify
# The head modulates with e (not e0) and its own (1, 2, dim) `modulation` (shift, scale), then a Linear gives each
# token its 1 x 2 x 2 patch of `out_dim` = 16 channels. Unpatchify puts the patches back in place:
# `b (f h w) (p q r c) -> b c (f p) (h q) (w r)` -- the original writes it as the einsum `fhwpqrc->cfphqwr`.

# %%
xs = out0.view(1, f, h * w, -1)  # (b, f, n, dim): tokens grouped by latent frame
for blk in dit.blocks[1:]:
    xs = blk(xs, e0_model, cos32, sin32, compressed, image, bias)
patch_out = dit.head(xs, e_model).flatten(1, 2)  # (1, L, p q r c)
c = cfg.out_dim
velocity = rearrange(patch_out, "b (f h w) (p q r c) -> b c (f p) (h q) (w r)", f=f, h=h, p=pt, q=ph, r=pw)
einsum = torch.einsum("fhwpqrc->cfphqwr", patch_out[0].reshape(f, h, w, pt, ph, pw, c)).reshape(c, f * pt, h * ph,
                                                                                                 w * pw)
v_cond = dit(x, t, context=context, clip=clip, y=y)  # the whole call: (1, 16, F', H', W')
print(f"head output {tuple(patch_out.shape)} = {pt} x {ph} x {pw} x {c} per token -> velocity {tuple(velocity.shape)}")
print(f"rearrange vs the original's einsum: max |diff| {(velocity[0] - einsum).abs().max():.1e}; by hand vs dit(...): "
      f"max |diff| {(velocity - v_cond).abs().max():.1e}")
print(f"velocity[0, :4, 1, 2, 3] = {vec(v_cond[0, :, 1, 2, 3])}")
if E:
    ref = E["dit.step0.cond.out"]
    print(f"velocity vs the original's: relative error {((v_cond[0] - ref).norm() / ref.norm()):.1e}")

# %% [markdown]
# ## 8. Guidance and one FlowUniPC update
# Flow matching: x_sigma = (1 - sigma) x0 + sigma eps, and the network predicts the velocity v = eps - x0, so the
# data prediction is m = x - sigma v. Classifier-free guidance runs the call again with the negative prompt:
# v = v_u + w (v_c - v_u), w = 5.
#
# Wan's schedule: sigma evenly spaced from 0.999 to 0, shifted by sigma' = s sigma / (1 + (s - 1) sigma) (more
# steps at high noise); the network sees the integer timestep floor(1000 sigma). FlowUniPC (Zhao et al. 2023, bh2,
# data prediction) works in lambda = ln(alpha / sigma), alpha = 1 - sigma; with h = lambda_1 - lambda_0 its first
# step, which has no history, takes x at sigma_0 to
#
#     x_1 = (sigma_1 / sigma_0) x - alpha_1 (e^-h - 1) m
#
# and that is exactly an Euler step of the flow ODE, x_1 = x + (sigma_1 - sigma_0) v: put in e^-h = alpha_0 sigma_1
# / (sigma_0 alpha_1) and m = x - sigma_0 v. Later steps add a second-order term from the previous m and a corrector
# once the next m is known; the last step is first order again.

# %%
v_uncond = dit(x, t, context=negative, clip=clip, y=y)
v_guided = v_uncond + guide * (v_cond - v_uncond)
print(f"guided velocity (w = {guide}) [0, :4, 1, 2, 3] = {vec(v_guided[0, :, 1, 2, 3])}")
if E:
    ref = E["sampler.noise_pred.0"]
    print(f"guided velocity vs the original's: relative error {((v_guided[0] - ref).norm() / ref.norm()):.1e}")
sigmas = get_schedule("wan")(steps, shift=shift)
print(f"{steps} steps, shift {shift}: sigmas {[round(s, 4) for s in sigmas.tolist()]}, timesteps "
      f"{flow_timestep()(sigmas[:-1].float()).tolist()}")
D = CFGDenoiser(Denoiser(dit, "flow", sigma_to_c_noise=flow_timestep()), guide)  # D(x, sigma) = x0 estimate
cond = {"cond": {"context": pad_context(context), "clip": clip, "y": y},
        "uncond": {"context": pad_context(negative), "clip": clip, "y": y}}
unipc = get_sampler("flow_unipc")
x_1 = unipc(D, x, sigmas[:2], cond=cond)  # one step: sigma_0 -> sigma_1
s0, s1 = sigmas[0].item(), sigmas[1].item()
m0 = x - s0 * v_guided  # data prediction
h_step = flow_lambda(s1) - flow_lambda(s0)
by_hand = (s1 / s0) * x - (1 - s1) * math.expm1(-h_step) * m0
euler = x + (s1 - s0) * v_guided
print(f"one UniPC step vs the formula: max |diff| {(x_1 - by_hand).abs().max():.1e}; vs Euler: "
      f"{(x_1 - euler).abs().max():.1e}")
print(f"x_1[0, :4, 1, 2, 3] = {vec(x_1[0, :, 1, 2, 3])}")
if E:
    ref = E["sampler.latent.0"]
    print(f"x_1 vs the original's latent after step 0: relative error {((x_1[0] - ref).norm() / ref.norm()):.1e}")
x_final = unipc(D, x, sigmas, cond=cond)  # all steps, order 2 with the corrector
print(f"after all {steps} steps: x[0, :4, 1, 2, 3] = {vec(x_final[0, :, 1, 2, 3])}")
if E:
    ref = E[f"sampler.latent.{steps - 1}"]
    print(f"final latent vs the original's: relative error {((x_final[0] - ref).norm() / ref.norm()):.1e}")


def schedule_plot(width=340, height=2 * TILE - 16):
    img = Image.new("RGB", (width, height), "white")
    dr = ImageDraw.Draw(img)
    fnt = font(11)
    x_of = lambda i: 30 + i * (width - 60) / steps  # noqa: E731
    y_of = lambda s: 10 + (1 - s) * (height - 40)  # noqa: E731
    dr.line([(30, y_of(0)), (width - 30, y_of(0))], fill=(160, 160, 160))
    pts = [(x_of(i), y_of(s)) for i, s in enumerate(sigmas.tolist())]
    dr.line(pts, fill=(40, 70, 160), width=2)
    for i, ((px, py), s) in enumerate(zip(pts, sigmas.tolist())):
        dr.ellipse((px - 3, py - 3, px + 3, py + 3), fill=(170, 30, 40))
        if i < steps:
            dr.text((px + 4, py - 2), f"t={int(flow_timestep()(torch.tensor([s]).float()))}", fill="black", font=fnt)
    dr.text((30, height - 24), f"sigma per step (1 at the top, 0 at the line), shift {shift}", fill="black", font=fnt)
    return np.asarray(img)


lim = float(max(x.abs().max(), m0.abs().max(), x_final.abs().max()))
quantities = [("x at sigma_0 (noise)", x), ("guided velocity v", v_guided), ("m = x - sigma_0 v", m0),
              ("x after step 1", x_1), (f"x after {steps} steps", x_final)]
cell = 8 if SMALL else 12
grid = labelled([[heat(z_[0, 0, j].numpy(), -lim, lim, cell=cell) for j in range(f)] for _, z_ in quantities],
                [q_ for q_, _ in quantities], [f"frame {j}" for j in range(f)],
                "channel 0 of each latent frame (one colour scale)")
plot = Image.fromarray(schedule_plot(height=grid.height))
both = Image.new("RGB", (grid.width + plot.width + 10, grid.height), "white")
both.paste(grid, (0, 0))
both.paste(plot, (grid.width + 10, 0))
save(both, "08_unipc_step.png")

# %% [markdown]
# ## 9. The full size, on the meta device
# The same classes at the released widths (PyTorch's meta device: shapes, no memory). At 81 frames of 480 x 832 the
# latent is 21 x 60 x 104, so the self-attention runs over 21 x 30 x 52 = 32,760 tokens -- every block, every step.

# %%
with torch.device("meta"):
    sizes = (("Wan2.1 I2V-14B", WanDiT(WanDiTConfig())),
             ("Wan2.2 TI2V-5B", WanDiT(WanDiTConfig(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48,
                                                    out_dim=48, image_dim=None))))
for name, m in sizes:
    print(f"full size {name}: {sum(p.numel() for p in m.parameters()):,} parameters, head width {m.config.head_dim}, "
          f"RoPE pairs {axis_pairs(m.config.head_dim)}")
print(f"81 frames at 480x832: latent (16, {(81 - 1) // 4 + 1}, {480 // 8}, {832 // 8}) -> "
      f"{((81 - 1) // 4 + 1) * (480 // 16) * (832 // 16):,} tokens")
