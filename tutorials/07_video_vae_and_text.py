# %% [markdown]
# # 07 · Wan's causal video VAE, and a prompt turned into T5 embeddings
#
# A Wan model never sees pixels or letters. Before the diffusion transformer of tutorial 08 runs:
#
# * the **causal 3D VAE** (`i2v/models/wan/vae.py`, Wan2.1; `vae22.py`, Wan2.2) turns a clip of 1 + 4k frames into
#   1 + k latent frames, 8x (2.2: 16x) smaller in height and width, and back. *Causal*: a latent frame depends only
#   on the present and past pixel frames, so an image is simply a one-frame video, and a long clip can be encoded
#   and decoded in pieces with a small **feature cache** instead of all at once;
# * the **prompt** is cleaned, cut into the pieces of a Unigram vocabulary (`i2v/text/tokenizer.py`), padded to
#   512 ids with a mask, and the **umT5 encoder** (`i2v/models/encoders/t5.py`) turns the ids into one vector per
#   token -- the rows the DiT's cross-attention reads.
#
# **About the weights.** The reference files in `../shared/reference/wan21-i2v-tiny` and `wan22-ti2v-tiny` have the
# released files' names and key layouts (`Wan2.1_VAE.pth`, `Wan2.2_VAE.pth`, `models_t5_umt5-xxl-enc-bf16.pth`,
# `google/umt5-xxl/tokenizer.json`) at a tiny width, with **RANDOM weights** and a 124-piece tokenizer. Every
# mechanism below is exact -- the shapes, the causality, the cache, the token ids, the position buckets; the
# numbers match the original Wan code's run on the same files -- but the decoded frames and the embeddings are
# *not* meaningful pictures. Point the same loaders at the released files for real ones. Without `../shared` the
# tutorial builds random models of the same tiny sizes and a small tokenizer.json, and says so.
#
# `python tutorials/07_video_vae_and_text.py`; figures go to `$I2V_TUTORIAL_OUT` (default `docs/figures/`);
# `I2V_TUTORIAL_SMALL=1` is the CI setting (fewer clip lengths, smaller figures).

# %%
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # use this checkout's i2v
from i2v.errors import InputError  # noqa: E402
from i2v.figures import panel  # noqa: E402
from i2v.models.encoders.t5 import Config as T5Config, T5Encoder, encode_prompts  # noqa: E402
from i2v.models.wan.vae import CausalCache, Wan21VAE, Wan21VAEConfig, load_vae  # noqa: E402
from i2v.models.wan.vae22 import Wan22VAE, Wan22VAEConfig  # noqa: E402
from i2v.text.prompt import clean_prompt  # noqa: E402
from i2v.text.tokenizer import Tokenizer  # noqa: E402

SMALL = os.environ.get("I2V_TUTORIAL_SMALL") == "1"
OUT = Path(os.environ.get("I2V_TUTORIAL_OUT", ROOT / "docs" / "figures"))
OUT.mkdir(parents=True, exist_ok=True)
SHARED = Path(os.environ.get("I2V_SHARED", ROOT.parent / "shared"))
TILE = 80 if SMALL else 112  # figure row height in pixels
torch.set_num_threads(1)  # tiny models: threads only add overhead
torch.manual_seed(0)


def figure(rows, name):
    """Rows of (images, labels[, height]), each row drawn by i2v.figures.panel (every image scaled to the row's
    height, default TILE), stacked top to bottom into OUT/name and re-saved with a 256-colour palette (a third of
    the size, for the docs)."""
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
    save(fig, name)


def save(img, name):
    img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(OUT / name, optimize=True)
    print("wrote", OUT / name)


