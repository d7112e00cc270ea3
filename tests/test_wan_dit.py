"""The Wan DiT against the original code's own runs (../shared/reference/wan*), the full-size key manifests,
diffusers' WanTransformer3DModel (an independent implementation), and the RoPE's defining property.

Golden cases: each directory holds the DiT in the released layout (``diffusion_pytorch_model.safetensors`` +
``config.json``, original WanModel keys, random weights) and ``expected.safetensors``, every stage of one DiT call
of the original ``WanI2V`` / ``WanFLF2V`` / ``WanTI2V.generate`` at sampler steps 0 and 2, cond and uncond, in
float32. We load the weights through the public loader and feed the case's own inputs (T5 outputs, CLIP tokens,
y, latent, timestep). New case directories (``wan*`` in ../shared/reference, or listed in I2V_WAN_CASES) are
picked up without code changes.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import i2v.models.wan.dit as dit_module
from conftest import SHARED, case_dirs
from i2v.checkpoints import check_keys
from i2v.errors import CheckpointError, InputError, NumericalError
from i2v.models.wan.dit import WanDiT, WanDiTConfig, diffusers_to_original, pad_context
from i2v.nn.rope import apply_rope, axis_pairs, rope_3d

CASES = case_dirs("wan", "I2V_WAN_CASES")
needs_cases = pytest.mark.skipif(not CASES, reason="needs ../shared/reference/wan* (absent in a fresh clone)")
TOL = 1e-4  # relative error of every stage (float32 against float32)


def rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours = ours.detach().double().reshape(ref.shape)
    return ((ours - ref.double()).norm() / ref.double().norm()).item()


@lru_cache(maxsize=None)
def expected(case_dir) -> dict:
    with safe_open(str(case_dir / "expected.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@lru_cache(maxsize=None)
def model(case_dir) -> WanDiT:
    return WanDiT.from_pretrained(case_dir)


def dit_inputs(E: dict, branch: str) -> dict:
    """The DiT's keyword inputs for the cond or uncond call, from the case's own tensors."""
    kw = {"context": E["t5.prompt.out" if branch == "cond" else "t5.neg.out"][None]}
    if "cond.y" in E:
        kw["y"] = E["cond.y"][None]
    if "clip.out" in E:  # (n_images, 257, width) -> (1, n_images * 257, width): flf2v's first then last frame
        kw["clip"] = E["clip.out"].reshape(1, -1, E["clip.out"].shape[-1])
    return kw


def timestep(E: dict, step: int, m: WanDiT) -> dict:
    """TI2V's per-token t is (1, L): 0 on latent frame 0, t elsewhere; we pass t and clean_first_frame."""
    t = E[f"dit.step{step}.t"]
    if m.config.model_type == "ti2v":
        assert t[0, 0] == 0  # the case's frame-0 tokens
        return {"t": t.max().reshape(1), "clean_first_frame": True}
    return {"t": t}


class Recorder:
    """Forward hooks on the stages the reference recorded; the attention calls are spied on for q/k after RoPE."""

    def __init__(self, m: WanDiT, monkeypatch):
        self.out, self.calls, self.handles = {}, [], []

        def keep(name):
            return lambda mod, inp, out: self.out.__setitem__(name, out)

        def keep_input(name):
            return lambda mod, inp: self.out.__setitem__(name, inp[0])

        self.handles.append(m.blocks[0].register_forward_pre_hook(keep_input("x_embed")))
        for name in ("time_embedding", "time_projection", "text_embedding", "head"):
            self.handles.append(getattr(m, name).register_forward_hook(keep(name)))
        if hasattr(m, "img_emb"):
            self.handles.append(m.img_emb.register_forward_hook(keep("context_clip")))
        for i, b in enumerate(m.blocks):
            self.handles.append(b.register_forward_hook(keep(f"block{i}")))
        b0 = m.blocks[0]
        for name, mod in (("q", b0.self_attn.norm_q), ("k", b0.self_attn.norm_k), ("self_attn", b0.self_attn),
                          ("cross_attn", b0.cross_attn)):
            self.handles.append(mod.register_forward_hook(keep(f"block0.{name}")))
        real = dit_module.attention

        def spy(q, k, v, **kw):
            self.calls.append((q, k))
            return real(q, k, v, **kw)

        monkeypatch.setattr(dit_module, "attention", spy)

    def close(self):
        for h in self.handles:
            h.remove()


