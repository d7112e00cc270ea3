"""The built-in image-to-video model: load the shipped weights, animate an image.

    from i2v.pipelines.builtin import animate
    frames = animate("photo.jpg", motion="zoom-in", backbone="unet", steps=20, seed=0)  # (16, 3, 64, 64) in [0, 1]
    i2v.video.save(frames, "out.mp4")

What happens (nothing hidden):

1. the image is centre-cropped to a square and resized to the model's size (64x64), scaled to [-1, 1];
2. the weights ``weights/builtin_<backbone>.safetensors`` (fp16, trained by ``i2v train``; see
   docs/builtin-model.md) are loaded; the backbone class is read from the file's metadata and its config from
   the tensor shapes (``UNet3D.from_state_dict`` / ``DiT.from_state_dict``);
3. ``Denoiser(model, prediction)`` turns the network into ``D(x, sigma) -> x0`` (EDM or flow preconditioning);
4. any core sampler integrates from pure noise ``x = sigma_max * eps`` (eps from ``seed``) down to sigma = 0,
   conditioned on the first frame, the motion label and speed (optionally with classifier-free guidance over
   the motion label). With ``start_sigma`` it starts instead from the still video (frame 0 repeated) plus noise
   of that level, ``x = x_still + start_sigma * eps`` (SDEdit, Meng et al. 2022), trading motion for fidelity;
5. frame 0 is replaced by the input image itself; ``upscale`` resizes the result (bicubic) on request.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ..checkpoints import open_state_dict
from ..data.procedural import MOTIONS, motion_index
from ..diffusion.denoisers import Denoiser
from ..diffusion.guidance import CFGDenoiser
from ..diffusion.samplers import get_sampler, progress_callback
from ..diffusion.schedules import get_schedule
from ..errors import CheckpointError, ConfigError
from ..image import to_uint8
from ..models.builtin.heads import NULL_MOTION
from ..models.builtin.dit import DiT
from ..models.builtin.unet3d import UNet3D

BACKBONES = {"unet": UNet3D, "dit": DiT}
DEFAULT_SAMPLER = {"edm": "dpmpp_2m", "flow": "flow_euler"}
DEFAULT_SCHEDULE = {"edm": "karras", "flow": "flow"}
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0  # EDM's range, used for the karras/exponential schedules


def weights_dir() -> Path:
    """Where the shipped weights live: $I2V_WEIGHTS; else ``weights/`` beside the ``i2v`` package (a checkout or
    editable install); else ``<prefix>/share/i2v/weights``, where a wheel or ``pip install .`` puts them."""
    env = os.environ.get("I2V_WEIGHTS")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "weights"
    if checkout.is_dir():
        return checkout
    import sys
    for prefix in (sys.prefix, sys.base_prefix):
        installed = Path(prefix) / "share" / "i2v" / "weights"
        if installed.is_dir():
            return installed
    return checkout  # the error message then names the checkout location


def weights_path(backbone: str) -> Path:
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
    return weights_dir() / f"builtin_{backbone}.safetensors"


def prepare_image(image, size: int) -> torch.Tensor:
    """Path / PIL image / array (see :func:`i2v.image.to_uint8`) -> (3, size, size) float in [0, 1]: centre crop +
    area resize."""
    img = to_uint8(image)
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    img = cv2.resize(np.ascontiguousarray(img[y0:y0 + s, x0:x0 + s]), (size, size),
                     interpolation=cv2.INTER_AREA if s >= size else cv2.INTER_CUBIC)
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255  # (h, w, 3) -> (3, h, w)


class BuiltinPipeline:
    """A loaded built-in model: ``pipe(image, motion=..., steps=..., seed=...) -> (t, 3, h, w)`` in [0, 1]."""

    def __init__(self, model: torch.nn.Module, prediction: str, frames: int = 16, size: int = 64,
                 backbone: str = "unet", metadata: dict | None = None):
        self.model = model.eval().requires_grad_(False)
        self.prediction = prediction
        self.denoiser = Denoiser(self.model, prediction)
        self.frames, self.size, self.backbone = frames, size, backbone
        self.metadata = metadata or {}

    @classmethod
    def load(cls, backbone: str = "unet", path=None, device="cpu") -> "BuiltinPipeline":
        """Load ``weights/builtin_<backbone>.safetensors`` (or ``path``) to float32 on ``device``."""
        path = Path(path) if path is not None else weights_path(backbone)
        if not path.exists():
            raise CheckpointError(f"built-in weights {path} not found; they ship in the repository's weights/ folder "
                                  f"(installed to <prefix>/share/i2v/weights; set I2V_WEIGHTS to another folder), or train your own with "
                                  f"`i2v train --config configs/builtin_{backbone}.toml`")
        sd = open_state_dict(path)  # clear errors for unreadable / truncated files
        meta = sd.metadata
        if meta.get("format") != "i2v.builtin":
            raise CheckpointError(f"{path} is not a built-in i2v model (metadata format {meta.get('format')!r}, "
                                  "expected 'i2v.builtin' as written by `i2v train`)")
        if meta.get("motions", ",".join(MOTIONS)) != ",".join(MOTIONS):
            raise CheckpointError(f"{path} was trained on motions {meta['motions']}, this code has {', '.join(MOTIONS)}")
        kind = meta.get("backbone", backbone)
        if kind not in BACKBONES:
            raise CheckpointError(f"{path}: unknown backbone {kind!r} in metadata; valid: {', '.join(BACKBONES)}")
        model = BACKBONES[kind].from_state_dict(sd, source=str(path)).to(device)
        return cls(model, meta.get("prediction", "edm"), int(meta.get("frames", 16)), int(meta.get("size", 64)),
                   kind, meta)

    def sigmas(self, steps: int, schedule: str | None = None, start_sigma: float | None = None,
               sigma_min: float | None = None) -> torch.Tensor:
        """The noise levels to sample through. ``sigma_min`` > 0.002 stops early: the last step jumps from
        sigma_min to 0, i.e. returns the denoiser's estimate D(x, sigma_min) (smoother, less residual noise
        from an undertrained low-noise regime). None: the weights' recommendation (metadata ``sigma_min``,
        chosen on training clips; see docs/builtin-model.md), else 0.002."""
        explicit = sigma_min is not None
        if sigma_min is None:
            sigma_min = float(self.metadata.get("sigma_min", SIGMA_MIN))
        schedule = schedule or DEFAULT_SCHEDULE[self.prediction]
        fn = get_schedule(schedule)
        if self.prediction == "flow":
            if schedule != "flow":
                raise ConfigError(f"this model was trained with flow matching; use --schedule flow, not {schedule!r}")
            if start_sigma is not None or explicit:
                raise ConfigError("start_sigma and sigma_min are implemented for EDM models only")
            return fn(steps)
        if schedule == "flow":
            raise ConfigError("the 'flow' schedule is for flow-matching models; this one uses EDM (try karras)")
        if schedule not in ("karras", "exponential"):  # VP schedules bring their own sigma range
            if start_sigma is not None or explicit:
                raise ConfigError(f"start_sigma and sigma_min need the karras or exponential schedule, not {schedule!r}")
            return fn(steps)
        top = SIGMA_MAX if start_sigma is None else float(start_sigma)
        if not 0 < sigma_min < top <= SIGMA_MAX:
            raise ConfigError(f"need 0 < sigma_min < start_sigma <= {SIGMA_MAX}, got sigma_min={sigma_min}, "
                              f"start_sigma={start_sigma}")
        return fn(steps, sigma_min=float(sigma_min), sigma_max=top)

    @torch.no_grad()
    def __call__(self, image, motion: str = "zoom-in", speed: float = 1.0, steps: int = 20,
                 sampler: str | None = None, schedule: str | None = None, seed: int = 0, frames: int | None = None,
                 guidance: float = 1.0, upscale: float = 1.0, start_sigma: float | None = None,
                 sigma_min: float | None = None, progress: bool = True) -> torch.Tensor:
        label = motion_index(motion)
        frames = self.frames if frames is None else int(frames)
        if not 2 <= frames <= 64:
            raise ConfigError(f"frames must be between 2 and 64 (trained on {self.frames}), got {frames}")
        if not 0.0 < speed <= 3.0:
            raise ConfigError(f"speed must be in (0, 3] (trained on 0.5 .. 1.5), got {speed}")
        if upscale < 1:
            raise ConfigError(f"upscale must be >= 1, got {upscale}")
        sampler = sampler or DEFAULT_SAMPLER[self.prediction]
        if self.prediction == "flow" and sampler != "flow_euler":
            raise ConfigError(f"flow-matching models sample with flow_euler, not {sampler!r}")
        if self.prediction != "flow" and sampler == "flow_euler":
            raise ConfigError("flow_euler is for flow-matching models; this one uses EDM (try dpmpp_2m, euler, heun)")
        sample = get_sampler(sampler)
        sigmas = self.sigmas(steps, schedule, start_sigma, sigma_min)

        device = next(self.model.parameters()).device
        first = prepare_image(image, self.size).to(device)  # (3, h, w) in [0, 1]
        cond = {"first_frame": (first * 2 - 1)[None], "motion": torch.tensor([label], device=device),
                "speed": torch.tensor([float(speed)], device=device)}
        denoiser = self.denoiser
        if guidance != 1.0:
            uncond = dict(cond, motion=torch.tensor([NULL_MOTION], device=device))
            denoiser, cond = CFGDenoiser(self.denoiser, guidance), {"cond": cond, "uncond": uncond}
        g = torch.Generator().manual_seed(int(seed))
        eps = torch.randn((1, 3, frames, self.size, self.size), generator=g).to(device)  # (b, c, t, h, w)
        x = eps * (1.0 if self.prediction == "flow" else float(sigmas[0]))
        if start_sigma is not None:  # SDEdit: x = still video + sigma eps
            x = x + cond["first_frame"][:, :, None]  # (b, 3, h, w) -> (b, 3, 1, h, w), broadcast over frames
        cb = progress_callback(steps, f"animate ({self.backbone})") if progress else None
        x0 = sample(denoiser, x, sigmas.to(device), cond=cond, generator=g, callback=cb)
        out = ((x0[0].float().clamp(-1, 1) + 1) / 2).permute(1, 0, 2, 3)  # (c, t, h, w) -> (t, c, h, w)
        out[0] = first  # frame 0 is the input image itself
        if upscale != 1:
            out = torch.nn.functional.interpolate(out, scale_factor=float(upscale), mode="bicubic",
                                                  align_corners=False).clamp(0, 1)
        return out.cpu()


_CACHE: dict = {}


def load(backbone: str = "unet", path=None, device="cpu") -> BuiltinPipeline:
    """The built-in pipeline for ``backbone`` (cached per backbone/path/device)."""
    key = (backbone, str(path), str(device))
    if key not in _CACHE:
        _CACHE[key] = BuiltinPipeline.load(backbone, path, device)
    return _CACHE[key]


def animate(image, motion: str = "zoom-in", backbone: str = "unet", steps: int = 20, sampler: str | None = None,
            schedule: str | None = None, seed: int = 0, frames: int | None = None, speed: float = 1.0,
            guidance: float = 1.0, upscale: float = 1.0, start_sigma: float | None = None,
            sigma_min: float | None = None, progress: bool = True) -> torch.Tensor:
    """Animate ``image`` (path, PIL image or uint8 array) with the built-in model; (t, 3, h, w) float in [0, 1]."""
    pipe = load(backbone)
    return pipe(image, motion=motion, speed=speed, steps=steps, sampler=sampler, schedule=schedule, seed=seed,
                frames=frames, guidance=guidance, upscale=upscale, start_sigma=start_sigma, sigma_min=sigma_min, progress=progress)