def rgb(frame):
    """(3, h, w) in [-1, 1] -> (h, w, 3) uint8, each pixel repeated so the tile is about TILE high."""
    img = ((frame.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    k = max(1, TILE // img.shape[0])
    return np.repeat(np.repeat(img, k, 0), k, 1)


def heat(a, lo=None, hi=None, cell=1):
    """(h, w) numbers -> (h, w, 3) uint8: dark blue (low) .. white .. dark red (high), centred on 0 unless lo/hi given;
    each value drawn as a cell x cell block."""
    a = np.asarray(a, np.float64)
    m = np.abs(a).max() or 1.0
    lo, hi = (-m if lo is None else lo), (m if hi is None else hi)
    u = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)[..., None] * 2 - 1  # -1 .. 1
    blue, white, red = np.array([40, 70, 160.0]), np.array([250, 250, 250.0]), np.array([170, 30, 40.0])
    img = np.where(u < 0, white + (blue - white) * -u, white + (red - white) * u).round().astype(np.uint8)
    return np.repeat(np.repeat(img, cell, 0), cell, 1)


def font(size=13):
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        with contextlib.suppress(OSError):
            return ImageFont.truetype(name, size)
    return ImageFont.load_default()


# %% [markdown]
# ## 1. The files
# Each piece loads from the file people download, through the public loaders: `load_vae` reads the version (2.1 or
# 2.2) and the widths off the tensor shapes; `T5Encoder.from_pretrained` likewise; `Tokenizer.from_file` reads a
# Hugging Face `tokenizer.json`.

# %%
RANDOM = "RANDOM weights: the mechanics are exact, the pictures are not meaningful"
case, case22 = SHARED / "reference" / "wan21-i2v-tiny", SHARED / "reference" / "wan22-ti2v-tiny"
E = {}
if (case / "Wan2.1_VAE.pth").exists():
    vae = load_vae(case / "Wan2.1_VAE.pth")
    t5 = T5Encoder.from_pretrained(case / "models_t5_umt5-xxl-enc-bf16.pth")  # bf16 file, computed in float32
    tokenizer = Tokenizer.from_file(case / "google" / "umt5-xxl")
    settings = json.loads((case / "case.json").read_text())["settings"]
    prompt = settings["prompt"]
    from safetensors.torch import load_file

    E = load_file(case / "expected.safetensors")  # what the original Wan code computed from these files
    print(f"Wan2.1 VAE, umT5 and tokenizer: the reference files in {case} -- {RANDOM}")
else:
    # the reference's tiny sizes, PyTorch's default initialisation
    vae = Wan21VAE(Wan21VAEConfig(dim=16)).eval()
    t5 = T5Encoder(T5Config(vocab=128, dim=32, dim_attn=32, dim_ffn=64, num_heads=2, num_layers=2)).eval()
    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"&<>-—é")
    words = ["▁the", "▁ca", "ame", "igh", "▁wa", "▁sa", "low", "old", "▁to", "in", "er", "on", "▁st", "ow"]
    spec = {  # a Unigram tokenizer.json with umT5's structure, written here (umT5 has a Precompiled normaliser)
        "version": "1.0",
        "added_tokens": [{"id": i, "content": c, "special": True, "normalized": False, "lstrip": False,
                          "rstrip": False, "single_word": False} for i, c in enumerate(["<pad>", "</s>", "<unk>"])],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFKC"}, {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
        "post_processor": {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}},
                                                                    {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
        "model": {"type": "Unigram", "unk_id": 2, "byte_fallback": False,
                  "vocab": [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0], ["▁", -1.7]]
                  + [[c, round(-2.5 - 0.02 * i, 4)] for i, c in enumerate(chars)]
                  + [[w, round(-4.0 - 0.1 * i, 4)] for i, w in enumerate(words)]}}
    folder = Path(tempfile.mkdtemp()) / "umt5-tiny"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    tokenizer = Tokenizer.from_file(folder)
    prompt = ("A red fox  trots through fresh snow &amp;amp; the camera follows it slowly,\n“soft” morning light, "
              "café-style bokeh — ＨＤ &lt;3")
    print(f"no {case} (../shared is absent): a randomly initialised tiny Wan2.1 VAE and umT5, and a "
          f"{len(spec['model']['vocab'])}-piece tokenizer.json written here -- {RANDOM}")
