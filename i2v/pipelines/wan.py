"""Wan image-to-video: Wan2.1 I2V-14B (480P / 720P), Wan2.1 FLF2V-14B (first + last frame), Wan2.2 TI2V-5B.
Thin orchestration of i2v's own modules: the umT5 encoder and tokenizer, the CLIP tower, the causal VAEs, the DiT,
the flow samplers.

Paper: Wan Team 2025, "Wan: Open and Advanced Large-Scale Video Generative Models" (arXiv 2503.20314).
Original code: Wan-Video/Wan2.1 ``wan/image2video.py`` (WanI2V.generate), ``wan/first_last_frame2video.py``
(WanFLF2V.generate), ``generate.py`` and ``wan/configs/`` (the defaults); Wan-Video/Wan2.2 ``wan/textimage2video.py``
(WanTI2V.i2v), ``wan/utils/utils.py`` (best_output_size, masks_like), ``wan/configs/wan_ti2v_5B.py``.

Data flow (F frames = 1 + 4k, F' = 1 + k latent frames, latent h x w = H/8 x W/8, or H/16 x W/16 for TI2V)::

    prompt, negative prompt -> clean, tokenize (512) -> umT5 -> (L, 4096) each, zero-padded to 512 in the DiT
    I2V / FLF2V:
      image (full size, [-1, 1]) -> CLIP ViT-H, penultimate tokens (1, 257, 1280)    FLF2V: first, last (1, 514, 1280)
      image bicubic-resized to H x W (size rule from max_area), then F - 1 zero frames -> VAE -> (16, F', h, w)
                                                                     FLF2V: [first, F - 2 zeros, last]
      mask (4, F', h, w): channel c of latent frame j = 1 where pixel frame 4j + c - 3 is given (frame 0 repeated 4x)
      y = [mask, VAE latent] (20, F', h, w), concatenated to the noisy latent inside the DiT (36 channels)
    TI2V-5B:
      image LANCZOS-resized to cover best_output_size(...), centre-cropped -> Wan2.2 VAE -> z (48, 1, h, w)
      latent frame 0 = z before the first step and after every step (ImposeKnown); its tokens get t = 0

    noise = torch.randn(16 | 48, F', h, w) from a CPU generator seeded with the seed (the original's draw)
    sampler(CFG(flow Denoiser(DiT)), noise, wan schedule(steps, shift)) -> latent -> VAE decode -> (F, 3, H, W)

Guidance: v = v_uncond + w (v_cond - v_uncond), the negative prompt as the unconditional branch (Wan's own
negative prompt when none is given). The denoiser sees only x0 = x - sigma v (``Denoiser(dit, "flow")``).

Memory levers (what a 14B model needs): every model is built on the meta device and filled tensor by tensor in its
dtype straight onto its device (no random init, no float32 copy); the text encoder and CLIP are loaded, run and
freed before the DiT is loaded (``offload="text"``: they stay loaded on the CPU and run there instead);
``offload="model"`` keeps the DiT's blocks in CPU memory and copies each to the GPU only while it runs;
float8-stored DiT weights stay float8 and are cast per layer at matmul time. bf16 by default on CUDA, float32 on
the CPU; the VAE computes in float32 as the original.
"""

from __future__ import annotations

import gc
import math
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import latents as latents_file
from .. import runtime
from ..diffusion import CFGDenoiser, Denoiser, ImposeKnown, flow_timestep, get_sampler, get_schedule
from ..diffusion.catalog import check_sampler
from ..diffusion.denoisers import initial_noise
from ..diffusion.samplers import progress_callback
from ..errors import CheckpointError, ConfigError, InputError
from ..image import resize_cover_uint8, to_tensor, to_uint8

# ------------------------------------------------------------------------------------------------ defaults

# The negative prompts of the original configs (Wan2.1 wan/configs/shared_config.py, wan_i2v_14B.py,
# configs/__init__.py; Wan2.2 shared_config.py for TI2V-5B). I2V prepends "camera shake", FLF2V "shot change".
NEGATIVE_PROMPT = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
                   "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
                   "杂乱的背景，三条腿，背景人很多，倒着走")


@dataclass(frozen=True)
class WanPreset:
    """The original's defaults for one model (generate.py and the configs; see docs/wan.md for each source)."""

    steps: int  # generate.py: 40 for tasks named i2v, else 50 (FLF2V's name has no "i2v"); TI2V config 50
    shift: float  # 5.0; I2V at 480*832: 3.0 (generate.py); FLF2V 16; TI2V config 5.0
    guidance: float  # generate.py --sample_guide_scale 5.0; TI2V config 5.0
    frames: int  # 81; TI2V 121
    fps: float  # sample_fps: 16; TI2V 24
    negative_prompt: str
    vae: str  # "2.1" or "2.2"
    spatial: int  # pixels per latent pixel (VAE stride)