@needs_cases
@pytest.mark.parametrize("step", [0, 2])
@pytest.mark.parametrize("case_dir", CASES, ids=[p.name for p in CASES])
def test_every_stage_matches_the_original(case_dir, step, monkeypatch):
    E, m = expected(case_dir), model(case_dir)
    rec = Recorder(m, monkeypatch)
    errors = {}
    L = E[f"dit.step{step}.cond.x_embed"].shape[1]
    for branch in ("cond", "uncond"):
        rec.out.clear(), rec.calls.clear()
        out = m(E[f"dit.step{step}.x"][None], **timestep(E, step, m), **dit_inputs(E, branch))
        o, p = rec.out, f"dit.step{step}.{branch}."
        f = o["time_embedding"].shape[1]  # 1, or one row per latent frame (TI2V)
        per_token = lambda t: t.repeat_interleave(L // f, dim=1)  # (b, f, ...) -> (b, L, ...) as the original
        e, e0 = o["time_embedding"], o["time_projection"].unflatten(-1, (6, -1))
        ref_e = E[f"dit.step{step}.e"]
        errors[f"{branch}.e"] = rel(per_token(e) if ref_e.ndim == 3 else e[:, 0], ref_e)
        errors[f"{branch}.e0"] = rel(per_token(e0) if ref_e.ndim == 3 else e0[:, 0], E[f"dit.step{step}.e0"])
        # the padding rows are embedded once (WanDiT.embed_text): the last row stands for all the rest
        text = o["text_embedding"]
        text = torch.cat([text[:, :-1], text[:, -1:].expand(-1, 512 - text.shape[1] + 1, -1)], dim=1)
        errors[f"{branch}.context_text"] = rel(text, E[f"dit.{branch}.context_text"])
        if "context_clip" in o:
            errors[f"{branch}.context_clip"] = rel(o["context_clip"], E["dit.context_clip"])
        errors[f"{branch}.x_embed"] = rel(o["x_embed"].flatten(1, 2), E[p + "x_embed"])
        if p + "block0.q" in E:
            errors[f"{branch}.block0.q"] = rel(o["block0.q"], E[p + "block0.q"])
            errors[f"{branch}.block0.k"] = rel(o["block0.k"], E[p + "block0.k"])
            q_rope, k_rope = rec.calls[0]  # the first attention call: block 0's self-attention, (b, h, L, d)
            errors[f"{branch}.block0.q_rope"] = rel(q_rope.transpose(1, 2), E[p + "block0.q_rope"])
            errors[f"{branch}.block0.k_rope"] = rel(k_rope.transpose(1, 2), E[p + "block0.k_rope"])
            errors[f"{branch}.block0.self_attn"] = rel(o["block0.self_attn"], E[p + "block0.self_attn"])
            errors[f"{branch}.block0.cross_attn"] = rel(o["block0.cross_attn"], E[p + "block0.cross_attn"])
        for i in range(m.config.num_layers):
            errors[f"{branch}.block{i}"] = rel(o[f"block{i}"].flatten(1, 2), E[p + f"block{i}"])
        errors[f"{branch}.head"] = rel(o["head"].flatten(1, 2), E[p + "head"])
        errors[f"{branch}.out"] = rel(out[0], E[p + "out"])
    rec.close()
    stages = {k.split(".", 3)[-1] for k in E if k.startswith(f"dit.step{step}.cond.")}  # what the case recorded
    assert {k.split(".", 1)[1] for k in errors if k.startswith("cond.")} >= stages | {"e", "e0", "context_text"}
    bad = {k: f"{v:.2e}" for k, v in errors.items() if not v <= TOL}
    assert not bad, f"{case_dir.name} step {step}: stages off by more than {TOL}: {bad}"


@needs_cases
@pytest.mark.parametrize("case_dir", CASES, ids=[p.name for p in CASES])
def test_config_from_shapes_and_config_json(case_dir):
    """Everything but the head count comes off the tensor shapes; the heads from the config.json beside them."""
    cfg_json = json.loads((case_dir / "config.json").read_text())
    c = model(case_dir).config
    assert (c.dim, c.ffn_dim, c.num_heads, c.num_layers, c.in_dim, c.out_dim, c.text_dim, c.freq_dim) == tuple(
        cfg_json[k] for k in ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim", "freq_dim"))
    assert c.model_type == cfg_json["model_type"]


# ------------------------------------------------------------------------------------------ layouts and dtypes

def tiny_case():
    for c in CASES:
        if (c / "config.json").is_file() and json.loads((c / "config.json").read_text()).get("model_type") == "i2v":
            return c
    pytest.skip("needs an i2v case in ../shared/reference/wan* (absent in a fresh clone)")


def run_tiny(m: WanDiT, E: dict) -> torch.Tensor:
    return m(E["dit.step0.x"][None], E["dit.step0.t"], **dit_inputs(E, "cond"))


def state_dict_of(case_dir) -> dict:
    with safe_open(str(case_dir / "diffusion_pytorch_model.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_sharded_folder_with_index(tmp_path):
    """The Wan-AI layout: diffusion_pytorch_model-0000N-of-0000M.safetensors + index + config.json, next to the
    VAE and encoders (the folder holds other weight files: the index decides)."""
    case = tiny_case()
    sd = state_dict_of(case)
    keys = sorted(sd)
    shards = {f"diffusion_pytorch_model-0000{i + 1}-of-00002.safetensors": keys[i::2] for i in range(2)}
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: sd[k] for k in ks}, tmp_path / name)
        weight_map.update({k: name for k in ks})
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text((case / "config.json").read_text())
    save_file({"x": torch.zeros(1)}, tmp_path / "Wan2.1_VAE.safetensors")  # another weight file in the folder
    E = expected(case)
    assert rel(run_tiny(WanDiT.from_pretrained(tmp_path), E), E["dit.step0.cond.out"]) <= TOL


def test_single_file_with_comfyui_prefix(tmp_path):
    """A ComfyUI-style single file: keys under model.diffusion_model., no config.json. The head count is not
    in the weights: dim // 128 for released widths, num_heads= for the tiny one (a clear error otherwise)."""
    case = tiny_case()
    f = tmp_path / "wan_tiny_i2v.safetensors"
    save_file({"model.diffusion_model." + k: v for k, v in state_dict_of(case).items()}, f)
    with pytest.raises(CheckpointError, match="num_heads"):
        WanDiT.from_pretrained(f)
    E = expected(case)
    assert rel(run_tiny(WanDiT.from_pretrained(f, num_heads=2), E), E["dit.step0.cond.out"]) <= TOL


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16, torch.float8_e4m3fn],
                         ids=["fp16", "bf16", "fp8_e4m3fn"])
