"""SVD U-Net: golden stage ``unet.out`` of the original code (../shared/reference/svd-*), the full-size key map
from the real file's key list, diffusers parity through the diffusers-format loader, and loading errors."""

from __future__ import annotations

import json

import pytest
import torch

from i2v.checkpoints import load_state_dict
from i2v.errors import CheckpointError, ConfigError, InputError
from i2v.models.svd.checkpoint import diffusers_unet_to_sgm, load_diffusers_unet
from i2v.models.svd.unet import SGM_PREFIX, SVDUNet, SVDUNetConfig
from i2v.nn.embeddings import timestep_embedding

from conftest import case_dirs, shared_path

CASES = case_dirs("svd-", "I2V_SVD_CASES")


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module", params=CASES, ids=[p.name for p in CASES])
def case(request):
    d = request.param
    from safetensors.torch import load_file

    return d, json.loads((d / "case.json").read_text()), load_state_dict(d / "checkpoint.safetensors"), \
        load_file(str(d / "expected.safetensors"))


def test_config_inferred_from_shapes_matches_the_original_arguments(case):
    _, info, sd, _ = case
    u = info["unet"]
    c = SVDUNet.from_state_dict(sd, num_head_channels=u["num_head_channels"]).config
    levels = len(u["channel_mult"])
    depth = u["transformer_depth"]
    depth = [depth] * levels if isinstance(depth, int) else depth
    assert c.model_channels == u["model_channels"] and list(c.channel_mult) == u["channel_mult"]
    assert c.num_res_blocks == u["num_res_blocks"]
    assert c.in_channels == u["in_channels"] and c.out_channels == u["out_channels"]
    assert c.context_dim == u["context_dim"] and c.adm_in_channels == u["adm_in_channels"]
    assert list(c.video_kernel_size) == u["video_kernel_size"] and c.extra_ff_mix_layer == u["extra_ff_mix_layer"]
    # sgm: level l has transformers iff its downsampling factor 2**l is in attention_resolutions
    assert list(c.transformer_depth) == [depth[l] if 2 ** l in u["attention_resolutions"] else 0 for l in range(levels)]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-7), (torch.float32, 1e-4)])
def test_unet_call_matches_original(case, dtype, tol):
    _, info, sd, exp = case
    T = info["T"]
    model = SVDUNet.from_state_dict(sd, num_head_channels=info["unet"]["num_head_channels"], dtype=dtype)
    context = exp["cond.crossattn"].repeat_interleave(T, dim=0)  # (1, 1, D) -> (T, 1, D): one copy per frame
    with torch.no_grad():
        out = model(exp["unet.x"].to(dtype), exp["unet.timesteps"], context.to(dtype), exp["cond.vector"].to(dtype), T,
                    image_only_indicator=torch.zeros(1, T))
    assert out.dtype == dtype and out.shape == exp["unet.out"].shape
    assert rel_err(out, exp["unet.out"]) <= tol


def test_full_size_unet_maps_every_key_of_the_released_file():
    keys = json.loads(shared_path("reference", "svd-full-keys.json").read_text())["tensors"]
    sd = {k: torch.empty(s, device="meta") for k, s in keys.items()}
    model = SVDUNet.from_state_dict(sd, source="svd-full-keys.json")  # strict: raises on any unused/missing/misshaped
    assert model.config == SVDUNetConfig()  # the released SVD / SVD-XT U-Net
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k[len(SGM_PREFIX):]: tuple(s) for k, s in keys.items() if k.startswith(SGM_PREFIX)}
    assert ours == theirs
    assert 1.52e9 < sum(p.numel() for p in model.parameters()) < 1.53e9  # 1.525 B parameters (DESIGN.md)
    with torch.device("meta"):  # shapes only: 14 frames of a 576x1024 video, latents 72x128
        x, t, ctx, y = torch.empty(14, 8, 72, 128), torch.empty(14), torch.empty(14, 1, 1024), torch.empty(14, 768)
        assert model(x, t, ctx, y, 14).shape == (14, 4, 72, 128)


