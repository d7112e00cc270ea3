"""`i2v decode LATENTS --checkpoint PATH -o out.mp4`: render latents saved by `i2v animate --save-latents`
again (another chunk size, dtype or device) without sampling. Loads only the VAE of the checkpoint."""

from __future__ import annotations

from pathlib import Path

from ..runtime import add_threads_argument, set_threads
from .common import add_output_arguments, check_output, write_video
from .svd import _check_counts, add_checkpoint_arguments

HELP = "decode saved SVD latents to a video again, without sampling"
EXAMPLES = """examples:
  i2v animate photo.jpg --checkpoint svd_xt.safetensors --save-latents run.safetensors -o out.mp4
  i2v decode run.safetensors --checkpoint svd_xt.safetensors -o again.mp4
  i2v decode run.safetensors --checkpoint svd_xt.safetensors --decode-chunk-size 2 --dtype float16 --device cuda -o again.gif"""


def add_arguments(parser) -> None:
    parser.add_argument("latents", type=Path, help="a .safetensors file written by --save-latents")
    add_checkpoint_arguments(parser)
    add_output_arguments(parser, default_fps=7.0)
    add_threads_argument(parser)


def run(args) -> int:
    set_threads(args.threads)

    from ..pipelines.svd import SVDPipeline, load_latents

    _check_counts(args)
    check_output(args)
    latents, meta = load_latents(args.latents)
    pipe = SVDPipeline.from_pretrained(args.checkpoint, dtype=args.dtype, device=args.device, parts=("vae_decoder",))
    frames = pipe.decode_latents(latents, args.decode_chunk_size)
    write_video(frames, args)
    return 0