if (case22 / "Wan2.2_VAE.pth").exists():
    vae22 = load_vae(case22 / "Wan2.2_VAE.pth")
else:
    vae22 = Wan22VAE(Wan22VAEConfig(dim=12, dec_dim=12)).eval()
for name, m in (("Wan2.1 VAE", vae), ("Wan2.2 VAE", vae22), ("umT5", t5)):
    print(f"{name:10s} {sum(p.numel() for p in m.parameters()) / 1e6:6.2f} M parameters")

# %% [markdown]
# ## 2. A clip, and an image as a one-frame video
# The clip: a camera panning over a photo (`vae_rt.in` of the reference case, a crop sliding over Dimetrodon; without
# `../shared`, a synthetic scene). Pixels are in [-1, 1], laid out (b, 3, T, H, W). `encode` returns the posterior
# mean mu normalised per channel with Wan's 16 constants, z = (mu - mean) / std (the log-variance is dropped). The
# numbers printed are those of the original code's run on the same clip (`tests/test_tutorial_07.py` checks them).
#
# Every convolution that mixes frames in this VAE pads time only on the *past* side (2 zero frames before a 3-tap
# kernel), so output frame t sees input frames t-2..t, never t+1. Frame 0 then has no past at all: the latent of
# frame 0 of a video is the latent of that frame alone. That is why Wan's image-to-video conditioning can encode
# "the image followed by zero frames", and why Wan2.2 can put an image's latent in place of latent frame 0.

# %%
if "vae_rt.in" in E:
    clip = E["vae_rt.in"][None]  # (1, 3, 9, 48, 64)
else:
    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w + 40]
    scene = np.stack([np.sin(xx / 5.0), np.cos(yy / 7.0), np.sin((xx + yy) / 9.0)], 0) * 0.6
    scene[:, 12:30, 30:50] = [[[0.9]], [[-0.6]], [[-0.4]]]  # a red box the camera passes
    clip = torch.from_numpy(np.stack([scene[:, :, 4 * k:4 * k + w] for k in range(9)], 1)).float()[None]
T = clip.shape[2]
z = vae.encode(clip)  # normalised latents (mu - mean) / std, (1, 16, 1 + (T - 1) / 4, H / 8, W / 8)
z_image = vae.encode(clip[:, :, :1])
print("clip", tuple(clip.shape), "(b, 3, T, H, W) ->  latent", tuple(z.shape), "(b, 16, t, H/8, W/8)")
print("image", tuple(clip[:, :, :1].shape), "-> latent", tuple(z_image.shape))
print(f"latent frame 0 of the clip vs the image's own latent: max |diff| {(z[:, :, :1] - z_image).abs().max():.1e}")
print("z[0, :4, 0, 0, 0] =", [round(v, 4) for v in z[0, :4, 0, 0, 0].tolist()],
      f"  z[0, :4, 2, 3, 5] = {[round(v, 4) for v in z[0, :4, 2, 3, 5].tolist()]}")

# %% [markdown]
# ## 3. Four frames per latent frame
# Time is halved twice by stride-2 convolutions that keep frame 0 as it is: 1 + 4k -> 1 + 2k -> 1 + k. So the
# encoder takes 1 + 4k frames (Wan's 81 -> 21 latent frames), and the decoder makes 1 pixel frame of latent frame 0
# and 4 of every later one. Any other count is refused with the counts that work.

# %%
for n in (1, 5, 9) if SMALL else (1, 5, 9, 13, 17):
    frames = clip[:, :, :1].repeat(1, 1, n, 1, 1) if n > T else clip[:, :, :n]
    print(f"  T = {n:2d} pixel frames -> latent {tuple(vae.encode(frames).shape)}")
try:
    vae.encode(clip[:, :, :8])
