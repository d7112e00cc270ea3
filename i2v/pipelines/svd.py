"""Stable Video Diffusion: one image in, a few seconds of video out. Thin orchestration of i2v's own modules.

Paper: Blattmann et al. 2023, "Stable Video Diffusion: Scaling Latent Video Diffusion Models to Large Datasets".
Original code: Stability-AI/generative-models (``scripts/sampling/simple_video_sample.py``, ``configs/inference/
svd.yaml``, ``sgm/modules/encoders/modules.py``, ``sgm/modules/diffusionmodules/{denoiser,sampling,guiders}.py``).

Data flow (T frames, image H x W, latents h = H/8, w = W/8)::

    image (1, 3, H, W) in [-1, 1]
      |-- CLIP ViT image tower (resized to 224) ---------------> crossattn (1, 1, D)    uncond: zeros
      |-- + cond_aug * noise -> VAE encoder mode (NOT x0.18215) -> concat  (1, 4, h, w) uncond: zeros
      '-- fps_id, motion_bucket_id, cond_aug -> 3 x sinusoid(256) -> vector (T, 768)  uncond: the same
    crossattn and concat are repeated over the T frames, frames are folded into the batch: (T, ...).

    noise (T, 4, h, w) * sqrt(1 + sigma_0^2)
      -> sampler( D = CFG_ramp( EDM-v preconditioning( U-Net([x, concat], c_noise, crossattn, vector) ) ),
                  karras sigmas 700 -> 0.002, then 0 )
      -> latents (T, 4, h, w) -> / 0.18215 -> temporal VAE decoder in chunks of frames -> (T, 3, H, W)

The denoiser is ``D(x, s) = x / (s^2+1) - s / sqrt(s^2+1) * F(x / sqrt(s^2+1), 0.25 ln s)`` (v-prediction with EDM
noise conditioning, :func:`i2v.diffusion.denoisers.edm_v_scalings`); classifier-free guidance runs the batch
[uncond; cond] and mixes with a per-frame scale ``linspace(min_cfg, max_cfg, T)`` (:func:`frame_ramp`).

Presets (frames, steps, CFG ramp) come from the checkpoint: a diffusers folder's ``unet/config.json`` says
``num_frames`` (25 -> svd_xt); a single file has no such field (svd and svd_xt have identical keys and shapes),
so its name decides: ``*xt*`` -> svd_xt, otherwise svd. ``preset=`` overrides either.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import latents as latents_file
from .. import runtime
from ..diffusion.catalog import check_sampler
from ..diffusion.denoisers import Denoiser, initial_noise
from ..diffusion.guidance import CFGDenoiser, frame_ramp
from ..diffusion.samplers import get_sampler, progress_callback
from ..diffusion.schedules import get_schedule
from ..errors import ConfigError, InputError, NumericalError
from ..image import cover_crop, to_tensor
from ..models.svd.checkpoint import PARTS, load_svd_parts
from ..nn.embeddings import timestep_embedding
from ..runtime import check_count

SCALE_FACTOR = 0.18215  # latent scale of the SD/SVD autoencoder: the diffusion model sees z * 0.18215
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 700.0, 7.0
SIGMA_RANGE_SCHEDULES = {"karras", "exponential"}  # schedules that take sigma_min/sigma_max (SVD's 0.002..700)
MIN_SIDE = 64


@dataclass(frozen=True)
class SVDPreset:
    frames: int
    steps: int
    min_cfg: float
    max_cfg: float


PRESETS = {
    "svd": SVDPreset(frames=14, steps=25, min_cfg=1.0, max_cfg=2.5),
    "svd_xt": SVDPreset(frames=25, steps=30, min_cfg=1.5, max_cfg=3.0),
}


def preset_for(path) -> str:
    """svd or svd_xt for a checkpoint: see the module docstring for the rule."""
    path = Path(path)
    cfg = path / "unet" / "config.json"
    if path.is_dir() and cfg.is_file():
        return "svd_xt" if json.loads(cfg.read_text()).get("num_frames", 14) >= 25 else "svd"
    return "svd_xt" if "xt" in path.name.lower() else "svd"


class SVDNetwork(nn.Module):
    """The raw network F seen by the preconditioning: concatenates the conditioning latent to the noisy latent
    and passes crossattn/vector to the U-Net. ``F(x, c_noise, crossattn, concat, vector, num_frames)``."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x, c_noise, *, crossattn, concat, vector, num_frames: int):
        dtype = concat.dtype  # the model's dtype (the sampler state may be float64)
        x = torch.cat([x.to(dtype), concat], dim=1)  # ((b t), 4 + 4, h, w)
        return self.unet(x, c_noise.to(dtype), context=crossattn, y=vector, num_video_frames=num_frames)


