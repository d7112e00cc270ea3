"""`i2v encode VIDEO --vae PATH -o latents.safetensors`: a video (or GIF, or folder of frames) into the latent space
of a Wan causal VAE (Wan2.1: 16 x T/4 x H/8 x W/8, Wan2.2: 48 x T/4 x H/16 x W/16), in chunks of 1, 4, 4, ... frames
as the original encodes. `i2v decode` renders the file again; the Python API is ``load_vae(path).encode(video)``.

A causal VAE takes 1 + 4k frames and sides that are multiples of its stride. Other clips are refused with the counts
and sizes that work, unless ``--fit trim`` (drop the last frames down to 1 + 4k) / ``--fit pad`` (repeat the last
frame up to 1 + 4k) and ``--crop`` (centre-crop the sides to multiples of the stride) say what to do."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, InputError
from ..runtime import add_threads_argument, set_threads

HELP = "encode a video into Wan VAE latents (.safetensors) for `i2v decode`"
EXAMPLES = """examples:
  i2v encode clip.mp4 --vae Wan2.1-I2V-14B-480P/Wan2.1_VAE.pth -o clip.safetensors
  i2v encode clip.mp4 --vae Wan2.2_VAE.pth --frames 121 --fit pad --crop --device cuda -o clip.safetensors
  i2v decode clip.safetensors --vae Wan2.2_VAE.pth -o round_trip.mp4"""

TEMPORAL = 4  # pixel frames per latent frame after the first, both Wan VAEs


def add_arguments(parser) -> None:
    parser.add_argument("video", type=Path, help="a video file, a GIF or a folder of frames")
    parser.add_argument("--vae", type=Path, required=True,
                        help="Wan2.1_VAE.pth / Wan2.2_VAE.pth, a ComfyUI or diffusers Wan VAE, or a Wan folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="latents file to write (.safetensors)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    parser.add_argument("--frames", type=int, default=None, help="encode only the first N frames")
    parser.add_argument("--fit", choices=("trim", "pad"), default=None,
                        help="a frame count that is not 1 + 4k: trim = drop the last frames, pad = repeat the last "
                             "frame")
    parser.add_argument("--crop", action="store_true",
                        help="centre-crop sides that are not multiples of the VAE's stride (8 for Wan2.1, 16 for 2.2)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="VAE compute dtype (default float32, as the original)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default cuda when available)")
    add_threads_argument(parser)


def fit_frames(n: int, fit: str | None) -> int:
    """The frame count to encode: n if it is 1 + 4k, else trimmed / padded as ``fit`` says, else an error."""
    if (n - 1) % TEMPORAL == 0:
        return n
    lo = 1 + (n - 1) // TEMPORAL * TEMPORAL
    if fit == "trim":
        return lo
    if fit == "pad":
        return lo + TEMPORAL
    raise InputError(f"{n} frames: a Wan VAE encodes 1 + 4k frames (1, 5, 9, ..., 81, ...): pass --fit trim to drop "
                     f"{n - lo} to {lo}, --fit pad to repeat the last frame up to {lo + TEMPORAL}, or --frames {lo}")


def run(args) -> int:
    set_threads(args.threads)
    import numpy as np
    import torch

    from .. import runtime, video
    from ..latents import save_latents
    from ..models.wan.vae import load_vae, open_wan_vae, require_wan_vae
    from ..outputs import check_writable

    if args.output.suffix != ".safetensors":
        raise ConfigError(f"-o must end in .safetensors (a latents file), got {args.output}")
    if args.frames is not None and args.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {args.frames}")
    check_writable(args.output, args.overwrite, inputs=[args.video, args.vae])
    version = require_wan_vae(open_wan_vae(args.vae).shapes, None, source=str(args.vae))  # before reading the video
    stride = 8 if version == "2.1" else 16
    frames, fps = video.load(args.video, max_frames=args.frames)  # (t, h, w, 3) uint8
    n = fit_frames(len(frames), args.fit)
    if n != len(frames):
        how = "dropped the last" if n < len(frames) else "repeated the last frame"
        print(f"note: {len(frames)} frames -> {n} (1 + 4k): {how} {abs(n - len(frames))}")
        frames = frames[:n] if n < len(frames) else np.concatenate([frames, frames[-1:].repeat(n - len(frames), 0)])
    h, w = frames.shape[1:3]
    H, W = h // stride * stride, w // stride * stride
    if (H, W) != (h, w):
        if not args.crop:
            raise InputError(f"frames of {w}x{h}: the Wan{version} VAE needs sides that are multiples of {stride}; "
                             f"pass --crop to centre-crop to {W}x{H}, or resize the video")
        if min(H, W) == 0:
            raise InputError(f"frames of {w}x{h} are smaller than the Wan{version} VAE's {stride}-pixel stride")
        top, left = (h - H) // 2, (w - W) // 2
        frames = frames[:, top:top + H, left:left + W]
        print(f"note: centre-cropped {w}x{h} -> {W}x{H} (multiples of {stride})")
    device = runtime.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    runtime.check_memory(frames.size * 4 * 2, f"{n} frames of {W}x{H} as float32",
                         "encode fewer frames (--frames)")
    vae = load_vae(args.vae, dtype=runtime.dtype(args.dtype) or torch.float32, device=device)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None]  # (1, 3, t, h, w) uint8
    x = x.to(device, torch.float32) / 127.5 - 1  # [-1, 1]
    z = vae.encode(x, progress=True)  # (1, z, 1 + k, h/s, w/s)
    save_latents(args.output, z, "wan", vae=version, frames=n, fps=fps or 16.0, source=args.video)
    print(f"wrote {args.output}: latents {list(z.shape)} (Wan{version}) of {n} frames {W}x{H}; "
          f"{runtime.peak_memory(device)}")
    return 0