except InputError as e:
    print("  T =  8:", e)
pieces = [p.shape[2] for p in vae.decode_frames(z)]
decoded = vae.decode(z, clamp=False)  # the raw decoder output (Wan's decode then clamps to [-1, 1])
print("decode: latent frame by latent frame ->", pieces, "pixel frames; video", tuple(decoded.shape))
print("decoded[0, :, 4, 10, 20] =", [round(v, 4) for v in decoded[0, :, 4, 10, 20].tolist()])


def channel_mosaic(zf):
    """(16, h, w) latent frame -> a 4 x 4 mosaic of its channels, each channel its own colour range."""
    c, h, w = zf.shape
    tiles = [heat(ch - ch.mean()) for ch in zf.numpy()]
    side = int(np.ceil(np.sqrt(c)))
    grid = np.full((side * (h + 1) - 1, side * (w + 1) - 1, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, q = divmod(i, side)
        grid[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = tile
    k = max(1, TILE // grid.shape[0])
    return np.repeat(np.repeat(grid, k, 0), k, 1)


figure([([rgb(f) for f in clip[0].unbind(1)], [f"frame {k}" for k in range(T)]),
        ([channel_mosaic(zf) for zf in z[0].unbind(1)],
         [f"latent {j} ({'frame 0' if j == 0 else f'{4 * j - 3}-{4 * j}'})" for j in range(z.shape[2])]),
        ([rgb(f) for f in decoded[0].unbind(1)], [f"decoded {k}" for k in range(T)])],
       "07_vae_clip.png")
print("(the decoded frames come from random weights: texture, not the clip)")

# %% [markdown]
# ## 4. Causality, measured
# Change one pixel frame and see which latent frames move; change one latent frame and see which decoded frames
# move. Latent frame j summarises pixel frames 4j-3..4j and depends on everything before them, nothing after:
# pixel frame k reaches latent frames j >= k/4. Decoding, latent frame j (j >= 1) makes pixel frames 4j-3..4j
# and reaches every later one through the causal convolutions.

# %%
t = z.shape[2]
enc_dep = np.zeros((T, t), bool)
for k in range(T):
    moved = clip.clone()
    moved[:, :, k] += 0.5 * torch.randn_like(moved[:, :, k])
    enc_dep[k] = (vae.encode(moved.clamp(-1, 1)) - z).abs().amax(dim=(0, 1, 3, 4)).numpy() > 0
    print(f"  pixel frame {k} changes latent frames {np.flatnonzero(enc_dep[k]).tolist()}")
dec_dep = np.zeros((t, T), bool)
for j in range(t):
    moved = z.clone()
    moved[:, :, j] += torch.randn_like(moved[:, :, j])
    dec_dep[j] = (vae.decode(moved, clamp=False) - decoded).abs().amax(dim=(0, 1, 3, 4)).numpy() > 0
    print(f"  latent frame {j} changes decoded frames {np.flatnonzero(dec_dep[j]).tolist()}")


def dependency(dep, rows, cols, title, cell=20):
    """A drawn matrix: a red cell where changing row item i changed column item j."""
    f = font(12)
    left, top = 84, 52
    width = max(left + dep.shape[1] * cell, int(f.getlength(title)), left + int(f.getlength(cols))) + 8
    img = Image.new("RGB", (width, top + dep.shape[0] * cell + 8), "white")
    d = ImageDraw.Draw(img)
    d.text((4, 2), title, fill="black", font=f)
    d.text((left, 20), cols, fill=(80, 80, 80), font=f)
    for i in range(dep.shape[0]):
        d.text((left - 14 - 7 * len(str(i)), top + i * cell + 3), str(i), fill="black", font=f)
        for j in range(dep.shape[1]):
            x, y = left + j * cell, top + i * cell
            d.rectangle((x, y, x + cell - 2, y + cell - 2), fill=(200, 60, 50) if dep[i, j] else (232, 232, 232))
    for j in range(dep.shape[1]):
        d.text((left + j * cell + 6, top - 16), str(j), fill="black", font=f)
    d.multiline_text((4, top + dep.shape[0] * cell // 2 - 12), rows, fill=(80, 80, 80), font=f)
    return img


enc_img = dependency(enc_dep, "pixel\nframe k", "latent frame j", "encode: pixel frame k -> latent frames it changes")
dec_img = dependency(dec_dep, "latent\nframe j", "pixel frame k", "decode: latent frame j -> pixel frames it changes")
both = Image.new("RGB", (enc_img.width + dec_img.width + 30, max(enc_img.height, dec_img.height)), "white")
both.paste(enc_img, (0, 0))
both.paste(dec_img, (enc_img.width + 30, 0))
save(both, "07_causality.png")

# %% [markdown]
# ## 5. The feature cache, drawn
# Because nothing looks ahead, the clip can go through the encoder in chunks of 1, 4, 4, ... frames with exactly
# the numbers of one pass over the whole clip -- if every causal layer is handed the last frames of its input from
# the previous chunk instead of zeros. That memory is `CausalCache`: each 3-tap causal convolution keeps the last
# 2 frames it saw (`CACHE_T`), each time-downsampling layer the last 1. The encoder's memory is then that of one
# chunk whatever the length of the clip; the decoder goes one latent frame at a time the same way.
#
# `vae.encode` does exactly the loop below; a `CausalCache` that also writes down what each layer got back shows
# the traffic. In the picture each row is one chunk at one layer: the chunk's own frames (colour), the frames the
# cache put in front (outlined) and the zeros before the clip's start (grey), on that layer's time axis.

# %%
names = {m: n for n, m in vae.named_modules()}


class LoggingCache(CausalCache):
    """A CausalCache that records (layer, frames handed back from the previous chunk, new frames, frames kept)."""

    def __init__(self):
        super().__init__()
        self.log = []

    def remember(self, layer, x, n):
        past = super().remember(layer, x, n)
        self.log.append((names[layer], len(past), x.shape[2], n))
        return past


cache = LoggingCache()
chunks = [clip[:, :, :1], *clip[:, :, 1:].split(4, dim=2)]  # 1, 4, 4, ... frames
with torch.no_grad():
    mu = vae.conv1(torch.cat([vae.encoder(c, cache) for c in chunks], dim=2))[:, :vae.z_dim]
mean, std = (torch.tensor(s).view(1, -1, 1, 1, 1) for s in (vae.MEAN, vae.STD))
print(f"the loop above vs vae.encode: max |diff| {((mu - mean) / std - z).abs().max():.1e}")
print(f"chunked vs one pass (chunked=False): max |diff| {(vae.encode(clip, chunked=False) - z).abs().max():.1e} "
      "(float32 rounding: other convolution kernels, the same sums)")
per_chunk = len(cache.log) // len(chunks)
convs = [(name, k) for name, _, _, k in cache.log[:per_chunk]]
print(f"{sum(k == 2 for _, k in convs)} causal convolutions keep 2 frames, {sum(k == 1 for _, k in convs)} "
      "time downsamplers keep 1")


def cache_kib(video):
    """KiB the cache holds after encoding ``video`` chunk by chunk."""
    c = CausalCache()
    with torch.no_grad():
        for piece in [video[:, :, :1], *video[:, :, 1:].split(4, dim=2)]:
            vae.encoder(piece, c)
    return sum(f.numel() * f.element_size() for frames in c.tail.values() for f in frames) / 1024


long = torch.cat([clip, clip[:, :, 1:]], dim=2)  # 17 frames
print(f"the cache holds {cache_kib(clip):.0f} KiB after {T} frames and {cache_kib(long):.0f} KiB after "
      f"{long.shape[2]} (the clip itself: {clip.numel() * 4 / 1024:.0f} KiB, {long.numel() * 4 / 1024:.0f} KiB)")
first = {}  # the first layer of each kind (frames per chunk, frames kept), in network order
for name, past, new, keep in cache.log[per_chunk:2 * per_chunk]:  # the second chunk shows the time resolution
    first.setdefault((new, keep), name)
shown = list(first.values())
for name in shown:
    rows = [(past, new, keep) for n, past, new, keep in cache.log if n == name]
    parts = [f"chunk {c + 1}: " + (f"{keep - past} zero + " if keep == 2 and past < keep else "")
             + (f"{past} cached + " if past else "") + f"{new} new" for c, (past, new, keep) in enumerate(rows)]
    print(f"  {name:34s}", " | ".join(parts))


def draw_cache(layers, cell=22):
    """Per layer and chunk, the frames the layer works on, on that layer's time axis (frame numbers inside)."""
    f = font(12)
    left = 60 + 2 * cell  # room for "chunk c" and the zero frames before the clip
    steps = [[(past, new, keep) for n, past, new, keep in cache.log if n == name] for name in layers]
    width = left + (max(sum(r[1] for r in rows) for rows in steps) + 1) * cell + 220
    width = max(width, 560)
    height = 44 + sum(len(rows) * (cell + 3) + 24 for rows in steps)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((4, 4), "what each layer sees per chunk: its own frames (filled), frames the cache hands back", fill="black",
           font=f)
    d.text((4, 20), "from the previous chunk (outlined), zeros before the clip (grey); frame numbers at that layer",
           fill="black", font=f)
    colours = [(120, 160, 220), (235, 160, 100), (130, 195, 130), (200, 130, 195), (205, 195, 95)]
    y = 44
    for name, rows in zip(layers, steps):
        kind = "causal 3-tap conv, keeps 2 frames" if rows[0][2] == 2 else "time downsampler, keeps 1 frame"
        d.text((4, y), f"{name} ({kind})", fill="black", font=f)
        y += 18
        start = 0
        for c, (past, new, keep) in enumerate(rows):
            d.text((4, y + 4), f"chunk {c + 1}", fill=(90, 90, 90), font=f)
            zeros = keep - past if keep == 2 else 0
            for i in range(-past - zeros, new):
                x = left + (start + i) * cell
                box = (x, y, x + cell - 3, y + cell - 3)
                if i < -past:
                    d.rectangle(box, fill=(215, 215, 215))
                    d.text((x + 6, y + 3), "0", fill=(120, 120, 120), font=f)
                    continue
                if i < 0:
                    d.rectangle(box, outline=colours[(c - 1) % 5], width=3)
                else:
                    d.rectangle(box, fill=colours[c % 5])
                d.text((x + 4, y + 3), str(start + i), fill="black", font=f)
            start += new
            y += cell + 3
        y += 6
    return img


save(draw_cache(shown), "07_feature_cache.png")

# %% [markdown]
# ## 6. Wan2.2: 16x16 and 48 channels
# Wan2.2's VAE (TI2V-5B) first folds every 2x2 block of pixels into channels (3 -> 12 at half the size), then runs
# the same kind of causal 8x network: 4x16x16 compression to 48 channels. Per latent number it stores 64 pixel
# values instead of 48 (4 * 8 * 8 * 3 / 16) -- the same causal machinery and cache, reused, not copied.

# %%
clip22 = torch.nn.functional.interpolate(clip[0].transpose(0, 1), size=(64, 64), mode="bilinear").transpose(0, 1)[None]
z22 = vae22.encode(clip22)
print(f"Wan2.2: {tuple(clip22.shape)} -> patchify {tuple(vae22.patchify(clip22).shape)} -> latent {tuple(z22.shape)}")
for v, name in ((vae, "Wan2.1"), (vae22, "Wan2.2")):
    st, ss = v.temporal_stride, v.spatial_stride
    print(f"{name}: {st}x{ss}x{ss} to {v.z_dim} channels = {3 * st * ss * ss // v.z_dim} pixel values per latent "
          f"number; 81 frames at 480x832 -> latent ({v.z_dim}, {(81 - 1) // st + 1}, {480 // ss}, {832 // ss})")

# %% [markdown]
# ## 7. The prompt: cleaning, then Unigram pieces
# Wan cleans every prompt first (`i2v/text/prompt.py`): `ftfy.fix_text` (curly quotes, fullwidth letters, broken
# encodings), HTML entities decoded twice, whitespace collapsed. The tokenizer then normalises (umT5: a compiled
# NFKC-like character map), marks word starts with "▁" (Metaspace) and cuts each word into vocabulary pieces.
#
# The Unigram model gives every piece x a log-probability score s(x) and picks, per word, the segmentation
# x_1..x_k with the largest sum of s(x_i) (Kudo 2018) -- found by Viterbi over the character positions:
# `best[j] = max_i best[i] + s(word[i:j])`. Written out here for one word, it agrees with `Tokenizer.viterbi`.

# %%
cleaned = clean_prompt(prompt)
print("raw prompt:", repr(prompt))
print("cleaned:   ", cleaned)
tokens = tokenizer.tokenize_with_ids(cleaned)
pieces = [p for p, _ in tokens] + ["</s>"]
ids = tokenizer.encode(cleaned)
print(f"pieces ({len(pieces)}):", pieces)
print("ids:", ids)
unknown = [p for p, i in tokens if i == tokenizer.unk_id]
print(f"pieces the vocabulary does not have become <unk> (id {tokenizer.unk_id}): {unknown}")
word = "▁camera"
score = {p: s for p, (_, s) in tokenizer.vocab.items()}
best, back = [0.0] + [-np.inf] * len(word), [0] * (len(word) + 1)
for j in range(1, len(word) + 1):
    for i in range(j):  # the best segmentation of word[:j] ending with the piece word[i:j]
        if word[i:j] in score and best[i] + score[word[i:j]] > best[j]:
            best[j], back[j] = best[i] + score[word[i:j]], i
seg, j = [], len(word)
while j:
    seg.insert(0, word[back[j]:j])
    j = back[j]
assert seg == [p for p, _ in tokenizer.viterbi(word)]
print(f"best segmentation of {word!r}: {seg} score {best[-1]:.5f} "
      f"(one piece per character: {sum(score[ch] for ch in word):.5f})")

# %%
f = font(14)
rows, line, x = [], [], 0
for k, (p, i) in enumerate(list(tokens) + [("</s>", tokenizer.token_id("</s>"))]):
    w = max(int(f.getlength(p)) + 10, int(f.getlength(str(i))) + 10, 22)
    if x + w > 1100:
        rows.append(line)
        line, x = [], 0
    line.append((p, i, x, w))
    x += w + 3
rows.append(line)
img = Image.new("RGB", (1104, 28 + len(rows) * 46), "white")
d = ImageDraw.Draw(img)
d.text((4, 4), f"cleaned prompt -> {len(pieces)} pieces (top) and their ids (bottom); ▁ marks a word start",
       fill="black", font=f)
palette = [(200, 220, 245), (250, 215, 180), (205, 235, 200), (235, 205, 235)]
for r, line in enumerate(rows):
    y = 28 + r * 46
    for k, (p, i, x, w) in enumerate(line):
        d.rectangle((x + 2, y, x + 2 + w, y + 40), fill=palette[(k + r) % 4])
        d.text((x + 7, y + 2), p, fill="black", font=f)
        d.text((x + 7, y + 21), str(i), fill=(90, 90, 90), font=f)
save(img, "07_tokens.png")

# %% [markdown]
# ## 8. Ids and mask
# The text encoder always reads 512 positions: the ids, `</s>` (id 1), then `<pad>` (id 0) to 512, and a mask that
# is 1 on the real tokens. (A longer prompt keeps its first 511 tokens and `</s>`, with a warning.)

# %%
batch = tokenizer.encode_batch([cleaned], length=512)
L = batch.lengths[0]
print(f"ids (1, 512): {L} tokens then {512 - L} <pad>; mask: {int(batch.mask.sum())} ones then "
      f"{int((batch.mask == 0).sum())} zeros")

# %% [markdown]
# ## 9. umT5 embeddings of the prompt
# The encoder (`T5Encoder`): token embedding, then blocks of self-attention and gated-GELU feed-forward with RMS
# norms. It has no absolute positions: each block adds a learned **relative position bias** B[h, i, j] =
# table[bucket(j - i), h] to the attention logits (umT5: one table per block; T5 v1.1 shares one). The bucket of a
# distance is exact up to 7 in each direction, then logarithmic up to 128, shared beyond -- drawn below for the
# first 64 positions. Padding keys are masked, so the real rows do not depend on the padding: Wan keeps the first L
# rows (`encode_prompts`). Random weights: the embedding is a pattern of numbers, not a meaning.

# %%
emb = encode_prompts(t5, tokenizer, [prompt])[0]  # (L, dim): cleaned, tokenized, encoded, trimmed
full = t5(batch.ids, batch.mask)[0, :L]  # all 512 positions, padding masked
print(f"T5 output {tuple(emb.shape)}: mean {emb.mean():.4f}, std {emb.std():.4f}, "
      f"[0, :4] = {[round(v, 4) for v in emb[0, :4].tolist()]}")
print(f"run on 512 positions vs on {L}: max |diff| of the kept rows {(full - emb).abs().max():.1e}")
rel_pos = torch.tensor([-200, -128, -20, -8, -7, -1, 0, 1, 7, 8, 20, 128, 200])
buckets = t5.blocks[0].pos_embedding.bucket(rel_pos)
print(f"bucket(j - i) for j - i = {rel_pos.tolist()}: {buckets.tolist()}")
n = 64
grid = t5.blocks[0].pos_embedding.bucket(torch.arange(n)[None, :] - torch.arange(n)[:, None]).numpy()
half = t5.cfg.num_buckets // 2
signed = np.where(grid >= half, grid - half, -grid)  # keys after the query: red by bucket, before: blue
unit = emb / emb.norm(dim=1, keepdim=True)
mask_strip = np.where(batch.mask.view(8, 64).numpy()[..., None] == 1, np.array([60, 120, 200], np.uint8),
                      np.array([225, 225, 225], np.uint8))
figure([([np.repeat(np.repeat(mask_strip, 6, 0), 6, 1)], ["the mask over 512 positions, 8 rows of 64: blue = token"],
         48),
        ([heat(emb.numpy().T, cell=4), heat(signed, cell=2),
          heat((unit @ unit.T).numpy(), -1, 1, cell=2)],
         [f"T5 output: {emb.shape[1]} channels (rows) x {L} tokens", f"bucket(j - i): {n} queries x keys",
          "cosine of token rows"], 2 * TILE)],
       "07_t5.png")

# %% [markdown]
# ## 10. The full size, on the meta device
# The same classes at the released widths, built on PyTorch's meta device (shapes, no memory): what
# `from_pretrained` fills from `Wan2.1_VAE.pth`, `Wan2.2_VAE.pth` and `models_t5_umt5-xxl-enc-bf16.pth`.

# %%
with torch.device("meta"):
    full_models = (("Wan2.1 VAE", Wan21VAE()), ("Wan2.2 VAE", Wan22VAE()), ("umT5-XXL encoder", T5Encoder(T5Config())))
for name, m in full_models:
    print(f"full size {name}: {sum(p.numel() for p in m.parameters()):,} parameters")
print(f"umT5-XXL: {T5Config().num_layers} blocks of width {T5Config().dim}, {T5Config().num_heads} heads, "
      f"{T5Config().vocab:,} pieces")
