"""The built-in image-to-video model: load the shipped weights, animate an image at its own resolution.

    from i2v.pipelines.builtin import animate
    frames = animate("photo.jpg", motion="zoom-in", backbone="unet", steps=20, seed=0, log=print)
    # 640x480 -> motion at 64x48, rendered at 640x480; frames (16, 3, 480, 640) in [0, 1]
    i2v.video.save(frames, "out.mp4")
    square = animate("photo.jpg", size=64)  # the model's own output: centre square, (16, 3, 64, 64)

What happens (nothing hidden):

1. the image is resized, aspect ratio kept, so its longer side is the model's size (64), and padded by reflection
   to the multiples the backbone needs (:func:`i2v.image.fit_grid`; U-Net 16, DiT 4: 640x480 -> 64x48,
   1920x1080 -> 64x36 padded to 64x48 for the U-Net); scaled to [-1, 1]. With ``size=N`` instead the centre
   square is taken at N x N, as the model was trained (N = 64);
2. the weights ``weights/builtin_<backbone>.safetensors`` (fp16, trained by ``i2v train``; see
   docs/builtin-model.md) are loaded; the backbone class is read from the file's metadata and its config from
   the tensor shapes (``UNet3D.from_state_dict`` / ``DiT.from_state_dict``);
3. ``Denoiser(model, prediction)`` turns the network into ``D(x, sigma) -> x0`` (EDM or flow preconditioning);
4. any core sampler integrates from pure noise ``x = sigma_max * eps`` (eps from ``seed``) down to sigma = 0,
   conditioned on the first frame, the motion label and speed (optionally with classifier-free guidance over
   the motion label). With ``start_sigma`` it starts instead from the still video (frame 0 repeated) plus noise
   of that level, ``x = x_still + start_sigma * eps`` (SDEdit, Meng et al. 2022), trading motion for fidelity;
5. frame 0 is replaced by the input image itself;
6. the motion is carried to the photo's own resolution (times ``upscale``; :func:`carry_to_resolution`): the
   full-resolution photo is moved the way the warp head moved the model's first frame (its affine maps, read at
   every full-resolution pixel: :class:`i2v.models.builtin.heads.WarpMotion`; the head's residual flow is left
   out: a tenth of a pixel of noise at 64 px, read at 256 px it shakes sharp detail and costs 0.3-1.6 dB on
   average, up to 6 dB on zooms; docs/builtin-model.md), and only what the generation adds is taken from the
   64 px frames::

       out_k = up(G_k - m_k W_k) + up(m_k) P_k      P_k: the photo moved to frame k (bicubic), inside the photo
                                                    G_k: the generated frame, W_k: the model's moved first frame,
                                                    m_k: the warp mask; up: bicubic

   (:func:`i2v.motion.warp.transfer_detail`): where the mask says the frame is the moved first frame (m = 1)
   the output is the moved photo plus the generated residual; where content enters the picture or is
   disoccluded (m = 0, or the source lies outside the photo) it is the generated frame, upsampled. A model
   without a warp mask uses the DIS optical flow of its frames to frame 0 instead, upsampled, and trusts it
   where forward and backward flow agree. With ``size=N``, ``upscale`` resizes the N x N frames (bicubic).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoints import open_state_dict
from ..data.procedural import MOTIONS, motion_index
from ..diffusion.catalog import check_sampler
from ..diffusion.denoisers import Denoiser, Proposal, initial_noise
from ..diffusion.guidance import CFGDenoiser
from ..diffusion.samplers import get_sampler, progress_callback
from ..diffusion.schedules import get_schedule
from ..errors import CheckpointError, ConfigError
from ..image import GridFit, fit_grid, to_tensor, to_uint8
from ..models.builtin.heads import NULL_MOTION, WarpMotion
from ..motion.warp import normalized_grid, transfer_detail
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


def flow_motion(frames: torch.Tensor) -> tuple[WarpMotion, torch.Tensor]:
    """The motion of generated frames (t, 3, h, w) in [0, 1] as a :class:`WarpMotion` (identity affine maps plus
    the DIS optical flow of each frame to frame 0, in normalised units) and where to trust it, (t, 1, h, w): 1
    where the flow to frame 0 and back agrees, else 0 (:func:`i2v.motion.flow.flows_to_first`). For models
    without a warp mask, whose own motion is not returned."""
    from ..motion.flow import flows_to_first

    t, _, h, w = frames.shape
    flows, consistent = flows_to_first(frames.permute(0, 2, 3, 1).numpy())  # (t, h, w, 2) pixels, (t, h, w)
    flow = torch.from_numpy(flows).permute(0, 3, 1, 2) * torch.tensor([2 / w, 2 / h])[None, :, None, None]
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(t, 2, 3)
    return WarpMotion(identity, flow), torch.from_numpy(consistent)[:, None].float()


def carry_to_resolution(photo: torch.Tensor, frames: torch.Tensor, fit: GridFit, motion: WarpMotion,
                        trust: torch.Tensor, size: tuple[int, int], moved: torch.Tensor | None = None) -> torch.Tensor:
    """Render generated frames at ``size`` = (H, W) along their motion (step 6 of the module docstring).

    ``photo`` (1, 3, h, w) in [0, 1] at any resolution; ``frames`` (t, 3, gh, gw) the model's frames on its grid
    (``fit.grid``); ``motion`` per frame, in the grid's normalised coordinates; ``trust`` (t, 1, gh, gw) the
    share of each generated pixel that is the moved first frame (the warp mask); ``moved`` (t, 3, gh, gw) that
    moved first frame, or None (then the photo moved and area-averaged stands for it). Frame by frame, so
    memory stays a few full-resolution frames above the output's. Frame 0 is the photo. -> (t, 3, H, W)."""
    H, W = size
    points = fit.to_grid(normalized_grid(H, W))  # (1, H, W, 2) every output pixel, in the grid's coordinates
    out = torch.empty(len(frames), 3, H, W)
    out[0] = photo[0] if photo.shape[-2:] == (H, W) else \
        F.interpolate(photo, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1)[0]
    low, trust = fit.crop(frames), fit.crop(trust)  # the photo's part of the grid
    moved = None if moved is None else fit.crop(moved)
    for k in range(1, len(frames)):
        source = fit.from_grid(motion.select(slice(k, k + 1)).source(points))  # (1, H, W, 2) in the photo
        out[k] = transfer_detail(low[k:k + 1], photo, source, trust[k:k + 1],
                                 None if moved is None else moved[k:k + 1])[0]
    return out