def _finite(x: torch.Tensor, stage: str, dtype) -> torch.Tensor:
    if not torch.isfinite(x).all():
        hint = " (float16 overflow is common: try bfloat16 or float32)" if dtype == torch.float16 else ""
        raise NumericalError(f"NaN/inf in {stage}{hint}")
    return x


# ---------------------------------------------------------------------------------------------------- image

def fit_image(x: torch.Tensor, width: int | None = None, height: int | None = None, log=print) -> torch.Tensor:
    """Resize/crop (1, 3, h, w) to a size whose sides are multiples of 64 (the U-Net halves the latent 3 times).
    Given ``width``/``height``: cover that size keeping the aspect ratio, centre-crop. Otherwise keep the size
    (downscaled so the long side is at most 1024, SVD's native 1024x576), centre-cropped to multiples of 64."""
    h, w = x.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"image is {w}x{h}; both sides must be at least {MIN_SIDE} px")
    for name, v in (("width", width), ("height", height)):
        if v is not None and (v < MIN_SIDE or v % 64):
            raise ConfigError(f"{name} must be a multiple of 64 and >= 64, got {v}")
    if width is None and height is None:
        s = min(1.0, 1024 / max(h, w))
        height, width = max(64, int(h * s) // 64 * 64), max(64, int(w * s) // 64 * 64)
    elif width is None:
        width = max(64, int(w * height / h) // 64 * 64)
    elif height is None:
        height = max(64, int(h * width / w) // 64 * 64)
    if (h, w) == (height, width):
        return x
    log(f"note: image {w}x{h} resized and centre-cropped to {width}x{height} (sides must be multiples of 64)")
    return cover_crop(x, height, width, mode="bicubic", antialias=True).clamp(-1, 1)


def save_latents(path, latents: torch.Tensor, **info) -> Path:
    """Write sampled latents (T, 4, h, w) (diffusion scale, i.e. z * 0.18215) for `i2v decode`, atomically."""
    return latents_file.save_latents(path, latents, "svd", scale_factor=SCALE_FACTOR, **info)


def load_latents(path) -> tuple[torch.Tensor, dict]:
    """(latents (T, 4, h, w), metadata) from :func:`save_latents`."""
    return latents_file.load_latents(path, "svd")


# ---------------------------------------------------------------------------------------------------- pipeline

class SVDPipeline:
    """``pipe = SVDPipeline.from_pretrained("svd_xt.safetensors", dtype=torch.float16, device="cuda")``;
    ``frames = pipe("photo.jpg", seed=0)`` -> (T, 3, H, W) in [0, 1]. Stages are public: :meth:`condition`,
    :meth:`sample`, :meth:`decode`, :meth:`encode`."""

    def __init__(self, unet=None, vae=None, clip=None, cond_encoder=None, *, preset: str = "svd", source=None,
                 dtype=torch.float32, device="cpu", keep_encoders: bool = False, load_kwargs=None, log=print):
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        self.unet, self.vae, self.clip, self.cond_encoder = unet, vae, clip, cond_encoder
        self.preset, self.source, self.dtype, self.device = PRESETS[preset], source, dtype, torch.device(device)
        self.preset_name = preset
        self.keep_encoders, self.load_kwargs, self.log = keep_encoders, load_kwargs or {}, log

    @classmethod
    def from_pretrained(cls, path, dtype=torch.float32, device="cpu", *, preset: str | None = None,
                        parts=PARTS, keep_encoders: bool = False, unet_head_channels: int = 64,
                        clip_head_width: int | None = None, log=print) -> "SVDPipeline":
        """Load a single-file checkpoint or diffusers folder. ``parts`` limits what is loaded (``("vae",)`` to
        decode saved latents). Head widths are not in the file: 64 (U-Net) and 80 (ViT-H) for released SVD."""
        dtype = runtime.dtype(dtype)
        runtime.device(device)
        kw = dict(unet_head_channels=unet_head_channels, clip_head_width=clip_head_width)
        t0 = time.perf_counter()
        mods = load_svd_parts(path, parts, dtype, device, **kw)
        if "vae_decoder" in mods:  # decoding only
            mods["vae"] = mods.pop("vae_decoder")
        log(f"loaded {', '.join(mods)} from {path} in {time.perf_counter() - t0:.1f} s ({dtype}, {device})")
        return cls(**mods, preset=preset or preset_for(path), source=Path(path), dtype=dtype, device=device,
                   keep_encoders=keep_encoders, load_kwargs=kw, log=log)

    # ------------------------------------------------------------------ loading/freeing the encoders
    def _ensure(self, *parts: str) -> None:
        """Load parts that were freed (or never loaded) again from the source file. ``"vae_encoder"`` means the
        first stage's own encoder (kept beside the decoder we already have)."""
        need = []
        for p in parts:
            if p == "vae_encoder":
                if self.vae is None or self.vae.encoder is None:
                    need.append("vae")
            elif getattr(self, p) is None:
                need.append(p)
        if not need:
            return
        if self.source is None:
            raise ConfigError(f"this pipeline has no {', '.join(need)} and no checkpoint path to load them from")
        for p, m in load_svd_parts(self.source, need, self.dtype, self.device, **self.load_kwargs).items():
            if p == "vae" and self.vae is not None:
                self.vae.encoder, self.vae.quant_conv = m.encoder, m.quant_conv  # keep the decoder we have
            else:
                setattr(self, p, m)

    def free_encoders(self) -> None:
        """Drop the image tower and the VAE encoders (only the U-Net and the decoder are needed to sample/decode)."""
        self.clip = None
        self.cond_encoder = None
        if self.vae is not None and self.vae.decoder is not None:
            self.vae.encoder, self.vae.quant_conv = None, None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ stages
    @torch.no_grad()
    def condition(self, image: torch.Tensor, frames: int, fps_id: int = 6, motion_bucket_id: int = 127,
                  cond_aug: float = 0.02, cond_noise: torch.Tensor | None = None, generator=None) -> tuple[dict, dict]:
        """(cond, uncond) dicts for the network, every tensor with T = ``frames`` rows (module docstring)."""
        check_count("frames", frames)
        self._ensure("clip", "cond_encoder")
        dt, dev = self.dtype, self.device
        x = image.to(dev, dt)
        crossattn = _finite(self.clip.embed(x), "the CLIP image embedding", dt)[:, None]  # (1, 1, D)
        if cond_noise is None:
            cond_noise = torch.randn(image.shape, generator=generator, dtype=torch.float32)
        x_aug = x + cond_aug * cond_noise.to(dev, dt)
        concat = _finite(self.cond_encoder.encode(x_aug), "the VAE encoding of the image", dt)  # (1, 4, h, w)
        # vector = [emb(fps_id), emb(motion_bucket_id), emb(cond_aug)], sinusoids of 256 each, per frame
        # computed in float64 whatever the model dtype (a float32 sinusoid of 127 is only good to ~1e-5)
        scalars = torch.tensor([fps_id, motion_bucket_id, cond_aug], dtype=torch.float64, device=dev)
        vector = timestep_embedding(scalars, 256).reshape(1, 768).to(dt).expand(frames, 768)  # (T, 768)
        cond = {"crossattn": crossattn.expand(frames, -1, -1), "concat": concat.expand(frames, -1, -1, -1),
                "vector": vector, "num_frames": frames}
        uncond = {"crossattn": torch.zeros_like(cond["crossattn"]), "concat": torch.zeros_like(cond["concat"]),
                  "vector": vector, "num_frames": frames}
        if not self.keep_encoders:
            self.free_encoders()
        return cond, uncond

    def denoiser(self) -> Denoiser:
        """D(x, sigma, cond) -> x0 with SVD's EDM-v preconditioning around the U-Net."""
        if self.unet is None:
            raise ConfigError("this pipeline was loaded without its U-Net (parts=...)")
        return Denoiser(SVDNetwork(self.unet), prediction="edm_v")

    def sigmas(self, steps: int, schedule: str = "karras") -> torch.Tensor:
        fn = get_schedule(schedule)
        if schedule in SIGMA_RANGE_SCHEDULES:
            return fn(steps, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=RHO) if schedule == "karras" \
                else fn(steps, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
        return fn(steps)

    @torch.no_grad()
    def sample(self, cond: dict, uncond: dict, steps: int, *, sampler: str = "euler", schedule: str = "karras",
               min_cfg: float = 1.0, max_cfg: float = 2.5, noise: torch.Tensor | None = None, generator=None,
               progress: bool = True) -> torch.Tensor:
        """Latents (T, 4, h, w) in diffusion scale. ``noise`` is the unit-variance start (T, 4, h, w)."""
        check_count("steps", steps)
        T = cond["num_frames"]
        h, w = cond["concat"].shape[-2:]
        sigmas = self.sigmas(steps, schedule).to(self.device)
        if noise is None:
            noise = torch.randn((T, 4, h, w), generator=generator, dtype=torch.float32)
        # The sampler state (T x 4 x h x w, small) stays in float64 whatever the model dtype: at sigma = 700 the
        # Euler update x + (sigma' - sigma) (x - D) / sigma cancels large numbers. The U-Net runs in self.dtype.
        x = initial_noise(noise.to(self.device, torch.float64), sigmas[0], "edm_v", data_variance=1.0)  # N(0, 1 + s0^2)
        d = self.denoiser()
        if min_cfg == max_cfg == 1.0:
            guided = lambda x, s, c: d(x, s, c["cond"])  # noqa: E731 -- w = 1 everywhere: the conditional model alone
        else:
            guided = CFGDenoiser(d, frame_ramp(min_cfg, max_cfg, T))
        callback = progress_callback(steps, "sampling") if progress else None
        fn = get_sampler(sampler)
        return fn(guided, x, sigmas, cond={"cond": cond, "uncond": uncond}, generator=generator, callback=callback)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, decode_chunk_size: int | None = None, progress: bool = True) -> torch.Tensor:
        """Latents (T, 4, h, w) (diffusion scale) -> decoder output (T, 3, H, W), roughly in [-1, 1], not clamped.
        The temporal decoder sees chunks of ``decode_chunk_size`` frames (timesteps = chunk length)."""
        if self.vae is None or self.vae.decoder is None:
            raise ConfigError("this pipeline was loaded without the VAE decoder")
        T = latents.shape[0]
        chunk = T if decode_chunk_size is None else decode_chunk_size
        check_count("decode_chunk_size", chunk)
        z = latents.to(self.device, self.dtype) / SCALE_FACTOR
        out = []
        starts = range(0, T, chunk)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="decoding", leave=False)
        for i in starts:
            zi = z[i:i + chunk]
            out.append(_finite(self.vae.decode(zi, timesteps=zi.shape[0]), f"VAE decoding of frames {i}..{i + len(zi) - 1}",
                               self.dtype))
        return torch.cat(out)

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Image (b, 3, H, W) in [-1, 1] -> first-stage latents (b, 4, H/8, W/8) x 0.18215 (posterior mode)."""
        self._ensure("vae_encoder")
        return self.vae.encode(image.to(self.device, self.dtype)) * SCALE_FACTOR

    def decode_latents(self, latents, decode_chunk_size: int | None = 14, progress: bool = True) -> torch.Tensor:
        """Saved latents (a tensor or a file from :func:`save_latents`) -> frames (T, 3, H, W) in [0, 1]."""
        if not isinstance(latents, torch.Tensor):
            latents, _ = load_latents(latents)
        return ((self.decode(latents, decode_chunk_size, progress).float().cpu() + 1) / 2).clamp(0, 1)

    # ------------------------------------------------------------------ everything
    def __call__(self, image, frames: int | None = None, steps: int | None = None, *, sampler: str = "euler",
                 schedule: str = "karras", fps_id: int = 6, motion_bucket_id: int = 127, cond_aug: float = 0.02,
                 min_cfg: float | None = None, max_cfg: float | None = None, seed: int | None = None,
                 decode_chunk_size: int | None = 14, width: int | None = None, height: int | None = None,
                 save_latents_to=None, progress: bool = True) -> torch.Tensor:
        """Animate ``image``: frames (T, 3, H, W) in [0, 1]. Unset values come from the preset."""
        p = self.preset
        frames, steps = p.frames if frames is None else frames, p.steps if steps is None else steps
        min_cfg, max_cfg = p.min_cfg if min_cfg is None else min_cfg, p.max_cfg if max_cfg is None else max_cfg
        check_count("frames", frames)
        check_count("steps", steps)
        check_sampler(sampler, "edm_v"), get_schedule(schedule)  # fail before any work
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
            self.log(f"seed {seed}")
        gen = torch.Generator("cpu").manual_seed(seed)
        x = fit_image(to_tensor(image, (-1.0, 1.0), torch.float64), width, height, self.log)
        t0 = time.perf_counter()
        cond, uncond = self.condition(x, frames, fps_id, motion_bucket_id, cond_aug, generator=gen)
        t1 = time.perf_counter()
        latents = self.sample(cond, uncond, steps, sampler=sampler, schedule=schedule, min_cfg=min_cfg,
                              max_cfg=max_cfg, generator=gen, progress=progress)
        t2 = time.perf_counter()
        if save_latents_to is not None:
            save_latents(save_latents_to, latents, checkpoint=self.source, seed=seed, frames=frames, steps=steps)
            self.log(f"wrote latents {save_latents_to}")
        out = ((self.decode(latents, decode_chunk_size, progress).float().cpu() + 1) / 2).clamp(0, 1)  # [-1, 1] -> [0, 1]
        t3 = time.perf_counter()
        self.last_run = {"seed": seed, "latents": latents, "condition_s": t1 - t0, "sample_s": t2 - t1,
                         "decode_s": t3 - t2, "memory": runtime.peak_memory(self.device)}
        self.log(f"{frames} frames {x.shape[-1]}x{x.shape[-2]}: conditioning {t1 - t0:.1f} s, sampling {t2 - t1:.1f} s "
                 f"({steps} steps, {sampler}), decoding {t3 - t2:.1f} s; {runtime.peak_memory(self.device)}")
        return out
