"""The Wan path of `i2v animate IMAGE --checkpoint PATH` (mirrors :class:`i2v.pipelines.wan.WanPipeline`);
:mod:`.animate` dispatches here when the checkpoint is a Wan model (a Wan-AI folder, a diffusers folder or a DiT
file). Every check that can fail runs before any weights are loaded."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, OutputExistsError
from ..runtime import set_threads
from .common import check_output, write_video

EXAMPLES = """examples (Wan):
  i2v animate photo.jpg --checkpoint Wan2.1-I2V-14B-480P/ --prompt "the cat turns its head" -o out.mp4
  i2v animate first.jpg --checkpoint Wan2.1-FLF2V-14B-720P/ --last-frame end.jpg --prompt "..." -o out.mp4
  i2v animate photo.jpg --checkpoint Wan2.2-TI2V-5B/ --prompt "..." --frames 121 --offload text -o out.mp4
  i2v animate photo.jpg --checkpoint wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors --vae wan_2.1_vae.safetensors \\
      --text-encoder models_t5_umt5-xxl-enc-bf16.pth --tokenizer google/umt5-xxl/ --clip clip_vision_h.safetensors \\
      --prompt "..." --offload model -o out.mp4
  i2v animate photo.jpg --checkpoint Wan2.1-I2V-14B-480P-Diffusers/ --size 832x480 --steps 30 --seed 1 \\
      --save-latents run.safetensors -o out.mp4
  i2v decode run.safetensors --vae Wan2.1-I2V-14B-480P/Wan2.1_VAE.pth --tile 32 -o again.mp4"""

# the options only Wan takes (the parser keeps them None to tell "not given"); --dtype, --device, --save-latents and
# --clip-head-width are shared with Stable Video Diffusion, --guidance with the built-in model
WAN_OPTIONS = ("prompt", "negative_prompt", "last_frame", "shift", "size", "offload", "vae", "text_encoder", "clip",
               "tokenizer", "num_heads", "tile", "sequence_parallel", "fsdp")
# what the other families also define and Wan takes
WAN_SHARED = ("dtype", "device", "save_latents", "clip_head_width", "guidance")


def add_wan_arguments(group) -> None:
    """The options of `i2v animate` that only Wan takes, all None by default (= not given). ``--size`` is defined
    once by `i2v animate` for both the built-in model and Wan."""
    group.add_argument("--prompt", default=None, help="what should happen in the video (Wan; default: empty)")
    group.add_argument("--negative-prompt", default=None,
                       help="what to avoid, the unconditional branch of guidance (default: Wan's own for the model)")
    group.add_argument("--last-frame", type=Path, default=None,
                       help="FLF2V: the image the video ends on (resized to the first frame's size if it differs)")
    group.add_argument("--shift", type=float, default=None,
                       help="flow schedule shift (default: 3.0 for I2V at 480p, 5.0 at 720p and for TI2V, 16 for "
                            "FLF2V)")
    group.add_argument("--sequence-parallel", type=int, default=None, metavar="N",
                       help="under `torchrun --nproc-per-node N`: split each video's tokens over the N processes "
                            "(DeepSpeed-Ulysses; N must divide the heads). docs/distributed.md")
    group.add_argument("--fsdp", default=None, metavar="dit,text",
                       help="under torchrun: shard the DiT and/or the umT5 encoder over the processes (FSDP2)")
    group.add_argument("--offload", default=None, choices=("text", "model", "all"),
                       help="text: T5 and CLIP stay on the CPU and run there; model: the DiT's blocks visit the GPU "
                            "one at a time (sequential offload); all: both")
    group.add_argument("--vae", type=Path, default=None,
                       help="Wan2.1_VAE.pth / Wan2.2_VAE.pth (or a ComfyUI / diffusers VAE) for a DiT file")
    group.add_argument("--text-encoder", type=Path, default=None,
                       help="models_t5_umt5-xxl-enc-bf16.pth or a UMT5EncoderModel folder, for a DiT file")
    group.add_argument("--clip", type=Path, default=None,
                       help="models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth or a CLIP vision file (I2V, "
                            "FLF2V)")
    group.add_argument("--tokenizer", type=Path, default=None,
                       help="the umT5 tokenizer.json or its folder (default: google/umt5-xxl/ or tokenizer/ beside the "
                            "text encoder or the checkpoint)")
    group.add_argument("--num-heads", type=int, default=None,
                       help="DiT attention heads, for files whose head width is not the releases' 128 (default: "
                            "config.json, else dim / 128)")
    group.add_argument("--tile", type=int, default=None, metavar="N",
                       help="decode the VAE in tiles of N latent pixels (less memory, small seams; e.g. 32)")


def run(args) -> int:
    """Wan for `i2v animate --checkpoint PATH` (unset options take the model's defaults). Under torchrun every
    process runs this; rank 0 alone prints and writes (i2v.nn.parallel.launched)."""
    from ..nn import parallel

    sp, fsdp = args.sequence_parallel or 1, parallel.parse_fsdp(args.fsdp)
    with parallel.launched() as launch:
        parallel.check_options(launch.world_size, sequence_parallel=sp, fsdp=fsdp)  # before anything is loaded
        if launch.distributed:
            args.device = str(launch.device(args.device or "auto"))
            if args.threads is None:
                set_threads(launch.cpu_threads())
        return _run(args, sp, fsdp, launch.main)


def _run(args, sequence_parallel: int, fsdp, main: bool) -> int:
    from ..image import load_image
    from ..pipelines.wan import WanPipeline

    for name in ("frames", "steps", "num_heads", "tile", "clip_head_width"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    check_output(args)
    if args.save_latents is not None:
        if args.save_latents.suffix != ".safetensors":
            raise ConfigError(f"--save-latents must end in .safetensors, got {args.save_latents}")
        if args.save_latents.exists() and not args.overwrite:
            raise OutputExistsError(f"{args.save_latents} exists; pass --overwrite to replace it")
    image = load_image(args.image)  # unreadable images fail before anything is loaded
    last = load_image(args.last_frame) if args.last_frame is not None else None
    pipe = WanPipeline.from_pretrained(args.checkpoint, dtype=args.dtype, device=args.device, vae=args.vae,
                                       text_encoder=args.text_encoder, clip=args.clip, tokenizer=args.tokenizer,
                                       offload=args.offload, num_heads=args.num_heads,
                                       clip_head_width=args.clip_head_width, sequence_parallel=sequence_parallel,
                                       fsdp=fsdp)
    pipe.check_last_frame(last is not None)
    pipe.settings(args.frames, args.steps, args.shift, args.guidance, args.sampler, args.size)  # bad values, now
    if args.fps is None:
        args.fps = pipe.preset.fps
    if args.prompt is None:
        print("note: no --prompt: the video follows the image and an empty prompt")
    frames = pipe(image, prompt=args.prompt or "", negative_prompt=args.negative_prompt, last_frame=last,
                  frames=args.frames, steps=args.steps, shift=args.shift, guidance=args.guidance,
                  sampler=args.sampler, seed=args.seed, size=args.size, save_latents_to=args.save_latents,
                  tile=args.tile, progress=main)
    if main:  # one process writes the video
        write_video(frames, args)
    return 0