class _Recorder:
    """The backbone, keeping its last output: the warp head's :class:`Proposal` carries the motion and mask of
    the final estimate (every sampler's last call is the one that returns x0)."""

    def __init__(self, model):
        self.model, self.last = model, None

    def __call__(self, *args, **kwargs):
        self.last = self.model(*args, **kwargs)
        return self.last


class BuiltinPipeline:
    """A loaded built-in model: ``pipe(image, motion=..., steps=..., seed=...) -> (t, 3, h, w)`` in [0, 1], at the
    photo's resolution (``size=None``) or the old centre square (``size=64``)."""

    def __init__(self, model: torch.nn.Module, prediction: str, frames: int = 16, size: int = 64,
                 backbone: str = "unet", metadata: dict | None = None):
        self.model = model.eval().requires_grad_(False)
        self.prediction = prediction
        self.denoiser = Denoiser(self.model, prediction)
        self.frames, self.size, self.backbone = frames, size, backbone
        self.metadata = metadata or {}
        self.multiple = int(getattr(self.model, "multiple", 1))  # grid sides must be multiples of this

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
                 sigma_min: float | None = None, size: int | None = None, progress: bool = True,
                 log=None) -> torch.Tensor:
        """``size=None``: the motion on the photo's aspect ratio at the model's size, rendered at the photo's
        resolution times ``upscale``; ``size=N``: the centre square at N x N (a multiple of :attr:`multiple`;
        the weights were trained at :attr:`size`), resized by ``upscale``. ``log`` (e.g. ``print``) receives
        one line saying what was done. -> (t, 3, H, W) float in [0, 1]."""
        label = motion_index(motion)
        frames = self.frames if frames is None else int(frames)
        if not 2 <= frames <= 64:
            raise ConfigError(f"frames must be between 2 and 64 (trained on {self.frames}), got {frames}")
        if not 0.0 < speed <= 3.0:
            raise ConfigError(f"speed must be in (0, 3] (trained on 0.5 .. 1.5), got {speed}")
        if upscale < 1:
            raise ConfigError(f"upscale must be >= 1, got {upscale}")
        if size is not None and (int(size) != size or size < self.multiple or size % self.multiple):
            raise ConfigError(f"--size must be a positive multiple of {self.multiple} for the {self.backbone} "
                              f"backbone (trained at {self.size}), got {size}")
        sampler = sampler or DEFAULT_SAMPLER[self.prediction]
        note = check_sampler(sampler, self.prediction)  # an error, or a note when it runs but only approximately
        if note:
            warnings.warn(note, stacklevel=2)
        sigmas = self.sigmas(steps, schedule, start_sigma, sigma_min)

        img = to_uint8(image)
        h, w = img.shape[:2]
        if size is not None:  # the model's own output: the centre square
            first = prepare_image(img, int(size))
            video, _ = self._sample(first, label, speed, sigmas, sampler, seed, frames, guidance, start_sigma, progress)
            video[0] = first  # frame 0 is the input image itself
            if upscale != 1:
                video = F.interpolate(video, scale_factor=float(upscale), mode="bicubic",
                                      align_corners=False).clamp(0, 1)
            if log:
                log(f"{w}x{h} -> centre square at {size}x{size}, output {video.shape[-1]}x{video.shape[-2]}")
            return video

        fit = fit_grid(h, w, self.size, self.multiple)
        first = torch.from_numpy(fit.resize(img)).permute(2, 0, 1).float() / 255  # (h, w, 3) -> (3, h, w)
        video, last = self._sample(first, label, speed, sigmas, sampler, seed, frames, guidance, start_sigma, progress)
        video[0] = first
        if isinstance(last, Proposal) and isinstance(last.motion, WarpMotion):
            n = last.mask.shape[0]  # 2 with guidance: [uncond; cond], the conditional half made the motion
            motion = last.motion.select(slice((n - 1) * frames, n * frames))
            trust = last.mask[-1].float().transpose(0, 1).cpu()  # (1, t, gh, gw) -> (t, 1, gh, gw)
            moved = (last.frames[-1].float().transpose(0, 1).cpu() + 1) / 2  # (3, t, gh, gw) -> (t, 3, gh, gw)
            motion = WarpMotion(motion.theta.cpu(), None)  # the affine maps; the residual flow stays at 64 px
        else:  # no warp mask: the optical flow of the generated frames
            (motion, trust), moved = flow_motion(video), None
        photo = to_tensor(image if isinstance(image, np.ndarray) else img)  # float arrays keep their precision
        out_size = (max(1, round(h * upscale)), max(1, round(w * upscale)))
        out = carry_to_resolution(photo, video, fit, motion, trust, out_size, moved)
        if log:
            log(f"{w}x{h} -> motion at {fit.describe()}, rendered at {out_size[1]}x{out_size[0]}")
        return out

    def _sample(self, first, label, speed, sigmas, sampler, seed, frames, guidance, start_sigma, progress):
        """first (3, h, w) in [0, 1] -> (frames (t, 3, h, w) in [0, 1] on the CPU, the network's last output)."""
        device = next(self.model.parameters()).device
        h, w = first.shape[-2:]
        recorder = _Recorder(self.model)
        denoiser = Denoiser(recorder, self.prediction)
        cond = {"first_frame": (first.to(device) * 2 - 1)[None], "motion": torch.tensor([label], device=device),
                "speed": torch.tensor([float(speed)], device=device)}
        if guidance != 1.0:
            uncond = dict(cond, motion=torch.tensor([NULL_MOTION], device=device))
            denoiser, cond = CFGDenoiser(denoiser, guidance), {"cond": cond, "uncond": uncond}
        g = torch.Generator().manual_seed(int(seed))
        eps = torch.randn((1, 3, frames, h, w), generator=g).to(device)  # (b, c, t, h, w)
        x = initial_noise(eps, sigmas[0], self.prediction)
        if start_sigma is not None:  # SDEdit: x = still video + sigma eps
            x = x + cond["first_frame"][:, :, None]  # (b, 3, h, w) -> (b, 3, 1, h, w), broadcast over frames
        cb = progress_callback(len(sigmas) - 1, f"animate ({self.backbone})") if progress else None
        x0 = get_sampler(sampler)(denoiser, x, sigmas.to(device), cond=cond, generator=g, callback=cb)
        video = ((x0[0].float().clamp(-1, 1) + 1) / 2).permute(1, 0, 2, 3)  # (c, t, h, w) -> (t, c, h, w)
        return video.cpu(), recorder.last


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
            sigma_min: float | None = None, size: int | None = None, progress: bool = True,
            log=None) -> torch.Tensor:
    """Animate ``image`` (path, PIL image or array) with the built-in model: (t, 3, H, W) float in [0, 1], at the
    image's resolution times ``upscale`` (``size=None``), or the centre square at ``size`` x ``size`` times
    ``upscale`` (the old behaviour, ``size=64``). ``log=print`` prints what was done. The same options as
    ``i2v animate`` without ``--checkpoint``."""
    pipe = load(backbone)
    return pipe(image, motion=motion, speed=speed, steps=steps, sampler=sampler, schedule=schedule, seed=seed,
                frames=frames, guidance=guidance, upscale=upscale, start_sigma=start_sigma, sigma_min=sigma_min,
                size=size, progress=progress, log=log)