def test_diffusers_rename_table_maps_the_full_size_unet_onto_the_released_keys():
    from diffusers import UNetSpatioTemporalConditionModel  # test-only oracle; its default config is SVD's

    keys = json.loads(shared_path("reference", "svd-full-keys.json").read_text())["tensors"]
    with torch.device("meta"):
        theirs = UNetSpatioTemporalConditionModel().state_dict()
    renamed = {k: tuple(v.shape) for k, v in diffusers_unet_to_sgm(theirs).items()}
    assert len(renamed) == len(theirs)  # no two diffusers keys land on one name
    assert renamed == {k[len(SGM_PREFIX):]: tuple(s) for k, s in keys.items() if k.startswith(SGM_PREFIX)}


# ---- diffusers parity ------------------------------------------------------------------------------------------

def _diffusers_unet(seed, chans, heads, layers, attn_levels, cross_dim):
    import diffusers  # test-only oracle
    torch.manual_seed(seed)
    n = len(chans)
    down = tuple("CrossAttnDownBlockSpatioTemporal" if l in attn_levels else "DownBlockSpatioTemporal" for l in range(n))
    up = tuple("CrossAttnUpBlockSpatioTemporal" if l in attn_levels else "UpBlockSpatioTemporal" for l in reversed(range(n)))
    m = diffusers.UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4, down_block_types=down, up_block_types=up,
        block_out_channels=chans, layers_per_block=layers, cross_attention_dim=cross_dim,
        num_attention_heads=tuple(c // heads for c in chans), transformer_layers_per_block=1,
        projection_class_embeddings_input_dim=768, addition_time_embed_dim=256).eval()
    with torch.no_grad():  # every weight random and non-zero (diffusers zero-initialises output convs and mixers)
        for name, p in m.named_parameters():
            if p.ndim > 1:
                p.normal_(0.0, p[0].numel() ** -0.5)
            elif name.endswith("mix_factor"):
                p.normal_(0.0, 1.0)
            elif "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.1)
    return m


def set_resnet_eps(m, eps):
    for name, mod in m.named_modules():
        if isinstance(mod, torch.nn.GroupNorm) and ".resnets." in name:
            mod.eps = eps


@pytest.mark.parametrize("seed,chans,heads,layers,attn_levels", [
    (0, (32, 64, 64), 16, 1, (0, 1)),
    (1, (32, 32, 64, 64), 8, 2, (0, 1, 2)),
])
def test_matches_diffusers_through_the_diffusers_loader(tmp_path, seed, chans, heads, layers, attn_levels):
    ref = _diffusers_unet(seed, chans, heads, layers, attn_levels, cross_dim=48)
    ref.save_pretrained(tmp_path / "unet")
    set_resnet_eps(ref, 1e-5)  # known difference: the original's ResNet GroupNorms use 1e-5, diffusers' 1e-6
    ours = load_diffusers_unet(tmp_path / "unet")
    assert ours.config.num_head_channels == heads and ours.config.context_dim == 48
    b, T, h, w = 2, 3, 8, 8
    g = torch.Generator().manual_seed(seed)
    sample = 0.01 * torch.randn(b, T, 8, h, w, generator=g)  # small features: GroupNorm's eps matters
    t = torch.tensor(0.25 * torch.log(torch.tensor(1.7)).item())
    ehs = torch.randn(b, 1, 48, generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02], [3.0, 40.0, 0.1]])
    with torch.no_grad():
        expected = ref(sample, t, ehs, ids, return_dict=False)[0]  # (b, T, 4, h, w)
        y = torch.cat([timestep_embedding(ids[:, i], 256) for i in range(3)], dim=1)  # (b, 768)
        out = ours(sample.flatten(0, 1), t.repeat(b * T), ehs.repeat_interleave(T, 0), y.repeat_interleave(T, 0), T)
    assert rel_err(out, expected.flatten(0, 1)) <= 1e-4
    # the comparison resolves the known eps difference: diffusers' own eps (1e-6) lands far outside the tolerance
    set_resnet_eps(ref, 1e-6)
    with torch.no_grad():
        assert rel_err(out, ref(sample, t, ehs, ids, return_dict=False)[0].flatten(0, 1)) > 1e-3


# ---- loading errors ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_sd():
    return load_state_dict(shared_path("reference", "svd-sgm-tiny", "checkpoint.safetensors"))


