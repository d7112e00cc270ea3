"""`i2v animate IMAGE --checkpoint PATH`: Stable Video Diffusion from a released checkpoint (mirrors
:class:`i2v.pipelines.svd.SVDPipeline`). Self-contained ``run(args)`` so a merged ``animate`` command can
dispatch here whenever ``--checkpoint`` is given."""

from __future__ import annotations

from pathlib import Path

from ..diffusion.samplers import SAMPLERS
from ..diffusion.schedules import SCHEDULES
from ..errors import ConfigError, OutputExistsError
from .common import add_output_arguments, check_output, write_video

HELP = "animate an image with Stable Video Diffusion (svd / svd_xt checkpoints)"
EXAMPLES = """examples:
  i2v animate photo.jpg --checkpoint svd_xt.safetensors -o out.mp4
  i2v animate photo.jpg --checkpoint svd_xt_1_1.safetensors --dtype float16 --device cuda --seed 1 -o out.mp4
  i2v animate photo.jpg --checkpoint ./stable-video-diffusion-img2vid-xt/ --motion-bucket-id 180 -o out.gif
  i2v animate photo.jpg --checkpoint svd.safetensors --frames 14 --steps 10 --sampler dpmpp_2m -o frames/
  i2v animate photo.jpg --checkpoint svd_xt.safetensors --save-latents run.safetensors -o out.mp4
  i2v decode run.safetensors --checkpoint svd_xt.safetensors --decode-chunk-size 4 -o again.mp4"""


def add_checkpoint_arguments(parser) -> None:
    """--checkpoint, --dtype, --device and the two head widths that no checkpoint stores."""
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="svd.safetensors / svd_xt.safetensors / svd_xt_1_1.safetensors, or a diffusers folder")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"],
                        help="compute dtype (default float32; float16/bfloat16 on a GPU halve memory)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ... (default cpu)")
    parser.add_argument("--unet-head-channels", type=int, default=64,
                        help="U-Net attention head width (not stored in files; 64 for released SVD)")
    parser.add_argument("--clip-head-width", type=int, default=None,
                        help="CLIP attention head width (not stored in files; 80 for ViT-H, looked up by width)")
    parser.add_argument("--decode-chunk-size", type=int, default=14,
                        help="frames decoded together by the temporal VAE decoder (lower = less memory; default 14)")


def add_arguments(parser) -> None:
    parser.add_argument("image", type=Path, help="input image (png/jpg/...; alpha is composited over white)")
    add_checkpoint_arguments(parser)
    add_output_arguments(parser, default_fps=7.0)
    g = parser.add_argument_group("sampling (unset values come from the svd / svd_xt preset)")
    g.add_argument("--preset", choices=["svd", "svd_xt"], default=None,
                   help="frames/steps/CFG defaults; default: from the checkpoint (diffusers num_frames, or 'xt' in the file name)")
    g.add_argument("--frames", type=int, default=None, help="number of frames (svd 14, svd_xt 25)")
    g.add_argument("--steps", type=int, default=None, help="sampling steps (svd 25, svd_xt 30)")
    g.add_argument("--sampler", default="euler", choices=list(SAMPLERS), help="sampler (default euler, as the original)")
    g.add_argument("--schedule", default="karras", choices=list(SCHEDULES), help="noise schedule (default karras 700 -> 0.002)")
    g.add_argument("--fps-id", type=int, default=6, help="frame-rate conditioning, fps - 1 (default 6)")
    g.add_argument("--motion-bucket-id", type=int, default=127, help="amount of motion, 0..255 (default 127)")
    g.add_argument("--cond-aug", type=float, default=0.02, help="noise added to the conditioning image (default 0.02)")
    g.add_argument("--min-cfg", type=float, default=None, help="guidance scale of the first frame (svd 1.0, svd_xt 1.5)")
    g.add_argument("--max-cfg", type=float, default=None, help="guidance scale of the last frame (svd 2.5, svd_xt 3.0)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    g.add_argument("--width", type=int, default=None, help="output width, multiple of 64 (default: from the image)")
    g.add_argument("--height", type=int, default=None, help="output height, multiple of 64 (default: from the image)")
    g.add_argument("--save-latents", type=Path, default=None, help="also write the sampled latents (.safetensors) for `i2v decode`")


def _check_counts(args) -> None:
    for name in ("frames", "steps", "decode_chunk_size"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {v}")


def run(args) -> int:
    import torch

    from ..pipelines.svd import SVDPipeline, fit_image, image_to_tensor

    _check_counts(args)
    check_output(args)
    if args.save_latents is not None:
        if args.save_latents.suffix != ".safetensors":
            raise ConfigError(f"--save-latents must end in .safetensors, got {args.save_latents}")
        if args.save_latents.exists() and not args.overwrite:
            raise OutputExistsError(f"{args.save_latents} exists; pass --overwrite to replace it")
    # unreadable or too small images fail before the model is loaded
    image = fit_image(image_to_tensor(args.image), args.width, args.height)
    pipe = SVDPipeline.from_pretrained(args.checkpoint, dtype=getattr(torch, args.dtype), device=args.device,
                                       preset=args.preset, unet_head_channels=args.unet_head_channels,
                                       clip_head_width=args.clip_head_width)
    frames = pipe(image, args.frames, args.steps, sampler=args.sampler, schedule=args.schedule, fps_id=args.fps_id,
                  motion_bucket_id=args.motion_bucket_id, cond_aug=args.cond_aug, min_cfg=args.min_cfg,
                  max_cfg=args.max_cfg, seed=args.seed, decode_chunk_size=args.decode_chunk_size, width=args.width,
                  height=args.height, save_latents_to=args.save_latents)
    write_video(frames, args)
    return 0
