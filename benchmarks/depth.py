"""Our Depth Anything V2 against transformers' DepthAnythingForDepthEstimation: same weights, one process, CPU.

The weights are random (every tensor perturbed so no layer is a no-op), made in our layout = the released
``depth_anything_v2_*.pth`` layout, and converted to transformers' layout through :data:`RENAMES` below (the one
rename table; ``tests/test_depth_anything.py`` uses it for its parity test). Prints the relative difference of the
two outputs, the median time of one forward call each and the ratio, and the peak memory each call allocates on
top of the weights (the PyTorch profiler's allocation events, as benchmarks/svd_unet.py).

    python benchmarks/depth.py                        # vits (24.8 M) at 518x518, 1 thread
    python benchmarks/depth.py --encoder vitb --size 518x686 --threads 2

The default size is square 518x518 on purpose: there the positional embedding is used as stored. On any other
grid transformers' Dinov2 resizes it with ``size=`` where the original (and i2v) use ``scale_factor`` with a 0.1
offset, so the two models legitimately differ (~1e-3); the golden tests check i2v against the original there.
transformers is needed only here and in the tests (an independent oracle), never by the package.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from svd_unet import peak_bytes, timed  # noqa: E402  (the shared measuring helpers of the benchmarks)

from i2v.models.depth_anything.model import Config, DepthAnythingV2  # noqa: E402

# The released sizes (run.py's model_configs; heads = width / 64).
ENCODERS = {
    "vits": dict(width=384, blocks=12, heads=6, mlp_hidden=1536, features=64, out_channels=(48, 96, 192, 384)),
    "vitb": dict(width=768, blocks=12, heads=12, mlp_hidden=3072, features=128, out_channels=(96, 192, 384, 768)),
    "vitl": dict(width=1024, blocks=24, heads=16, mlp_hidden=4096, features=256, out_channels=(256, 512, 1024, 1024),
                 layers=(4, 11, 17, 23)),
}

# our key (= the released file's) -> transformers' key. transformers >= 5 names (q_proj/k_proj/v_proj/o_proj,
# gate_proj/up_proj/down_proj); 4.x called them attention.attention.query... and weights_in/weights_out.
# The fused qkv is split in three; refinenet{i} is fusion_stage.layers.{4-i} (transformers fuses coarse first).
RENAMES = [
    (r"^pretrained\.cls_token$", "backbone.embeddings.cls_token"),
    (r"^pretrained\.mask_token$", "backbone.embeddings.mask_token"),
    (r"^pretrained\.pos_embed$", "backbone.embeddings.position_embeddings"),
    (r"^pretrained\.patch_embed\.proj\.", "backbone.embeddings.patch_embeddings.projection."),
    (r"^pretrained\.blocks\.(\d+)\.attn\.proj\.", r"backbone.encoder.layer.\1.attention.o_proj."),
    (r"^pretrained\.blocks\.(\d+)\.ls(\d)\.gamma$", r"backbone.encoder.layer.\1.layer_scale\2.lambda1"),
    (r"^pretrained\.blocks\.(\d+)\.mlp\.w3\.", r"backbone.encoder.layer.\1.mlp.down_proj."),
    (r"^pretrained\.blocks\.(\d+)\.", r"backbone.encoder.layer.\1."),  # norm1, norm2, mlp.fc1, mlp.fc2
    (r"^pretrained\.norm\.", "backbone.layernorm."),
    (r"^depth_head\.projects\.(\d)\.", r"neck.reassemble_stage.layers.\1.projection."),
    (r"^depth_head\.resize_layers\.(\d)\.", r"neck.reassemble_stage.layers.\1.resize."),
    (r"^depth_head\.scratch\.layer(\d)_rn\.", lambda m: f"neck.convs.{int(m[1]) - 1}."),
    (r"^depth_head\.scratch\.refinenet(\d)\.out_conv\.",
     lambda m: f"neck.fusion_stage.layers.{4 - int(m[1])}.projection."),
    (r"^depth_head\.scratch\.refinenet(\d)\.resConfUnit(\d)\.conv(\d)\.",
     lambda m: f"neck.fusion_stage.layers.{4 - int(m[1])}.residual_layer{m[2]}.convolution{m[3]}."),
    (r"^depth_head\.scratch\.output_conv1\.", "head.conv1."),
    (r"^depth_head\.scratch\.output_conv2\.0\.", "head.conv2."),
    (r"^depth_head\.scratch\.output_conv2\.2\.", "head.conv3."),
]
# fused tensors split along dim 0: our suffix -> transformers' names of the parts
SPLITS = {"attn.qkv": ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
          "mlp.w12": ("mlp.gate_proj", "mlp.up_proj")}


def to_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our / the released state dict -> DepthAnythingForDepthEstimation's. Every key must match a rule."""
    out = {}
    for key, t in state_dict.items():
        m = re.match(r"^pretrained\.blocks\.(\d+)\.(attn\.qkv|mlp\.w12)\.(weight|bias)$", key)
        if m:
            for name, part in zip(SPLITS[m[2]], t.chunk(len(SPLITS[m[2]]), dim=0)):
                out[f"backbone.encoder.layer.{m[1]}.{name}.{m[3]}"] = part
            continue
        for pattern, repl in RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = t
                break
        else:
            raise KeyError(f"no rename rule for {key}")
    return out