def test_low_precision_files_load_and_run(tmp_path, stored):
    """fp16 / bf16 / fp8-stored copies (as the ComfyUI repacks ship them): upcast at load they give the model
    at those rounded weights; run in their own dtype they stay close to it; fp8 kept in memory and cast per
    matmul gives exactly the upcast-at-load result."""
    case = tiny_case()
    E = expected(case)
    f = tmp_path / "dit.safetensors"
    save_file({k: v.to(stored) for k, v in state_dict_of(case).items()}, f)
    (tmp_path / "config.json").write_text((case / "config.json").read_text())
    ref = run_tiny(model(case), E)  # the float32 weights
    upcast = WanDiT.from_pretrained(f)  # float32 compute on the rounded weights
    assert upcast.blocks[0].self_attn.q.weight.dtype == torch.float32
    out32 = run_tiny(upcast, E)
    assert torch.isfinite(out32).all()
    rounding = {torch.float16: 5e-3, torch.bfloat16: 3e-2, torch.float8_e4m3fn: 0.2}[stored]  # weight rounding
    assert rel(out32, ref) < rounding
    if stored == torch.float8_e4m3fn:
        kept = WanDiT.from_pretrained(f, keep_fp8=True)
        assert kept.blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn
        assert kept.time_projection[1].weight.dtype == torch.float32  # float32 parts are never fp8
        assert torch.equal(run_tiny(kept, E), out32)
    else:
        low = WanDiT.from_pretrained(f, dtype=stored)
        assert low.compute_dtype == stored and low.head.head.weight.dtype == torch.float32
        out = run_tiny(low, E)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        assert rel(out, out32) < {torch.float16: 5e-3, torch.bfloat16: 3e-2}[stored]


def test_fp16_overflow_names_the_block(tmp_path):
    """fp16 holds values up to 65504; weights that push a block's FFN past it give a clear error naming it."""
    case = tiny_case()
    sd = {k: v.half() for k, v in state_dict_of(case).items()}
    sd["blocks.1.ffn.0.weight"] = sd["blocks.1.ffn.0.weight"] * 30000
    f = tmp_path / "dit.safetensors"
    save_file(sd, f)
    m = WanDiT.from_pretrained(f, dtype=torch.float16, num_heads=2)
    with pytest.raises(NumericalError, match="block 1"):
        run_tiny(m, expected(case))