def test_missing_tensor_is_named(tiny_sd):
    key = SGM_PREFIX + "output_blocks.4.1.time_stack.0.attn2.to_v.weight"
    sd = {k: v for k, v in tiny_sd.items() if k != key}
    with pytest.raises(CheckpointError, match=r"missing.*output_blocks\.4\.1\.time_stack\.0\.attn2\.to_v\.weight \[64, 64\]"):
        SVDUNet.from_state_dict(sd, num_head_channels=16, source="tiny.safetensors")


def test_misshaped_tensor_is_named_with_both_shapes(tiny_sd):
    key = SGM_PREFIX + "middle_block.1.time_pos_embed.2.weight"
    sd = dict(tiny_sd, **{key: torch.zeros(64, 255)})
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors.*model\.diffusion_model\.middle_block\.1\.time_pos_embed\.2\.weight: expected \[64, 256\], found \[64, 255\]"):
        SVDUNet.from_state_dict(sd, num_head_channels=16, source="tiny.safetensors")


def test_unused_tensor_is_named(tiny_sd):
    sd = dict(tiny_sd, **{SGM_PREFIX + "middle_block.1.extra.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"not used.*middle_block\.1\.extra\.weight"):
        SVDUNet.from_state_dict(sd, num_head_channels=16)


def test_other_model_is_refused():
    sd15 = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
            "model.diffusion_model.out.2.weight": torch.zeros(4, 320, 3, 3)}
    with pytest.raises(CheckpointError, match="label_emb.0.0.weight.*not an SVD U-Net"):
        SVDUNet.from_state_dict(sd15, source="sd15.safetensors")
    with pytest.raises(CheckpointError, match="no tensors under 'model.diffusion_model.'"):
        SVDUNet.from_state_dict({"first_stage_model.x": torch.zeros(1)}, source="vae.safetensors")


def test_head_width_that_does_not_divide_is_a_config_error(tiny_sd):
    with pytest.raises(ConfigError, match="num_head_channels=24"):
        SVDUNet.from_state_dict(tiny_sd, num_head_channels=24)


def test_bad_inputs_are_input_errors():
    m = SVDUNet(SVDUNetConfig(model_channels=32, channel_mult=(1, 2), transformer_depth=(1, 0), num_head_channels=16,
                              context_dim=8))
    x, ts, ctx, y = torch.zeros(4, 8, 8, 8), torch.zeros(4), torch.zeros(4, 1, 8), torch.zeros(4, 768)
    with pytest.raises(InputError, match="num_video_frames=3"):
        m(x, ts, ctx, y, 3)
    with pytest.raises(InputError, match="context"):
        m(x, ts, torch.zeros(4, 1, 9), y, 4)
    with pytest.raises(InputError, match="multiple of 2"):
        m(torch.zeros(4, 8, 7, 8), ts, ctx, y, 4)


# ---- attention primitive against the textbook formula -------------------------------------------------------------

@pytest.mark.parametrize("n_ctx", [None, 1, 5])
def test_cross_attention_is_softmax_qk_v(n_ctx):
    from i2v.nn.attention import CrossAttention

    torch.manual_seed(0)
    heads, d, dim, cdim = 3, 8, 24, 10
    attn = CrossAttention(dim, heads, d, None if n_ctx is None else cdim).double()
    x = torch.randn(2, 7, dim, dtype=torch.float64)
    c = x if n_ctx is None else torch.randn(2, n_ctx, cdim, dtype=torch.float64)
    q = attn.to_q.weight @ x.transpose(1, 2)  # (b, heads*d, n)
    k, v = attn.to_k.weight @ c.transpose(1, 2), attn.to_v.weight @ c.transpose(1, 2)
    outs = []
    for hd in range(heads):
        sl = slice(hd * d, (hd + 1) * d)
        w = torch.softmax(q[:, sl].transpose(1, 2) @ k[:, sl] / d ** 0.5, dim=-1)  # (b, n, m)
        outs.append(w @ v[:, sl].transpose(1, 2))
    expected = attn.to_out[0](torch.cat(outs, dim=-1))
    got = attn(x, None if n_ctx is None else c)
    assert got.shape == expected.shape and rel_err(got, expected) < 1e-12


def test_feed_forward_in_token_chunks_equals_all_at_once():
    from i2v.nn.attention import FeedForward

    torch.manual_seed(0)
    ff = FeedForward(12, chunk_tokens=0).double()
    x = torch.randn(3, 7, 12, dtype=torch.float64).transpose(0, 1)  # non-contiguous on purpose
    whole = ff(x)
    ff.chunk_tokens = 4  # 21 tokens -> chunks of 4, 4, 4, 4, 4, 1
    assert torch.allclose(ff(x), whole, rtol=1e-13, atol=0)
    gelu = torch.nn.functional.gelu
    a, g = (x @ ff.net[0].proj.weight.T + ff.net[0].proj.bias).chunk(2, dim=-1)
    assert torch.allclose(whole, (a * gelu(g)) @ ff.net[2].weight.T + ff.net[2].bias, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
def test_half_precision_is_finite_and_close(case, dtype, tol):
    _, info, sd, exp = case
    T = info["T"]
    model = SVDUNet.from_state_dict(sd, num_head_channels=info["unet"]["num_head_channels"], dtype=dtype)
    with torch.no_grad():
        out = model(exp["unet.x"].to(dtype), exp["unet.timesteps"], exp["cond.crossattn"].repeat_interleave(T, 0).to(dtype),
                    exp["cond.vector"].to(dtype), T)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert rel_err(out, exp["unet.out"]) <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_group_norm32_matches_float64_group_norm(dtype, tol):
    from i2v.nn.norm import GroupNorm32

    torch.manual_seed(0)
    gn = GroupNorm32(64, eps=1e-5)
    with torch.no_grad():
        gn.weight.normal_(1.0, 0.2)
        gn.bias.normal_(0.0, 0.2)
    x = (torch.randn(2, 64, 3, 5, 4, dtype=torch.float64) * 0.5 + 3.0).transpose(2, 3)  # 5D, non-contiguous
    ref = torch.nn.functional.group_norm(x, 32, gn.weight.double(), gn.bias.double(), 1e-5)
    out = gn.to(dtype)(x.to(dtype))
    assert out.dtype == dtype and rel_err(out, ref) <= tol


def test_image_only_indicator_switches_the_temporal_paths_off():
    # sgm's "learned_with_images": frames flagged as images use alpha = 1 (spatial path only) in every blender,
    # which is what a model whose mix factors are all +inf (sigmoid = 1) computes for every frame
    torch.manual_seed(0)
    c = SVDUNetConfig(model_channels=32, channel_mult=(1, 2), transformer_depth=(1, 0), num_head_channels=16,
                      context_dim=8)
    m = SVDUNet(c).double().eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.normal_(0.0, 1.0 if name.endswith("mix_factor") else 0.2)
    T = 3
    x, ts = torch.randn(2 * T, 8, 4, 4, dtype=torch.float64), torch.full((2 * T,), 0.3, dtype=torch.float64)
    ctx, y = torch.randn(2 * T, 1, 8, dtype=torch.float64), torch.randn(2 * T, 768, dtype=torch.float64)
    with torch.no_grad():
        video = m(x, ts, ctx, y, T)
        images = m(x, ts, ctx, y, T, image_only_indicator=torch.ones(2, T))
        assert torch.equal(m(x, ts, ctx, y, T, image_only_indicator=torch.zeros(2, T)), video)
        for name, p in m.named_parameters():
            if name.endswith("mix_factor"):
                p.fill_(100.0)
        assert torch.allclose(images, m(x, ts, ctx, y, T), rtol=0, atol=1e-12)
    assert rel_err(images, video) > 1e-2


def test_diffusers_loader_errors(tmp_path):
    from i2v.models.svd.checkpoint import diffusers_head_channels

    with pytest.raises(CheckpointError, match="config.json"):
        load_diffusers_unet(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"block_out_channels": [320, 640], "num_attention_heads": [5, 10]}))
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors"):
        load_diffusers_unet(tmp_path)
    assert diffusers_head_channels({"block_out_channels": [320, 640], "num_attention_heads": [5, 10]}) == 64
    with pytest.raises(ConfigError, match="differ per level"):
        diffusers_head_channels({"block_out_channels": [320, 640], "num_attention_heads": [5, 5]})
    with pytest.raises(CheckpointError, match="expected diffusers U-Net keys"):
        diffusers_unet_to_sgm({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)})