PRESETS = {
    "i2v": WanPreset(40, 5.0, 5.0, 81, 16.0, "镜头晃动，" + NEGATIVE_PROMPT, "2.1", 8),
    "flf2v": WanPreset(50, 16.0, 5.0, 81, 16.0, "镜头切换，镜头晃动，" + NEGATIVE_PROMPT, "2.1", 8),
    "ti2v": WanPreset(50, 5.0, 5.0, 121, 24.0, NEGATIVE_PROMPT, "2.2", 16),
}
SHIFT_480P = 3.0  # generate.py: i2v at 832*480 / 480*832
# --size names -> max_area (pixels); the aspect ratio follows the image, as in the original
AREAS = {"480p": 480 * 832, "720p": 720 * 1280}
TI2V_720P = 704 * 1280  # TI2V-5B's supported sizes are 704*1280 / 1280*704
PATCH = 2  # the DiT's 1x2x2 patches: latent sides are multiples of 2
MIN_FRAMES = 5  # two latent frames

# sampler name -> the schedule's sigma_max: Wan's UniPC starts at float32(0.999), its DPM++ at 1.0
SCHEDULE_KWARGS = {"flow_dpmpp_2m": {"sigma_max": 1.0}}

# files of a Wan-AI release folder (wan/configs/wan_i2v_14B.py, wan_ti2v_5B.py)
WAN_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
WAN_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
WAN_TOKENIZER = "google/umt5-xxl"
WAN_VAES = {"2.1": "Wan2.1_VAE.pth", "2.2": "Wan2.2_VAE.pth"}

WHERE = {  # where each companion file usually is, for error messages
    "vae": "Wan2.1_VAE.pth / Wan2.2_VAE.pth in a Wan-AI release folder, vae/ in a diffusers one, ComfyUI's "
           "models/vae/wan_2.1_vae.safetensors / wan2.2_vae.safetensors",
    "text_encoder": f"{WAN_T5} in a Wan-AI release folder, text_encoder/ in a diffusers one, ComfyUI's "
                    "models/text_encoders/umt5_xxl_*.safetensors",
    "clip": f"{WAN_CLIP} in a Wan-AI release folder, image_encoder/ in a diffusers one, ComfyUI's "
            "models/clip_vision/clip_vision_h.safetensors",
    "tokenizer": f"the {WAN_TOKENIZER}/ folder of a Wan-AI release, tokenizer/ of a diffusers one, or "
                 "tokenizer.json of google/umt5-xxl on Hugging Face",
}
FLAGS = {"vae": "--vae", "text_encoder": "--text-encoder", "clip": "--clip", "tokenizer": "--tokenizer"}


# ------------------------------------------------------------------------------------------------ size rules