def test_bad_inputs_are_clear_errors():
    m = WanDiT(WanDiTConfig(dim=64, ffn_dim=32, num_heads=2, num_layers=1, text_dim=8, image_dim=16))
    x, y, ctx, clip = torch.zeros(1, 16, 1, 4, 4), torch.zeros(1, 20, 1, 4, 4), torch.zeros(1, 3, 8), torch.zeros(1, 257, 16)
    with pytest.raises(InputError, match="36 input channels"):
        m(x, torch.tensor([500]), context=ctx, clip=clip)
    with pytest.raises(InputError, match="CLIP"):
        m(x, torch.tensor([500]), context=ctx, y=y)
    with pytest.raises(InputError, match="multiples"):
        m(torch.zeros(1, 16, 1, 3, 4), torch.tensor([500]), context=ctx, clip=clip, y=torch.zeros(1, 20, 1, 3, 4))
    with pytest.raises(InputError, match="512"):
        pad_context(torch.zeros(1, 600, 8))


# ------------------------------------------------------------------------------------------ full size, meta device

FULL = {"i2v-14B": "i2v", "flf2v-14B": "flf2v", "t2v-1.3B": "t2v", "ti2v-5B": "ti2v", "diffusers-i2v-14B": "i2v"}


@pytest.mark.parametrize("name", list(FULL))
def test_full_size_key_sets_map(name):
    """The released files' key sets and shapes (from the reference classes) build our model on the meta device,
    every tensor accounted for, the parameter count equal to the release's."""
    path = SHARED / "reference" / "wan-full-keys.json"
    if not path.is_file():
        pytest.skip(f"needs {path} (../shared beside the repository; absent in a fresh clone)")
    manifest = json.loads(path.read_text())
    shapes = {k: tuple(v) for k, v in manifest[name].items()}
    if "scale_shift_table" in shapes:
        shapes = {diffusers_to_original(k): v for k, v in shapes.items()}
    cfg = WanDiTConfig.from_state_dict(shapes)
    assert cfg.model_type == FULL[name] and cfg.head_dim == 128
    with torch.device("meta"):
        m = WanDiT(cfg)
    check_keys({k: tuple(v.shape) for k, v in m.state_dict().items()}, shapes, source=name, model="WanDiT")
    assert sum(p.numel() for p in m.parameters()) == manifest["_meta"][name]["params"]


# ------------------------------------------------------------------------------------------ diffusers parity

def diffusers_configs():
    base = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=24, text_dim=20, freq_dim=32,
                ffn_dim=40, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
    return {
        "t2v": dict(base, in_channels=16, out_channels=16),
        "i2v": dict(base, in_channels=36, out_channels=16, image_dim=28, added_kv_proj_dim=48),
        "flf2v": dict(base, in_channels=36, out_channels=16, image_dim=28, added_kv_proj_dim=48, pos_embed_seq_len=514),
        "ti2v": dict(base, in_channels=48, out_channels=48, num_attention_heads=3, attention_head_dim=16),
    }