def transformers_model(cfg: Config, image_size: int):
    """An empty DepthAnythingForDepthEstimation with ``cfg``'s architecture (pos_embed for ``image_size``)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(image_size=image_size, patch_size=cfg.patch_size, hidden_size=cfg.width,
                            num_hidden_layers=cfg.blocks, num_attention_heads=cfg.heads,
                            mlp_ratio=cfg.mlp_hidden // cfg.width if cfg.ffn == "mlp" else 4,  # SwiGLU: 2/3 of 4C
                            use_swiglu_ffn=cfg.ffn == "swiglu", layer_norm_eps=cfg.eps,
                            out_indices=[i + 1 for i in cfg.layers], reshape_hidden_states=False, apply_layernorm=True)
    kind = {"depth_estimation_type": "relative"} if cfg.max_depth is None else \
        {"depth_estimation_type": "metric", "max_depth": int(cfg.max_depth)}  # an int there (20 or 80)
    config = DepthAnythingConfig(backbone_config=backbone, patch_size=cfg.patch_size, reassemble_hidden_size=cfg.width,
                                 neck_hidden_sizes=list(cfg.out_channels), fusion_hidden_size=cfg.features,
                                 head_hidden_size=cfg.head_hidden, **kind)
    return DepthAnythingForDepthEstimation(config).eval()


def random_model(cfg: Config, seed: int = 0) -> DepthAnythingV2:
    """Our model with random weights in which nothing is a no-op or saturated: weights ~ N(0, 1/fan_in), biases
    N(0, 0.05), LayerNorm gains 1 +- 0.1, LayerScale gammas U(0.1, 0.3) (trained DINOv2 ones are small too),
    attention and MLP weights x2 (so attention is not uniform), the last conv x4 (a non-trivial depth range)."""
    g = torch.Generator().manual_seed(seed)
    model = DepthAnythingV2(cfg).eval().requires_grad_(False)
    for name, p in model.named_parameters():
        if name.endswith("gamma"):
            p.copy_(torch.rand(p.shape, generator=g) * 0.2 + 0.1)
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        elif p.ndim == 1:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
        elif name.endswith(("cls_token", "pos_embed", "mask_token")):
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
        else:
            fan_in = p[0].numel() if "resize_layers.0" not in name and "resize_layers.1" not in name else p.shape[0]
            gain = 2.0 if (".attn." in name or ".mlp." in name) else 4.0 if "output_conv2.2" in name else 1.0
            p.copy_(gain * torch.randn(p.shape, generator=g) / fan_in ** 0.5)
    return model


def pair(cfg: Config, image_size: int, seed: int = 0):
    """(ours, theirs) holding the same random weights."""
    ours = random_model(cfg, seed)
    theirs = transformers_model(cfg, image_size)
    theirs.load_state_dict(to_transformers(ours.state_dict()), strict=True)
    return ours, theirs.requires_grad_(False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="vits", choices=list(ENCODERS))
    ap.add_argument("--size", default="518x518", help="network input HxW, multiples of 14 (518x518: trained grid)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1: CPU time is then a steady measure on a shared machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    h, w = (int(s) for s in args.size.split("x"))
    cfg = Config(**ENCODERS[args.encoder])
    ours, theirs = pair(cfg, image_size=518)
    n_params = sum(p.numel() for p in ours.parameters())
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1))

    def run_theirs():
        return theirs(pixel_values=x).predicted_depth

    def run_ours():
        return ours(x)

    with torch.inference_mode():
        ref, out = run_theirs(), run_ours()  # also warms both up
        diff = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
        times = {"ours": [], "transformers": []}
        for _ in range(args.repeats):  # interleaved, so background load hits both alike
            times["transformers"].append(timed(run_theirs, device))
            times["ours"].append(timed(run_ours, device))
        mem = {"transformers": peak_bytes(run_theirs, device), "ours": peak_bytes(run_ours, device)}

    print(f"Depth Anything V2 {args.encoder} ({n_params / 1e6:.1f} M parameters), input {h}x{w}, float32 on cpu, "
          f"threads={torch.get_num_threads()}, {args.repeats} repeats")
    print(f"output relative difference ours vs transformers: {diff:.2e}")
    wall = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
    for k in ("transformers", "ours"):
        print(f"{k:>13}: median wall {wall[k]:.3f} s, CPU {cpu[k]:.3f} s   peak memory {mem[k] / 2**20:.1f} MiB")
    print(f"ours/transformers: wall time {wall['ours'] / wall['transformers']:.3f}, "
          f"CPU time {cpu['ours'] / cpu['transformers']:.3f}, peak memory {mem['ours'] / mem['transformers']:.3f}")


if __name__ == "__main__":
    main()