def i2v_size(h: int, w: int, max_area: float, stride: int = 8) -> tuple[int, int]:
    """Wan2.1's size rule (image2video.py): latent sides from the area and the image's aspect ratio,
    lat_h = round(sqrt(A h / w) // stride // 2 * 2), lat_w = round(sqrt(A w / h) // stride // 2 * 2);
    returns the video's (H, W) = stride * (lat_h, lat_w)."""
    aspect = h / w
    lat_h = round(math.sqrt(max_area * aspect) // stride // PATCH * PATCH)
    lat_w = round(math.sqrt(max_area / aspect) // stride // PATCH * PATCH)
    return lat_h * stride, lat_w * stride


def best_output_size(w: int, h: int, dw: int, dh: int, area: float) -> tuple[int, int]:
    """Wan2.2's size rule (utils.best_output_size): the (width, height), multiples of (dw, dh) with
    width * height <= area, whose aspect ratio is closest to w / h -- rounding the width first or the height first."""
    ratio = w / h
    ow = (area * ratio) ** 0.5
    oh = area / ow
    ow1 = int(ow // dw * dw)  # width first
    oh1 = int(area / ow1 // dh * dh)
    ratio1 = ow1 / oh1
    oh2 = int(oh // dh * dh)  # height first
    ow2 = int(area / oh2 // dw * dw)
    ratio2 = ow2 / oh2
    if max(ratio / ratio1, ratio1 / ratio) < max(ratio / ratio2, ratio2 / ratio):
        return ow1, oh1
    return ow2, oh2


def max_area(size, model_type: str) -> int:
    """``size`` -> the pixel area: "480p" / "720p" (TI2V: 720p = 704 x 1280, its supported size), "WxH" or
    "W*H" (the area W H; the aspect ratio follows the image, as the original's --size), (W, H), or an area."""
    if isinstance(size, (tuple, list)) and len(size) == 2:
        w, h = size
    elif isinstance(size, int) and not isinstance(size, bool):
        w, h = size, 1
    else:
        text = str(size).strip().lower()
        if text in AREAS:
            return TI2V_720P if (model_type == "ti2v" and text == "720p") else AREAS[text]
        m = re.fullmatch(r"(\d+)\s*[x*]\s*(\d+)", text)
        if m is None:
            raise ConfigError(f"--size {size!r}: expected 480p, 720p or WIDTHxHEIGHT (e.g. 832x480)")
        w, h = int(m.group(1)), int(m.group(2))
    if not (isinstance(w, int) and isinstance(h, int)) or w * h < 16 * 16:
        raise ConfigError(f"--size {size!r}: the area must be at least 16 x 16 pixels")
    return w * h


def round_frames(frames: int, log=print) -> int:
    """Frames as the original makes them: 1 + 4 ((F - 1) // 4) (its noise has (F - 1) // 4 + 1 latent frames and
    the causal VAE reads 1 + 4k frames); a count that is not 1 + 4k is rounded down, and said so."""
    runtime.check_count("frames", frames, low=MIN_FRAMES)
    rounded = 1 + 4 * ((frames - 1) // 4)
    if rounded != frames:
        log(f"note: {frames} frames is not 1 + 4k (Wan's VAE makes 4 frames per latent frame after the first): "
            f"making {rounded}, as the original does (ask for {rounded} or {rounded + 4})")
    return rounded


def frame_mask(frames: int, lat_h: int, lat_w: int, last: bool = False) -> torch.Tensor:
    """The 4 mask channels of y, (4, F', h, w): 1 on the given pixel frames (frame 0; FLF2V also the last), frame 0
    repeated 4 times in front (F + 3 entries), viewed as (F', 4) and transposed: channel c of latent frame j is the
    mask of pixel frame 4j + c - 3."""
    m = torch.zeros(frames, lat_h, lat_w)
    m[0] = 1
    if last:
        m[-1] = 1
    m = torch.cat([m[:1].expand(4, -1, -1), m[1:]])  # (F + 3, h, w)
    return m.view(-1, 4, lat_h, lat_w).transpose(0, 1).contiguous()  # (F', 4, h, w) -> (4, F', h, w)


# ------------------------------------------------------------------------------------------------ the files

@dataclass
class WanFiles:
    """Where each part of a Wan model is. ``layout``: "wan-ai" (a release folder), "diffusers" (model_index.json,
    transformer/ vae/ text_encoder/ tokenizer/ image_encoder/) or "single-file" (a DiT file, parts given)."""

    dit: Path
    layout: str
    vae: Path | None = None
    text_encoder: Path | None = None
    tokenizer: Path | None = None
    clip: Path | None = None
    tokenizer_from: str = ""  # how the tokenizer was found (printed)
    folder: Path | None = None  # where the release's files were looked for (Wan-AI folder, or beside the DiT file)


def _first(*paths) -> Path | None:
    return next((Path(p) for p in paths if p is not None and Path(p).exists()), None)


def find_files(path, vae=None, text_encoder=None, clip=None, tokenizer=None) -> WanFiles:
    """The parts of the model at ``path`` (a Wan-AI folder, a diffusers folder or a DiT file), each overridden by
    the path given for it. Nothing is read but folder listings."""
    path = Path(path)
    for name, p in (("vae", vae), ("text_encoder", text_encoder), ("clip", clip), ("tokenizer", tokenizer)):
        if p is not None and not Path(p).exists():
            raise InputError(f"{FLAGS[name]} {p}: no such file or folder")
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "model_index.json").is_file():
        layout, dit = "diffusers", path
        found = {"vae": _first(path / "vae"), "text_encoder": _first(path / "text_encoder"),
                 "clip": _first(path / "image_encoder"), "tokenizer": _first(path / "tokenizer")}
    else:
        layout = "wan-ai" if path.is_dir() else "single-file"
        dit, beside = path, path if path.is_dir() else path.parent
        found = {"vae": _first(*(beside / n for n in WAN_VAES.values())), "text_encoder": _first(beside / WAN_T5),
                 "clip": _first(beside / WAN_CLIP), "tokenizer": _first(beside / WAN_TOKENIZER)}
    given = {"vae": vae, "text_encoder": text_encoder, "clip": clip, "tokenizer": tokenizer}
    parts = {k: Path(given[k]) if given[k] is not None else found[k] for k in given}
    how = "given" if tokenizer is not None else f"found beside the checkpoint ({parts['tokenizer']})"
    if parts["tokenizer"] is None and parts["text_encoder"] is not None:  # next to the text encoder
        te = parts["text_encoder"]
        folder = te if te.is_dir() else te.parent
        parts["tokenizer"] = _first(folder / WAN_TOKENIZER, folder / "tokenizer.json", folder.parent / "tokenizer")
        how = f"found beside the text encoder ({parts['tokenizer']})"
    files = WanFiles(dit=dit, layout=layout, **parts, folder=None if layout == "diffusers" else beside)
    files.tokenizer_from = how if files.tokenizer is not None else ""
    if files.folder is not None and vae is None and all((beside / n).exists() for n in WAN_VAES.values()):
        files.vae = None  # both VAEs beside the DiT: the DiT's latent width picks one (see WanPipeline.from_pretrained)
    return files


def _dit_config(path: Path):
    """The DiT's config from its tensor shapes (nothing read but headers)."""
    from ..checkpoints import open_state_dict
    from ..models.wan.dit import WEIGHT_NAMES, WanDiTConfig, diffusers_to_original

    if path.is_dir() and (path / "transformer").is_dir() and not any(path.glob("*.safetensors*")):
        path = path / "transformer"
    sd = open_state_dict(path, names=WEIGHT_NAMES).strip_common_prefix()
    if "scale_shift_table" in sd.info:
        sd = sd.rename(diffusers_to_original)
    if "patch_embedding.weight" not in sd.info:
        from ..registry import identify_path

        raise CheckpointError(f"{path}: not a Wan DiT ({identify_path(path).description})") from None
    return WanDiTConfig.from_state_dict(sd.shapes, num_heads=1)  # the heads do not matter here


def _check_part(name: str, path: Path, family: str) -> None:
    """A companion file of the wrong kind (e.g. the VAE given as --text-encoder) is named before any loading."""
    if not path.is_file():
        return  # folders (diffusers, Hugging Face) are checked by their loaders
    from ..registry import identify_path

    match = identify_path(path)
    if match.family != family:
        raise CheckpointError(f"{FLAGS[name]} {path}: this is {match.description}, not a {name.replace('_', ' ')} "
                              f"(usually {WHERE[name]})")


def _free(device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


class BlockOffload:
    """Sequential offload (``offload="model"``): the DiT's blocks stay in CPU memory; each block's parameters are
    copied to ``device`` just before it runs and dropped right after (the CPU copy stays, nothing is copied
    back), so the GPU holds one block (0.81 GB for the 14B model in bf16) instead of the whole DiT (33 GB). Pinned CPU
    memory makes the copies asynchronous. Everything outside the blocks (embeddings, head) lives on ``device``."""

    def __init__(self, model: torch.nn.Module, device):
        self.device = torch.device(device)
        self.handles = []
        for name, child in model.named_children():
            if name != "blocks":
                child.to(self.device)
        for block in model.blocks:
            params = list(block.parameters())
            cpu = [p.data.pin_memory() if self.device.type == "cuda" else p.data for p in params]
            for p, c in zip(params, cpu):
                p.data = c
            self.handles.append(block.register_forward_pre_hook(self._load(params, cpu)))
            self.handles.append(block.register_forward_hook(self._drop(params, cpu)))

    def _load(self, params, cpu):
        def hook(module, args):
            for p, c in zip(params, cpu):
                p.data = c.to(self.device, non_blocking=True)
        return hook

    def _drop(self, params, cpu):
        def hook(module, args, out):
            for p, c in zip(params, cpu):
                p.data = c
        return hook


# ------------------------------------------------------------------------------------------------ the pipeline

class WanPipeline:
    """``pipe = WanPipeline.from_pretrained("Wan2.1-I2V-14B-480P/")``; ``frames = pipe("photo.jpg", prompt="...",
    seed=0)`` -> (F, 3, H, W) in [0, 1]. The models are loaded when first needed (the text encoder and CLIP run and
    are freed before the DiT is loaded). Stages are public: :meth:`encode_prompts`, :meth:`condition`,
    :meth:`sample`, :meth:`decode`."""

    def __init__(self, files: WanFiles, config, *, dtype, device, vae_dtype=torch.float32, offload=(),
                 keep_fp8: bool = True, default_size: str = "720p", num_heads: int | None = None,
                 clip_head_width: int | None = None, sequence_parallel: int = 1, fsdp=(), log=print):
        self.files, self.config, self.model_type = files, config, config.model_type
        # several processes (torchrun): Ulysses over the video tokens, FSDP2 shards of "dit" / "text" (i2v.nn.parallel)
        self.sequence_parallel, self.fsdp = int(sequence_parallel), tuple(fsdp)
        self.preset = PRESETS[self.model_type]
        self.dtype, self.device, self.vae_dtype = dtype, torch.device(device), vae_dtype
        self.offload, self.keep_fp8, self.default_size, self.log = set(offload), keep_fp8, default_size, log
        self.num_heads, self.clip_head_width = num_heads, clip_head_width
        self.dit = self.vae = self.text_encoder = self.tokenizer = self.clip = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path, dtype=None, device=None, *, vae=None, text_encoder=None, clip=None,
                        tokenizer=None, offload=None, keep_fp8: bool = True, num_heads: int | None = None,
                        clip_head_width: int | None = None, sequence_parallel: int = 1, fsdp=(),
                        log=print) -> "WanPipeline":
        """A Wan-AI release folder, a diffusers folder, or a DiT file (ComfyUI style) with ``vae=``,
        ``text_encoder=``, ``clip=`` (I2V/FLF2V) and optionally ``tokenizer=`` (else found beside the text encoder or
        the DiT). Checks that every part is there and fits the DiT -- one error naming what is missing and where it
        usually is -- but loads no weights yet.

        ``dtype``: compute dtype of the DiT, T5 and CLIP (default bfloat16 on CUDA, float32 elsewhere).
        ``device``: default cuda when available. ``offload``: None, "text" (T5 and CLIP stay on the CPU and run
        there), "model" (the DiT's blocks visit the GPU one at a time), "all" or a set of those. ``keep_fp8``:
        float8-stored DiT weights stay float8 (cast per layer). ``num_heads`` / ``clip_head_width``: for files whose
        head count is not the released one (the DiT's heads are dim / 128 unless a config.json says otherwise; the
        CLIP head width is 80 for ViT-H). ``sequence_parallel`` / ``fsdp`` (under torchrun, see docs/distributed.md):
        split each video's tokens over the processes (Ulysses), shard the DiT ("dit") and umT5 ("text") with FSDP2."""
        device = runtime.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = runtime.dtype(dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        if dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            raise ConfigError(f"dtype {dtype}: the compute dtype is float32, bfloat16 or float16 (float8 weights "
                              "stay float8 per layer by themselves)")
        offload = _offload_set(offload)
        files = find_files(path, vae, text_encoder, clip, tokenizer)
        cfg = _dit_config(files.dit)
        kind = "i2v-no-clip" if cfg.model_type == "i2v" and cfg.image_dim is None else cfg.model_type
        if kind not in PRESETS:
            what = {"t2v": "a text-to-video DiT (no image input); i2v runs the image-to-video checkpoints "
                           "(Wan2.1 I2V-14B, FLF2V-14B, Wan2.2 TI2V-5B)",
                    "i2v-no-clip": "Wan2.2 I2V-A14B's expert layout (image latent without CLIP: two DiTs switched at a "
                           "boundary timestep), which i2v does not run yet"}.get(kind, kind)
            raise CheckpointError(f"{path}: {what}")
        preset = PRESETS[kind]
        if files.vae is None and files.folder is not None:  # both VAEs there: the one of this DiT
            files.vae = _first(files.folder / WAN_VAES[preset.vae])
        needed = ["vae", "text_encoder", "tokenizer"] + (["clip"] if cfg.image_dim is not None else [])
        missing = [n for n in needed if getattr(files, n) is None]
        if missing:
            lines = "; ".join(f"{FLAGS[n]} ({WHERE[n]})" for n in missing)
            raise ConfigError(f"{path}: a Wan {kind} DiT needs its {', '.join(n.replace('_', ' ') for n in missing)}, "
                              f"not found beside it: pass {lines}")
        _check_part("vae", files.vae, "wan")
        _check_part("text_encoder", files.text_encoder, "t5")
        if files.clip is not None and cfg.image_dim is not None:
            _check_part("clip", files.clip, "clip-vision")
        _check_vae_version(files.vae, preset.vae, kind)
        where = Path(path).resolve()
        names = where.name.lower() + (" " + where.parent.name.lower() if where.is_file() else "")
        default_size = "480p" if kind == "i2v" and "480" in names else "720p"  # the 480P release, by its name
        pipe = cls(files, cfg, dtype=dtype, device=device, offload=offload, keep_fp8=keep_fp8,
                   default_size=default_size, num_heads=num_heads, clip_head_width=clip_head_width,
                   sequence_parallel=sequence_parallel, fsdp=fsdp, log=log)
        log(f"Wan {kind} ({files.layout}: {files.dit}); {dtype}, {device}; default size {default_size}"
            + (f", offload {', '.join(sorted(offload))}" if offload else "")
            + (f"; tokenizer {files.tokenizer_from}" if files.layout == "single-file" else ""))
        return pipe

    # ------------------------------------------------------------------ loading and freeing the parts
    def _text_device(self):
        return torch.device("cpu") if "text" in self.offload else self.device

    def _load(self, what: str, fn):
        t0 = time.perf_counter()
        module = fn()
        self.log(f"loaded {what} in {time.perf_counter() - t0:.1f} s")
        return module

    def load_text_encoder(self):
        from ..models.encoders.t5 import T5Encoder
        from ..text.tokenizer import Tokenizer

        if self.tokenizer is None:
            self.tokenizer = Tokenizer.from_file(self.files.tokenizer)
        if self.text_encoder is None:
            sharded = "text" in self.fsdp
            self.text_encoder = self._load(f"the text encoder {self.files.text_encoder}", lambda: (
                T5Encoder.from_pretrained(self.files.text_encoder, dtype=self.dtype,
                                          device="cpu" if sharded else self._text_device())))
            if sharded:  # each process keeps its share of the (memory-mapped) weights on its device
                from ..nn import parallel

                parallel.shard(self.text_encoder, self._text_device())
        return self.text_encoder

    def load_clip(self):
        from ..models.encoders.clip_vision import ClipVision

        if self.clip is None:
            self.clip = self._load(f"CLIP {self.files.clip}", lambda: ClipVision.from_pretrained(
                self.files.clip, dtype=self.dtype, device=self._text_device(), head_width=self.clip_head_width))
        return self.clip

    def load_vae(self):
        from ..models.wan.vae import load_vae

        if self.vae is None:
            self.vae = self._load(f"the VAE {self.files.vae}", lambda: load_vae(self.files.vae, dtype=self.vae_dtype,
                                                                                 device=self.device))
        return self.vae

    def load_dit(self):
        from ..models.wan.dit import WanDiT

        if self.dit is None:
            on_gpu = "model" not in self.offload
            self.dit = self._load(f"the DiT {self.files.dit}", lambda: WanDiT.from_pretrained(
                self.files.dit, dtype=self.dtype, device=self.device if on_gpu else "cpu", keep_fp8=self.keep_fp8,
                num_heads=self.num_heads, fsdp="dit" in self.fsdp))
            if self.sequence_parallel > 1:
                from ..nn import parallel

                parallel.check_options(parallel.world_size(), sequence_parallel=self.sequence_parallel,
                                       heads=self.dit.config.num_heads)
                parallel.use_sequence_parallel(self.dit)
            if not on_gpu:
                self._offload = BlockOffload(self.dit, self.device)
        return self.dit

    def free_encoders(self) -> None:
        """Drop the text encoder and CLIP (reloaded from disk when needed again), unless offload "text" keeps them."""
        if "text" not in self.offload:
            self.text_encoder = self.clip = None
            _free(self.device)

    # ------------------------------------------------------------------ stages
    @torch.no_grad()
    def encode_prompts(self, prompt: str, negative_prompt: str | None = None, progress: bool = True):
        """(context, context_null): the umT5 outputs (1, L, 4096) of the prompt and of the negative prompt (Wan's
        default one when None or ""), each encoded alone as the original does, on the DiT's device."""
        from ..models.encoders.t5 import encode_prompts
        from ..text.tokenizer import TruncationWarning

        if negative_prompt in (None, ""):  # the original: n_prompt == "" -> config.sample_neg_prompt
            negative_prompt = self.preset.negative_prompt
        t5 = self.load_text_encoder()
        texts = [("prompt", prompt), ("negative prompt", negative_prompt)]
        bar = texts
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(texts, desc="encoding text", unit="prompt", leave=False)
        out = []
        for name, text in bar:
            with warnings.catch_warnings(record=True) as caught:  # a too-long prompt: say which one
                warnings.simplefilter("always", TruncationWarning)
                out.append(encode_prompts(t5, self.tokenizer, [text])[0][None].to(self.device))
            for w in caught:
                warnings.warn(str(w.message).replace("text 0", f"the {name}"), w.category, stacklevel=3)
        return out[0], out[1]

    def sizes(self, h: int, w: int, size=None) -> tuple[int, int]:
        """The video's (H, W) for an image of h x w at ``size`` (module docstring: each model's size rule)."""
        area = max_area(size if size is not None else self.default_size, self.model_type)
        s = self.preset.spatial
        if min(h, w) < s * PATCH:
            raise InputError(f"image is {w}x{h}; Wan needs both sides >= {s * PATCH} px (one latent patch of "
                             f"{PATCH}x{PATCH} latent pixels, {s} px each)")
        if self.model_type == "ti2v":
            W, H = best_output_size(w, h, s * PATCH, s * PATCH, area)
        else:
            H, W = i2v_size(h, w, area, s)
        if min(H, W) < s * PATCH:
            raise InputError(f"image is {w}x{h}: at an area of {area} px its aspect ratio leaves less than one latent "
                             f"patch on a side ({W}x{H}); crop it closer to square or give a larger --size")
        return H, W

    @torch.no_grad()
    def condition(self, image, last_frame=None, frames: int = 81, size=None, progress: bool = True) -> dict:
        """What the DiT sees besides the noisy latent and the text: {"y", "clip"} (I2V, FLF2V) or {"z"} (TI2V),
        plus "size" (H, W) and "latent" (F', h, w). ``image`` / ``last_frame``: a path, PIL image, array or
        (1, 3, h, w) tensor in [-1, 1]."""
        self.check_last_frame(last_frame is not None)
        if self.model_type == "ti2v":
            return self._condition_ti2v(image, frames, size, progress)
        first = to_tensor(image, (-1.0, 1.0), torch.float32)  # (1, 3, h, w): TF.to_tensor(img).sub_(0.5).div_(0.5)
        H, W = self.sizes(*first.shape[-2:], size)
        images = [first]
        if last_frame is not None:
            from ..image import cover_crop

            last = to_tensor(last_frame, (-1.0, 1.0), torch.float32)
            if last.shape[-2:] != first.shape[-2:]:
                self.log(f"note: the last frame is {last.shape[-1]}x{last.shape[-2]}, the first "
                         f"{first.shape[-1]}x{first.shape[-2]}: resized (keeping its aspect ratio) and centre-cropped "
                         "to the first frame's size")
                last = cover_crop(last, *first.shape[-2:], mode="bicubic", antialias=True).clamp(-1, 1)
            images.append(last)
        clip = self.load_clip()  # CLIP sees the full-size image(s): (n, 257, width) -> (1, n * 257, width)
        c_dev = self._text_device()
        tokens = clip.tokens(torch.cat(images).to(c_dev, self.dtype))
        tokens = tokens.reshape(1, -1, tokens.shape[-1]).to(self.device)
        self.free_encoders()
        # the VAE input: each given frame bicubic-resized (no antialias) to H x W, zero frames between
        video = torch.zeros(1, 3, frames, H, W)
        video[:, :, 0] = F.interpolate(first, size=(H, W), mode="bicubic", align_corners=False)[0]
        if last_frame is not None:
            video[:, :, -1] = F.interpolate(images[1], size=(H, W), mode="bicubic", align_corners=False)[0]
        vae = self.load_vae()
        z = vae.encode(video.to(self.device), progress=progress)  # (1, 16, F', h, w)
        lat_h, lat_w = H // self.preset.spatial, W // self.preset.spatial
        mask = frame_mask(frames, lat_h, lat_w, last=last_frame is not None).to(z)
        y = torch.cat([mask[None], z], dim=1)  # (1, 20, F', h, w)
        return {"y": y, "clip": tokens, "size": (H, W), "latent": tuple(z.shape[2:])}

    def check_last_frame(self, given: bool) -> None:
        """FLF2V needs a last frame; the other models take none."""
        if given and self.model_type != "flf2v":
            raise ConfigError(f"a last frame needs a first-last-frame checkpoint (Wan2.1-FLF2V-14B-720P); "
                              f"{self.files.dit} is {self.model_type.upper()}: drop --last-frame or use FLF2V")
        if not given and self.model_type == "flf2v":
            raise ConfigError(f"{self.files.dit} is FLF2V (first-last-frame-to-video): give the last frame too "
                              "(--last-frame / last_frame=)")

    def _condition_ti2v(self, image, frames, size, progress) -> dict:
        if isinstance(image, torch.Tensor):  # a tensor is in [-1, 1] here; to_uint8 takes [0, 1]
            image = (image.detach().float().clamp(-1, 1) + 1) / 2
        arr = to_uint8(image)  # (h, w, 3) uint8, as PIL reads it
        H, W = self.sizes(*arr.shape[:2], size)
        img = resize_cover_uint8(arr, H, W, resample="lanczos")  # PIL LANCZOS to cover, then the centre crop
        x = to_tensor(img, (-1.0, 1.0), torch.float32)[:, :, None]  # (1, 3, 1, H, W)
        vae = self.load_vae()
        z = vae.encode(x.to(self.device), progress=progress)  # (1, 48, 1, h, w)
        lat = (1 + (frames - 1) // 4, H // self.preset.spatial, W // self.preset.spatial)
        return {"z": z, "size": (H, W), "latent": lat}

    def initial_noise(self, latent: tuple[int, int, int], seed: int) -> torch.Tensor:
        """torch.randn(C, F', h, w) from a CPU generator seeded with ``seed``: the original's draw (C = 16, 48)."""
        g = torch.Generator("cpu").manual_seed(seed)
        return torch.randn(self.config.out_dim, *latent, generator=g, dtype=torch.float32)[None]

    @torch.no_grad()
    def sample(self, cond: dict, context, context_null, *, steps: int, shift: float, guidance: float,
               sampler: str = "flow_unipc", seed: int = 0, noise: torch.Tensor | None = None,
               progress: bool = True) -> torch.Tensor:
        """The final latent (1, C, F', h, w): ``sampler`` over CFG(flow Denoiser(DiT)) on the wan schedule."""
        from ..models.wan.dit import pad_context

        fn = get_sampler(sampler)
        sigmas = get_schedule("wan")(steps, shift=shift, **SCHEDULE_KWARGS.get(sampler, {}))
        noise = self.initial_noise(cond["latent"], seed) if noise is None else noise
        x = initial_noise(noise.to(self.device), sigmas[0], "flow")
        branch = {}
        if "y" in cond:
            branch = {"y": cond["y"], "clip": cond["clip"]}
        else:
            branch = {"clean_first_frame": True}  # TI2V: latent frame 0 is the clean image, its tokens t = 0
        cfg = {"cond": {"context": pad_context(context), **branch},  # equal lengths: cond and uncond batch
               "uncond": {"context": pad_context(context_null), **branch}}
        dit = self.load_dit()
        D = CFGDenoiser(Denoiser(dit, "flow", sigma_to_c_noise=flow_timestep()), guidance)
        if "z" in cond:  # frame 0 = the image latent, before the first step and after every step
            known = torch.zeros(1, 1, x.shape[2], 1, 1, device=self.device)
            known[:, :, 0] = 1
            D = ImposeKnown(D, cond["z"], known)
            x = known * cond["z"] + (1 - known) * x
        callback = progress_callback(steps, "sampling") if progress else None
        gen = torch.Generator("cpu").manual_seed(seed)  # the stochastic samplers' noise
        return fn(D, x, sigmas, cond=cfg, generator=gen, callback=callback)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, progress: bool = True, tile: int | None = None) -> torch.Tensor:
        """Latents (1, C, F', h, w) -> frames (F, 3, H, W) in [0, 1] (the VAE's output clamped to [-1, 1], as the
        original). ``tile``: tiled VAE decode (latent pixels; docs/wan-vae.md)."""
        vae = self.load_vae()
        z = latents.to(self.device)
        if tile is not None:
            pieces = [vae.decode(z, progress=progress, tile=tile)]  # (1, 3, F, H, W) in [-1, 1]
        else:  # latent frame by latent frame, each piece to the CPU as it comes: the device never holds the video
            pieces = vae.decode_frames(z, progress=progress)  # (1, 3, 1 or 4, H, W) in [-1, 1]
        frames = torch.cat([p[0].transpose(0, 1).float().cpu() for p in pieces])  # (F, 3, H, W)
        return frames.add_(1).div_(2).clamp_(0, 1)

    def settings(self, frames=None, steps=None, shift=None, guidance=None, sampler=None, size=None) -> dict:
        """The values a call will use: the given ones, else the model's defaults (PRESETS)."""
        p = self.preset
        size = size if size is not None else self.default_size
        if shift is None:
            shift = SHIFT_480P if (self.model_type == "i2v" and max_area(size, "i2v") == AREAS["480p"]) else p.shift
        out = dict(frames=p.frames if frames is None else frames, steps=p.steps if steps is None else steps,
                   shift=shift, guidance=p.guidance if guidance is None else guidance,
                   sampler=sampler or "flow_unipc", size=size, fps=p.fps)
        runtime.check_count("frames", out["frames"], low=MIN_FRAMES)
        runtime.check_count("steps", out["steps"])
        runtime.check_number("--shift", out["shift"], low=0, low_open=True)
        runtime.check_number("--guidance", out["guidance"], low=0)
        note = check_sampler(out["sampler"], "flow")
        if note:
            warnings.warn(note, stacklevel=2)
        max_area(out["size"], self.model_type)
        return out

    def __call__(self, image, prompt: str = "", negative_prompt: str | None = None, last_frame=None,
                 frames: int | None = None, steps: int | None = None, shift: float | None = None,
                 guidance: float | None = None, sampler: str | None = None, seed: int | None = None, size=None,
                 progress: bool = True, save_latents_to=None, tile: int | None = None) -> torch.Tensor:
        """Animate ``image`` (FLF2V: from ``image`` to ``last_frame``) as ``prompt`` says: (F, 3, H, W) in [0, 1].
        Unset values are the model's defaults (:data:`PRESETS`); ``seed`` None draws one and prints it."""
        s = self.settings(frames, steps, shift, guidance, sampler, size)
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
        s["frames"] = round_frames(s["frames"], self.log)
        self.check_last_frame(last_frame is not None)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
            if self.sequence_parallel > 1 or self.fsdp:  # every process must draw the same noise
                from ..nn import parallel

                seed = parallel.broadcast(seed)
            self.log(f"seed {seed}")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        cond = self.condition(image, last_frame, s["frames"], s["size"], progress)  # images first: bad input fails fast
        context, context_null = self.encode_prompts(prompt, negative_prompt, progress)
        self.free_encoders()
        t1 = time.perf_counter()
        latents = self.sample(cond, context, context_null, steps=s["steps"], shift=s["shift"], guidance=s["guidance"],
                              sampler=s["sampler"], seed=seed, progress=progress)
        t2 = time.perf_counter()
        if save_latents_to is not None and _main_process():
            latents_file.save_latents(save_latents_to, latents, "wan", checkpoint=self.files.dit, seed=seed,
                                      frames=s["frames"], steps=s["steps"], fps=s["fps"], vae=self.preset.vae,
                                      model_type=self.model_type)
            self.log(f"wrote latents {save_latents_to}")
        out = self.decode(latents, progress, tile)
        t3 = time.perf_counter()
        H, W = cond["size"]
        self.last_run = {"seed": seed, "latents": latents, "settings": s, "condition_s": t1 - t0,
                         "sample_s": t2 - t1, "decode_s": t3 - t2, "memory": runtime.peak_memory(self.device)}
        self.log(f"{s['frames']} frames {W}x{H}: conditioning {t1 - t0:.1f} s, sampling {t2 - t1:.1f} s "
                 f"({s['steps']} steps, {s['sampler']}, shift {s['shift']:g}, guidance {s['guidance']:g}), "
                 f"decoding {t3 - t2:.1f} s; {runtime.peak_memory(self.device)}")
        return out


def _main_process() -> bool:
    """Rank 0 of a torchrun launch, or the only process: the one that writes files."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _offload_set(offload) -> set:
    if offload in (None, "", "none"):
        return set()
    items = {offload} if isinstance(offload, str) else set(offload)
    items = {p.strip() for i in items for p in str(i).split(",")}
    if "all" in items:
        items = (items - {"all"}) | {"text", "model"}
    bad = items - {"text", "model"}
    if bad:
        raise ConfigError(f"offload {', '.join(sorted(bad))}: expected text, model or all")
    return items


def _check_vae_version(path: Path, want: str, kind: str) -> None:
    from ..models.wan.vae import open_wan_vae, require_wan_vae

    sd = open_wan_vae(path)
    found = require_wan_vae(sd.shapes, None, source=str(path))
    if found != want:
        need = {"2.2": "Wan2.2_VAE.pth (Wan-AI/Wan2.2-TI2V-5B; 48 latent channels)",
                "2.1": "Wan2.1_VAE.pth (any Wan2.1 release; 16 latent channels)"}[want]
        raise CheckpointError(f"{path}: a Wan{found} VAE, but the {kind} DiT works in Wan{want}'s latent space: "
                              f"give {need}")