@pytest.mark.parametrize("kind", list(diffusers_configs()))
def test_parity_with_diffusers_through_our_diffusers_loader(tmp_path, kind):
    diffusers = pytest.importorskip("diffusers", reason="oracle needs the test extra: pip install -e '.[test]'")
    cfg = diffusers_configs()[kind]
    torch.manual_seed(0)
    theirs = diffusers.WanTransformer3DModel(**cfg).eval()
    with torch.no_grad():
        for name, p in theirs.named_parameters():  # random everywhere (diffusers zero-inits some)
            p.copy_(torch.randn_like(p) * (p[0].numel() ** -0.5 if p.ndim > 1 else 0.3)
                    + (1.0 if name.endswith("norm_q.weight") or "norm_k" in name else 0.0))
    theirs.save_pretrained(tmp_path / "transformer")  # config.json + diffusion_pytorch_model.safetensors
    ours = WanDiT.from_pretrained(tmp_path)  # the pipeline folder: finds transformer/, reads the head count
    assert ours.config.model_type == kind and ours.config.num_heads == cfg["num_attention_heads"]

    g = torch.Generator().manual_seed(1)
    F, H, W = 3, 6, 8
    x = torch.randn(2, cfg["in_channels"], F, H, W, generator=g)
    context = torch.randn(2, 512, cfg["text_dim"], generator=g)
    if kind != "t2v":  # prompts of 37 and 300 tokens, zero-padded to 512 as both pipelines feed them
        context[0, 37:], context[1, 300:] = 0, 0
    kw, theirs_kw = {}, {}
    if "image_dim" in cfg:
        n = 514 if "pos_embed_seq_len" in cfg else 257
        clip = torch.randn(2, n, cfg["image_dim"], generator=g)
        kw["clip"] = clip  # ours: (b, 2 x 257, c) first then last frame; diffusers: (2b, 257, c), viewed back
        theirs_kw["encoder_hidden_states_image"] = clip.reshape(-1, 257, cfg["image_dim"])
    t = torch.tensor([999, 421])
    theirs_t = t
    if kind == "ti2v":  # diffusers takes the per-token timesteps the original builds: 0 on latent frame 0
        kw["clean_first_frame"] = True
        theirs_t = t[:, None].repeat(1, F * (H // 2) * (W // 2))
        theirs_t[:, : (H // 2) * (W // 2)] = 0
    with torch.no_grad():
        ref = theirs(x, theirs_t, context, return_dict=False, **theirs_kw)[0]
        out = ours(x[:, :16] if kind in ("i2v", "flf2v") else x, t, context=context,
                   y=x[:, 16:] if kind in ("i2v", "flf2v") else None, **kw)
    assert rel(out, ref) < 1e-4, rel(out, ref)


# ------------------------------------------------------------------------------------------ RoPE

@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_rope_scores_depend_only_on_relative_position(head_dim):
    """RoFormer's defining property: after rotation, q_a . k_b is a function of the offset b - a alone (per
    axis), here for 3D (f, y, x) positions on a 4 x 5 x 6 grid and arbitrary q, k."""
    f, h, w = 4, 5, 6
    cos, sin = rope_3d(f, h, w, head_dim)  # (f h w, d/2), float64
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(head_dim, generator=g, dtype=torch.float64), torch.randn(head_dim, generator=g, dtype=torch.float64)
    rq = apply_rope(q.expand(f * h * w, -1), cos, sin).view(f, h, w, -1)
    rk = apply_rope(k.expand(f * h * w, -1), cos, sin).view(f, h, w, -1)
    score = lambda a, b: (rq[a] * rk[b]).sum().item()
    for a, b, shift in [((0, 0, 0), (2, 3, 1), (1, 1, 4)), ((1, 4, 0), (0, 0, 5), (2, 0, 0)), ((0, 1, 2), (0, 1, 2), (3, 3, 3))]:
        a2 = tuple(i + s for i, s in zip(a, shift))
        b2 = tuple(i + s for i, s in zip(b, shift))
        assert math.isclose(score(a, b), score(a2, b2), rel_tol=1e-12, abs_tol=1e-12)
    # and positions matter: a different offset gives a different score
    assert abs(score((0, 0, 0), (1, 0, 0)) - score((0, 0, 0), (0, 1, 0))) > 1e-6
    # rotation preserves norms; position 0 is the identity
    assert torch.allclose(rq.norm(dim=-1), q.norm().expand(f, h, w))
    assert torch.allclose(rq[0, 0, 0], q)


def test_rope_axis_split_is_wans():
    """d/2 pairs split (d/2 - 2 floor(d/6), floor(d/6), floor(d/6)); each axis's angles move along that axis only."""
    assert axis_pairs(128) == (22, 21, 21) and axis_pairs(32) == (6, 5, 5)
    cos, _ = rope_3d(3, 4, 5, 128)
    grid = cos.view(3, 4, 5, 64)
    n_f, n_y, _ = axis_pairs(128)
    assert torch.equal(grid[:, :1, :1, :n_f].expand(3, 4, 5, n_f), grid[..., :n_f])  # frame pairs: f only
    assert torch.equal(grid[:1, :, :1, n_f:n_f + n_y].expand(3, 4, 5, n_y), grid[..., n_f:n_f + n_y])  # rows: y only


def test_benchmark_cuda_mode_runs_at_tiny_size():
    """benchmarks/wan_dit.py --cuda (the full-size TI2V-5B / I2V-14B timing for a GPU session), at tiny size on
    the CPU in bf16: the same code path (configs, random weights in their final dtype, per-frame t, CFG batch)."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("wan_dit_benchmark", ROOT / "benchmarks" / "wan_dit.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--cuda", "--size", "tiny", "--device", "cpu", "--dtype", "bfloat16", "--steps", "1"])
    assert [r["model"] for r in results] == ["ti2v-5B", "i2v-14B"]
    assert all(r["s_per_step"] > 0 and r["latent"] == "3x4x6" for r in results)
