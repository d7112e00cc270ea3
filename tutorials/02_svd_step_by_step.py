# %% [markdown]
# # Stable Video Diffusion, step by step
#
# We build a *tiny* SVD from i2v's own modules, follow the tensor shapes through one denoising step, and then
# run the whole pipeline (conditioning -> sampling -> chunked decoding) on the reference case in seconds.
# Runs as plain Python: `python tutorials/02_svd_step_by_step.py`. Set `I2V_TUTORIAL_SMALL=1` for the CI size;
# figures go to `$I2V_TUTORIAL_OUT` (default `docs/figures/`).
#
# The real model is the same code with bigger numbers: U-Net 320 channels (1.5 B parameters), VAE 128 channels,
# ViT-H/14 image tower (632 M). See docs/svd.md for the architecture picture.

# %%
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from i2v.diffusion.denoisers import Denoiser, edm_v_scalings
from i2v.diffusion.guidance import CFGDenoiser, frame_ramp
from i2v.models.encoders.clip_vision import ClipVision, ClipVisionConfig
from i2v.models.svd.unet import SVDUNet, SVDUNetConfig
from i2v.models.svd.vae import SVDVAE, SVDVAEConfig
from i2v.pipelines.svd import SVDNetwork, SVDPipeline

SMALL = os.environ.get("I2V_TUTORIAL_SMALL") == "1"
ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("I2V_TUTORIAL_OUT", ROOT / "docs" / "figures"))
OUT.mkdir(parents=True, exist_ok=True)
SHARED = Path(os.environ.get("I2V_SHARED", ROOT.parent / "shared"))
torch.manual_seed(0)

# %% [markdown]
# ## 1. A tiny SVD from configs
# Three networks: the 3D U-Net (spatial + temporal layers), the VAE (image encoder, temporal video decoder)
# and the CLIP image tower. The configs are dataclasses; the loader infers them from checkpoint shapes.

# %%
unet_cfg = SVDUNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(1, 1),
                         num_head_channels=16, context_dim=64)
vae_cfg = SVDVAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1)
clip_cfg = ClipVisionConfig(image_size=224, patch_size=32, width=64, layers=2, heads=2, mlp_width=256, embed_dim=64)
unet, vae, clip = SVDUNet(unet_cfg).eval(), SVDVAE(vae_cfg).eval(), ClipVision(clip_cfg).eval()
with torch.no_grad():  # random weights; the temporal layers would start as identity in training
    for m in (unet, vae, clip):
        for p in m.parameters():
            p.normal_(0, 0.02) if p.ndim > 1 else p.zero_()
        for name, p in m.named_parameters():
            if name.endswith("weight") and p.ndim == 1:
                p.fill_(1.0)  # norms
for name, m in (("U-Net", unet), ("VAE", vae), ("CLIP", clip)):
    print(f"{name:6s} {sum(p.numel() for p in m.parameters()) / 1e6:6.2f} M parameters")

# %% [markdown]
# ## 2. Conditioning, with shapes
# SVD conditions on the *image* three ways: its CLIP embedding (cross-attention), its VAE latent (concatenated
# to the noisy latent as 4 extra channels) and a 768-d vector of sinusoids of fps, motion bucket and noise level.

# %%
T, H, W = 4, 64, 64
image = torch.rand(1, 3, H, W) * 2 - 1  # [-1, 1]
with torch.no_grad():
    crossattn = clip.embed(image)[:, None]  # resize to 224, CLIP-normalise, ViT, class token @ proj
    concat = vae.encode(image + 0.02 * torch.randn_like(image))  # VAE mode of the noised image, NOT x 0.18215
print("image      ", tuple(image.shape), "  (b, 3, H, W)")
print("crossattn  ", tuple(crossattn.shape), "  (b, 1, D)  CLIP image embedding")
print("concat     ", tuple(concat.shape), "  (b, 4, H/8, W/8)  VAE latent of the image")
pipe = SVDPipeline(unet, vae, clip, vae, keep_encoders=True, log=print)
cond, uncond = pipe.condition(image, T, fps_id=6, motion_bucket_id=127, cond_aug=0.02)
print("vector     ", tuple(cond["vector"].shape), "  (T, 768) = [emb(fps_id), emb(motion), emb(cond_aug)]")
print("per frame:  crossattn", tuple(cond["crossattn"].shape), " concat", tuple(cond["concat"].shape))

# %% [markdown]
# ## 3. One denoising step
# EDM-v preconditioning: `D(x, s) = c_skip x + c_out F(c_in x, c_noise)`; CFG mixes the [uncond; cond] batch with a
# per-frame scale; Euler moves x from sigma_0 to sigma_1 along `d = (x - D) / sigma`.

# %%
sigmas = pipe.sigmas(4)
s0 = sigmas[0].item()
x = torch.randn(T, 4, H // 8, W // 8) * math.sqrt(1 + s0**2)  # (T, 4, h, w) frames folded into the batch
c_skip, c_out, c_in, c_noise = edm_v_scalings(torch.tensor(s0))
print(f"sigma_0={s0:.1f}: c_skip={c_skip:.2e} c_out={c_out:.3f} c_in={c_in:.2e} c_noise={c_noise:.3f}")
net_in = torch.cat([x * c_in, cond["concat"]], dim=1)
print("U-Net input", tuple(net_in.shape), " (T, 4 noisy + 4 image-latent channels, h, w)")
D = Denoiser(SVDNetwork(unet), prediction="edm_v")
guided = CFGDenoiser(D, frame_ramp(1.0, 2.5, T))
print("CFG scale per frame:", [round(v, 2) for v in frame_ramp(1.0, 2.5, T).tolist()])
with torch.no_grad():
    denoised = guided(x, torch.full((T,), s0), {"cond": cond, "uncond": uncond})
d = (x - denoised) / s0
x1 = x + d * (sigmas[1].item() - s0)
print("denoised   ", tuple(denoised.shape), f" x: std {x.std():.1f} -> {x1.std():.1f} (sigma {s0:.0f} -> {sigmas[1]:.1f})")

# %% [markdown]
# ## 4. The whole pipeline on the reference case
# `../shared/reference/svd-sgm-tiny` holds a tiny SVD in the original single-file layout (random weights) and the
# original code's outputs; `tests/test_svd_golden.py` checks every stage. Here we just run it. Without ../shared
# we run our random tiny model instead. (Head widths are not stored in checkpoints: 16/32 for this tiny case.)

# %%
case = SHARED / "reference" / "svd-sgm-tiny" / "checkpoint.safetensors"
if case.exists():
    pipe = SVDPipeline.from_pretrained(case, unet_head_channels=16, clip_head_width=32)
    from safetensors import safe_open

    with safe_open(str(SHARED / "reference" / "svd-sgm-tiny" / "expected.safetensors"), framework="pt") as f:
        image = f.get_tensor("inputs.image").float()
else:
    print(f"{case} not found: running the random tiny model")
    pipe = SVDPipeline(unet, vae, clip, vae, keep_encoders=True)
frames = pipe(image, frames=2 if SMALL else 4, steps=1 if SMALL else 8, seed=0, decode_chunk_size=2)
print("frames", tuple(frames.shape), "in [0, 1]")

# %%
strip = np.concatenate([((image[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).byte().numpy()]
                       + [(f.permute(1, 2, 0) * 255).round().byte().numpy() for f in frames], axis=1)
Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.NEAREST).save(OUT / "svd_tiny_frames.png")
print("wrote", OUT / "svd_tiny_frames.png", "(input, then the generated frames; random weights -> texture, not motion)")
