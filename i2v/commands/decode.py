"""`i2v decode LATENTS -o out.mp4`: render latents saved by `i2v animate --save-latents` (or `i2v encode`) again
-- another chunk size, tiling, dtype or device -- without sampling. The latents file says which model made it:
SVD latents need ``--checkpoint`` (only its VAE decoder is loaded), Wan latents ``--vae`` (or ``--checkpoint``, a
Wan folder holding its VAE); Wan's causal VAE decodes one latent frame at a time, written out as it comes."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..runtime import add_threads_argument, set_threads
from .common import add_output_arguments, check_output, write_video
from .svd import MODEL_DEFAULTS, _add_model_options, _check_counts

HELP = "decode saved SVD or Wan latents to a video again, without sampling"
EXAMPLES = """examples:
  i2v animate photo.jpg --checkpoint svd_xt.safetensors --save-latents run.safetensors -o out.mp4
  i2v decode run.safetensors --checkpoint svd_xt.safetensors -o again.mp4
  i2v decode run.safetensors --checkpoint svd_xt.safetensors --decode-chunk-size 2 --dtype float16 --device cuda \
      -o again.gif
  i2v decode wan_run.safetensors --vae Wan2.1-I2V-14B-480P/Wan2.1_VAE.pth -o again.mp4
  i2v decode wan_run.safetensors --checkpoint Wan2.2-TI2V-5B/ --tile 32 --device cuda -o again.mp4
  i2v encode clip.mp4 --vae Wan2.1_VAE.pth -o clip.safetensors
  i2v decode clip.safetensors --vae Wan2.1_VAE.pth -o round_trip.mp4"""

SVD_ONLY = ("unet_head_channels", "clip_head_width", "decode_chunk_size")
WAN_ONLY = ("vae", "tile", "tile_overlap")


def add_arguments(parser) -> None:
    parser.add_argument("latents", type=Path, help="a .safetensors file written by --save-latents or `i2v encode`")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="SVD latents: svd.safetensors / svd_xt.safetensors / a diffusers folder; Wan latents: a "
                             "Wan-AI or diffusers folder (its VAE is used)")
    parser.add_argument("--vae", type=Path, default=None,
                        help="Wan latents: Wan2.1_VAE.pth / Wan2.2_VAE.pth (or a ComfyUI / diffusers VAE)")
    parser.add_argument("--tile", type=int, default=None, metavar="N",
                        help="Wan: decode in spatial tiles of N latent pixels (less memory, small seams; e.g. 32)")
    parser.add_argument("--tile-overlap", type=int, default=None, metavar="N",
                        help="Wan: latent pixels shared by neighbouring tiles (default tile / 4)")
    _add_model_options(parser, dict.fromkeys(MODEL_DEFAULTS))
    add_output_arguments(parser, default_fps=None, fps_default_text="SVD 7; Wan: the run's, else 16")
    add_threads_argument(parser)


def _refuse(args, names, family: str) -> None:
    given = ["--" + n.replace("_", "-") for n in names if getattr(args, n, None) is not None]
    if given:
        it = "it" if len(given) == 1 else "them"
        raise ConfigError(f"{', '.join(given)}: not for {family} latents ({args.latents} holds {family} latents); "
                          f"drop {it}")


def run(args) -> int:
    set_threads(args.threads)
    from ..latents import load_latents

    latents, meta = load_latents(args.latents)  # not a latents file: one clear error, before anything else
    if meta.get("format") == "i2v-wan-latents":
        return run_wan(args, latents, meta)
    _refuse(args, WAN_ONLY, "SVD")
    if args.checkpoint is None:
        raise ConfigError(f"{args.latents} holds SVD latents: give --checkpoint (the SVD checkpoint that made them)")
    for k, v in MODEL_DEFAULTS.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if args.fps is None:
        args.fps = 7.0
    from ..pipelines.svd import SVDPipeline

    _check_counts(args)
    check_output(args)
    pipe = SVDPipeline.from_pretrained(args.checkpoint, dtype=args.dtype, device=args.device, parts=("vae_decoder",))
    frames = pipe.decode_latents(latents, args.decode_chunk_size)
    write_video(frames, args)
    return 0


def wan_vae_path(args, z_dim: int) -> Path:
    """--vae, or the VAE of the Wan folder given as --checkpoint (the one whose latent width the file has)."""
    if args.vae is not None:
        return args.vae
    if args.checkpoint is None:
        raise ConfigError(f"{args.latents} holds Wan latents ({z_dim} channels): give --vae "
                          f"({'Wan2.2_VAE.pth' if z_dim == 48 else 'Wan2.1_VAE.pth'}) or --checkpoint (its Wan folder)")
    from ..pipelines.wan import WAN_VAES, find_files

    folder = Path(args.checkpoint)
    version = "2.2" if z_dim == 48 else "2.1"
    if folder.is_dir() and (folder / WAN_VAES[version]).is_file():
        return folder / WAN_VAES[version]
    files = find_files(folder)
    if files.vae is None:
        raise ConfigError(f"--checkpoint {folder}: no VAE beside it; give --vae ({WAN_VAES[version]})")
    return files.vae


def run_wan(args, latents, meta) -> int:
    """Wan latents (1, z, t, h, w) -> video, streamed latent frame by latent frame through the causal VAE."""
    import numpy as np
    import torch

    from .. import runtime
    from ..errors import InputError
    from ..models.wan.vae import load_vae, open_wan_vae, require_wan_vae

    _refuse(args, SVD_ONLY, "Wan")
    for name in ("tile", "tile_overlap"):
        v = getattr(args, name)
        if v is not None and v < (1 if name == "tile" else 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be >= {1 if name == 'tile' else 0}, got {v}")
    if args.tile_overlap is not None and args.tile is None:
        raise ConfigError("--tile-overlap goes with --tile")
    if args.fps is None:
        args.fps = float(meta.get("fps", 16.0))
    check_output(args)
    if latents.ndim == 4:  # (z, t, h, w): one clip
        latents = latents[None]
    if latents.ndim != 5:
        raise ConfigError(f"{args.latents}: Wan latents are (1, z, t, h, w), found {list(latents.shape)}")
    device = runtime.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    path = wan_vae_path(args, latents.shape[1])
    version = require_wan_vae(open_wan_vae(path).shapes, None, source=str(path))  # headers only
    z_dim = {"2.1": 16, "2.2": 48}[version]
    if latents.shape[1] != z_dim:
        other = {16: "Wan2.1", 48: "Wan2.2"}.get(latents.shape[1], f"{latents.shape[1]}-channel")
        raise InputError(f"{args.latents}: {other} latents ({latents.shape[1]} channels), but {path} is the Wan{version} "
                         f"VAE ({z_dim} channels): decode them with the {other} VAE")
    vae = load_vae(path, dtype=runtime.dtype(args.dtype) or torch.float32, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    z = latents.to(device)
    t, h, w = z.shape[2:]
    s = vae.spatial_stride
    frames = np.empty((1 + vae.temporal_stride * (t - 1), h * s, w * s, 3), np.uint8)
    if args.tile is not None:
        pieces = [vae.decode(z, tile=args.tile, tile_overlap=args.tile_overlap, progress=True)]
    else:
        pieces = vae.decode_frames(z, progress=True)  # (1, 3, n, H, W) in [-1, 1], n = 1 then 4
    i = 0
    for piece in pieces:  # each piece becomes 8-bit frames as it comes: the float video is never held
        x = ((piece[0].float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)  # (3, n, H, W)
        n = x.shape[1]
        frames[i:i + n] = x.permute(1, 2, 3, 0).cpu().numpy()
        i += n
    print(f"decoded {len(frames)} frames {frames.shape[2]}x{frames.shape[1]} with the Wan{vae.version} VAE; "
          f"{runtime.peak_memory(device)}")
    write_video(frames, args)
    return 0
