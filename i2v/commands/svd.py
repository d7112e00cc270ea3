"""The Stable Video Diffusion path of `i2v animate IMAGE --checkpoint PATH` (mirrors
:class:`i2v.pipelines.svd.SVDPipeline`); :mod:`.animate` dispatches here whenever ``--checkpoint`` is given,
and `i2v decode` shares the model options."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, OutputExistsError
from .common import check_output, write_video

EXAMPLES = """examples:
  i2v animate photo.jpg --checkpoint svd_xt.safetensors -o out.mp4
  i2v animate photo.jpg --checkpoint svd_xt_1_1.safetensors --dtype float16 --device cuda --seed 1 -o out.mp4
  i2v animate photo.jpg --checkpoint ./stable-video-diffusion-img2vid-xt/ --motion-bucket-id 180 -o out.gif
  i2v animate photo.jpg --checkpoint svd.safetensors --frames 14 --steps 10 --sampler dpmpp_2m -o frames/
  i2v animate photo.jpg --checkpoint svd_xt.safetensors --save-latents run.safetensors -o out.mp4
  i2v decode run.safetensors --checkpoint svd_xt.safetensors --decode-chunk-size 4 -o again.mp4"""


# the model options shared by `i2v animate --checkpoint` and `i2v decode`
MODEL_DEFAULTS = {"dtype": "float32", "device": "cpu", "unet_head_channels": 64, "clip_head_width": None,
                  "decode_chunk_size": 14}
# every option only SVD understands, with its default (`i2v animate` keeps them None to tell "not given")
SVD_DEFAULTS = {**MODEL_DEFAULTS, "preset": None, "fps_id": 6, "motion_bucket_id": 127, "cond_aug": 0.02,
                "min_cfg": None, "max_cfg": None, "width": None, "height": None, "save_latents": None}
# options both models take, with SVD's defaults
SHARED_DEFAULTS = {"sampler": "euler", "schedule": "karras", "fps": 7.0}


def _add_model_options(group, defaults: dict) -> None:
    group.add_argument("--dtype", default=defaults["dtype"], choices=["float32", "float16", "bfloat16", "float64"],
                       help="compute dtype (default float32; float16/bfloat16 on a GPU halve memory)")
    group.add_argument("--device", default=defaults["device"], help="cpu, cuda, cuda:1, mps ... (default cpu)")
    group.add_argument("--unet-head-channels", type=int, default=defaults["unet_head_channels"],
                       help="U-Net attention head width (not stored in files; 64 for released SVD)")
    group.add_argument("--clip-head-width", type=int, default=defaults["clip_head_width"],
                       help="CLIP attention head width (not stored in files; 80 for ViT-H, looked up by width)")
    group.add_argument("--decode-chunk-size", type=int, default=defaults["decode_chunk_size"],
                       help="frames decoded together by the temporal VAE decoder (lower = less memory; default 14)")


def add_checkpoint_arguments(parser) -> None:
    """`i2v decode`: --checkpoint (required), --dtype, --device, the head widths, --decode-chunk-size."""
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="svd.safetensors / svd_xt.safetensors / svd_xt_1_1.safetensors, or a diffusers folder")
    _add_model_options(parser, MODEL_DEFAULTS)


def add_svd_arguments(group) -> None:
    """The options of `i2v animate` that only Stable Video Diffusion takes; all default to None (= not given)
    and :func:`run` fills in :data:`SVD_DEFAULTS`. --checkpoint, --frames, --steps, --sampler, --schedule, --seed
    and the output options are added by `i2v animate` itself."""
    _add_model_options(group, dict.fromkeys(MODEL_DEFAULTS))
    group.add_argument("--preset", choices=["svd", "svd_xt"], default=None,
                       help="frames/steps/CFG defaults; default: from the checkpoint (diffusers num_frames, or 'xt' in the file name)")
    group.add_argument("--fps-id", type=int, default=None, help="frame-rate conditioning, fps - 1 (default 6)")
    group.add_argument("--motion-bucket-id", type=int, default=None, help="amount of motion, 0..255 (default 127)")
    group.add_argument("--cond-aug", type=float, default=None, help="noise added to the conditioning image (default 0.02)")
    group.add_argument("--min-cfg", type=float, default=None, help="guidance scale of the first frame (svd 1.0, svd_xt 1.5)")
    group.add_argument("--max-cfg", type=float, default=None, help="guidance scale of the last frame (svd 2.5, svd_xt 3.0)")
    group.add_argument("--width", type=int, default=None, help="output width, multiple of 64 (default: from the image)")
    group.add_argument("--height", type=int, default=None, help="output height, multiple of 64 (default: from the image)")
    group.add_argument("--save-latents", type=Path, default=None, help="also write the sampled latents (.safetensors) for `i2v decode`")


def _check_counts(args) -> None:
    for name in ("frames", "steps", "decode_chunk_size"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {v}")


def run(args) -> int:
    """Stable Video Diffusion for `i2v animate --checkpoint PATH` (unset options take :data:`SVD_DEFAULTS`)."""
    import torch

    for k, v in {**SVD_DEFAULTS, **SHARED_DEFAULTS}.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)

    from ..image import to_tensor
    from ..pipelines.svd import SVDPipeline, fit_image

    _check_counts(args)
    check_output(args)
    if args.save_latents is not None:
        if args.save_latents.suffix != ".safetensors":
            raise ConfigError(f"--save-latents must end in .safetensors, got {args.save_latents}")
        if args.save_latents.exists() and not args.overwrite:
            raise OutputExistsError(f"{args.save_latents} exists; pass --overwrite to replace it")
    # unreadable or too small images fail before the model is loaded
    image = fit_image(to_tensor(args.image, (-1.0, 1.0), torch.float64), args.width, args.height)
    pipe = SVDPipeline.from_pretrained(args.checkpoint, dtype=args.dtype, device=args.device,
                                       preset=args.preset, unet_head_channels=args.unet_head_channels,
                                       clip_head_width=args.clip_head_width)
    frames = pipe(image, args.frames, args.steps, sampler=args.sampler, schedule=args.schedule, fps_id=args.fps_id,
                  motion_bucket_id=args.motion_bucket_id, cond_aug=args.cond_aug, min_cfg=args.min_cfg,
                  max_cfg=args.max_cfg, seed=args.seed, decode_chunk_size=args.decode_chunk_size, width=args.width,
                  height=args.height, save_latents_to=args.save_latents)
    write_video(frames, args)
    return 0
