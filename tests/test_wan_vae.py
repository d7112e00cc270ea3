"""The Wan2.1 / Wan2.2 causal video VAEs (i2v.models.wan.vae, .vae22).

- Golden: every ``wan*`` reference case (plus $I2V_WAN_CASES) made by the original Wan code, loaded from its
  released-layout .pth through the public loader: encode, decode of the sampler's final latent, the round trip.
- Full size: the released key layouts of wan-full-keys.json map onto the models built on the meta device.
- Oracle: diffusers' AutoencoderKLWan (both layouts) through our diffusers loader.
- The chunked (cached) passes equal one-shot passes; decoding memory does not grow with the clip length;
  tiled decode; bad inputs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ROOT, case_dirs, shared_path
from i2v.checkpoints import check_keys
from i2v.errors import CheckpointError, ConfigError, InputError
from i2v.models.wan.vae import (Wan21VAE, Wan21VAEConfig, diffusers_renamer, load_vae, open_wan_vae,
                                tile_starts)
from i2v.models.wan.vae22 import Wan22VAE, Wan22VAEConfig

VAE_FILES = ("Wan2.1_VAE.pth", "Wan2.2_VAE.pth")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _vae_cases():
    out = []
    for d in case_dirs("wan", "I2V_WAN_CASES"):
        files = [d / n for n in VAE_FILES if (d / n).is_file()]
        if files and (d / "expected.safetensors").is_file() and (d / "case.json").is_file():
            out.append(pytest.param((d, files[0]), id=d.name))
    return out or [pytest.param(None, id="no-wan-cases")]


@pytest.fixture(scope="module", params=_vae_cases())
def case(request):
    """(case.json, expected tensors, the VAE loaded through the public loader) of one reference case."""
    if request.param is None:
        shared_path("reference", "wan21-i2v-tiny")  # skips with the reason
        pytest.skip("no wan* reference case with a Wan VAE file and expected.safetensors")
    d, vae_file = request.param
    torch.set_num_threads(1)
    vae = load_vae(vae_file)
    return json.loads((d / "case.json").read_text()), load_file(d / "expected.safetensors"), vae


# ----------------------------------------------------------------------------------------------- golden

def test_golden_latent_constants_are_the_ones_the_reference_used(case):
    cfg, _, vae = case
    assert vae.version == ("2.2" if len(cfg["config"]["vae"]["mean"]) == 48 else "2.1")
    assert torch.allclose(torch.tensor(vae.MEAN), torch.tensor(cfg["config"]["vae"]["mean"]), atol=1e-7)
    assert torch.allclose(torch.tensor(vae.STD), torch.tensor(cfg["config"]["vae"]["std"]), atol=1e-7)
    assert (vae.temporal_stride, vae.spatial_stride, vae.spatial_stride) == tuple(cfg["config"]["vae"]["stride"])


def test_golden_encode(case):
    """vae.out: the normalised posterior mean of vae.in."""
    _, e, vae = case
    z = vae.encode(e["vae.in"][None])[0]
    assert z.shape == e["vae.out"].shape
    assert rel(z, e["vae.out"]) <= 1e-4


def test_golden_decode_of_the_final_latent(case):
    """decode.video (clamped, as WanVAE.decode) and its uint8 frames from the sampler's last latent; for a case
    that also ran DPM++, its final latent too."""
    cfg, e, vae = case
    last = cfg["settings"]["sampling_steps"] - 1
    video = vae.decode(e[f"sampler.latent.{last}"][None])[0]  # (3, F, H, W)
    assert rel(video, e["decode.video"]) <= 1e-4
    u8 = ((video + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 3, 0)  # utils.cache_video: truncation
    off = (u8.int() - e["decode.video_uint8"].int()).abs()
    assert (off <= 1).float().mean() >= 0.999
    if "dpmpp.decode.video" in e:
        video = vae.decode(e[f"dpmpp.latent.{last}"][None])[0]
        assert rel(video, e["dpmpp.decode.video"]) <= 1e-4


def test_golden_round_trip(case):
    """vae_rt: a 9-frame pan encoded (chunks 1, 4, 4 through the cache) and decoded (frame by frame), raw."""
    _, e, vae = case
    assert rel(vae.encode(e["vae_rt.in"][None])[0], e["vae_rt.latent"]) <= 1e-4
    assert rel(vae.decode(e["vae_rt.latent"][None], clamp=False)[0], e["vae_rt.decoded_raw"]) <= 1e-4


def test_chunked_passes_equal_one_shot_passes(case):
    """The cache is exact: chunks of 1, 4, 4 frames (encode) and one latent frame at a time (decode) give the
    numbers of one pass over the whole clip (the causal definition; the original's cache-free forward skips the
    temporal resampling and is not a one-shot version of it)."""
    _, e, vae = case
    x, z = e["vae_rt.in"][None], e["vae_rt.latent"][None]
    assert rel(vae.encode(x), vae.encode(x, chunked=False)) <= 1e-5
    assert rel(vae.decode(z, clamp=False), vae.decode(z, clamp=False, chunked=False)) <= 1e-5
    pieces = [p.shape[2] for p in vae.decode_frames(z)]  # the stream: 1 frame, then 4 per latent frame
    assert pieces == [1] + [vae.temporal_stride] * (z.shape[2] - 1)


def test_tile_larger_than_the_latent_is_the_untiled_decode(case):
    _, e, vae = case
    z = e["vae_rt.latent"][None]
    assert torch.equal(vae.decode(z, tile=max(z.shape[3:])), vae.decode(z))


def test_a_broken_cache_is_seen():
    """The chunked-vs-one-shot test can fail: a cache that forgets the previous chunk changes the numbers."""
    from i2v.models.wan import vae as module

    torch.manual_seed(0)
    vae = Wan21VAE(Wan21VAEConfig(dim=4)).eval()
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    good = vae.encode(x)
    remember = module.CausalCache.remember
    module.CausalCache.remember = lambda self, layer, x, n: []
    try:
        assert rel(vae.encode(x), good) > 1e-3
    finally:
        module.CausalCache.remember = remember


# ----------------------------------------------------------------------------------------------- full size

def _manifest(name):
    keys = json.loads(shared_path("reference", "wan-full-keys.json").read_text())
    return {k: tuple(v) for k, v in keys[name].items()}, keys["_meta"][name]


@pytest.mark.parametrize("name, cls, config, renamed", [
    ("vae-2.1", Wan21VAE, Wan21VAEConfig(), False),
    ("vae-2.2", Wan22VAE, Wan22VAEConfig(), False),
    ("diffusers-vae", Wan21VAE, Wan21VAEConfig(), True),
])
def test_full_size_key_layouts_map(name, cls, config, renamed):
    """Every key and shape of the released file (Wan2.x_VAE.pth; diffusers' vae/ after the rename table) is a
    parameter of the model built on the meta device from those shapes, nothing unused, parameter count as
    released."""
    shapes, meta = _manifest(name)
    if renamed:
        rename = diffusers_renamer(shapes)
        assert rename is not None
        shapes = {rename(k): v for k, v in shapes.items()}
        assert len(shapes) == meta["tensors"]  # the rename is one to one
    assert cls.Config.from_state_dict(shapes) == config
    with torch.device("meta"):
        model = cls(config)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert check_keys(own, shapes, source=name, model=cls.__name__) == {}  # raises on any missing / extra / shape
    assert set(own) == set(shapes) and len(own) == meta["tensors"]
    assert sum(v.numel() for v in model.state_dict().values()) == meta["params"]


def test_full_size_shapes_through_the_meta_device():
    """81 frames at 480x832 <-> 21 latent frames of 60x104 (2.1) / 30x52 (2.2), without memory."""
    for cls, z, s in ((Wan21VAE, 16, 8), (Wan22VAE, 48, 16)):
        with torch.device("meta"):
            vae = cls().eval()
            lat = torch.empty(1, z, 2, 480 // s, 832 // s)
            assert vae.decoder(vae.conv2(lat)).shape[2:] == (5, 480 // (s // 8), 832 // (s // 8))


# ----------------------------------------------------------------------------------------------- diffusers oracle

def _perturb(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (p[0].numel() ** -0.5 if p.ndim > 1 else 0.05))
    return model


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_diffusers_oracle(version, tmp_path):
    """diffusers' AutoencoderKLWan at a small random config, saved as a diffusers pipeline folder (vae/), loaded
    by our loader: the same posterior mean (normalised with our constants) and the same decode."""
    diffusers = pytest.importorskip("diffusers")
    ours_cls = Wan21VAE if version == "2.1" else Wan22VAE
    kw = dict(base_dim=8, z_dim=16) if version == "2.1" else dict(
        base_dim=8, decoder_base_dim=12, z_dim=48, is_residual=True, in_channels=12, out_channels=12, patch_size=2,
        scale_factor_spatial=16, latents_mean=list(Wan22VAE.MEAN), latents_std=list(Wan22VAE.STD))
    theirs = _perturb(diffusers.AutoencoderKLWan(**kw).eval())
    theirs.save_pretrained(tmp_path / "vae")
    ours = ours_cls.from_pretrained(tmp_path)
    assert type(ours) is type(load_vae(tmp_path / "vae" / "diffusion_pytorch_model.safetensors"))

    x = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mean, std = (torch.tensor(v).view(1, -1, 1, 1, 1) for v in (ours.MEAN, ours.STD))
    with torch.no_grad():
        mu = theirs.encode(x).latent_dist.mean
        z = ours.encode(x)
        assert rel(z, (mu - mean) / std) <= 1e-4
        assert rel(ours.decode(z), theirs.decode(mu).sample) <= 1e-4


# ----------------------------------------------------------------------------------------------- memory

def _benchmark():
    spec = importlib.util.spec_from_file_location("wan_vae_benchmark", ROOT / "benchmarks" / "wan_vae.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decode_memory_does_not_grow_with_the_clip_length():
    """Peak heap while decoding 33 frames <= 1.1 x while decoding 9 (glibc's heap in use, sampled after every
    op): streamed through decode_frames, and in decode() beyond the returned video it fills. The meter sees
    growth: the one-shot pass needs far more for 33 frames than for 9."""
    bench = _benchmark()
    if bench._heap_reader() is None:
        pytest.skip("needs glibc's mallinfo2 to read the heap in use")
    torch.manual_seed(0)
    vae = Wan21VAE(Wan21VAEConfig(dim=8)).eval().requires_grad_(False)
    z = {9: torch.randn(1, 16, 3, 8, 8), 33: torch.randn(1, 16, 9, 8, 8)}

    def peak(fn):
        with bench.HeapPeak() as meter:
            out = fn()
        return meter.peak - (out.nbytes if out is not None else 0)

    def stream(t):
        for _ in vae.decode_frames(z[t]):
            pass

    peak(lambda: stream(9))  # warm-up under the meter (its first use allocates for good) and of every shape
    streamed = {t: peak(lambda: stream(t)) for t in (9, 33)}
    returned = {t: peak(lambda: vae.decode(z[t])) for t in (9, 33)}
    one_shot = {t: peak(lambda: vae.decode(z[t], chunked=False)) for t in (9, 33)}
    assert streamed[33] <= 1.1 * streamed[9], streamed
    assert returned[33] <= 1.1 * returned[9], returned
    assert one_shot[33] > 2 * one_shot[9], one_shot


# ----------------------------------------------------------------------------------------------- tiles

def test_tile_starts_cover_the_latent():
    assert tile_starts(8, 8, 2) == [0]
    assert tile_starts(20, 8, 2) == [0, 6, 12]
    assert tile_starts(21, 8, 2) == [0, 6, 12, 13]


def test_tiled_decode_is_the_blend_of_separately_decoded_tiles():
    """The tiling arithmetic, against an independent composition: each tile decoded on its own (untiled API),
    weighted by linear ramps over the overlap on the sides that have a neighbour, normalised, clamped."""
    torch.manual_seed(0)
    vae = Wan21VAE(Wan21VAEConfig(dim=4)).eval()
    z = torch.randn(1, 16, 2, 6, 10)
    tile, overlap, s = 4, 2, 8
    acc, wsum = torch.zeros(1, 3, 5, 48, 80), torch.zeros(48, 80)
    for y in (0, 2):  # tile starts: 0, 2 (= 6 - 4) down, 0, 2, 4, 6 across
        for x in (0, 2, 4, 6):
            piece = vae.decode(z[..., y:y + tile, x:x + tile], clamp=False)
            d = torch.arange(tile * s) + 0.5
            ramp = torch.minimum(torch.ones(tile * s), d / (overlap * s))
            wy = (ramp if y > 0 else 1) * (ramp.flip(0) if y + tile < 6 else 1) * torch.ones(tile * s)
            wx = (ramp if x > 0 else 1) * (ramp.flip(0) if x + tile < 10 else 1) * torch.ones(tile * s)
            w = wy[:, None] * wx[None, :]
            acc[..., y * s:(y + tile) * s, x * s:(x + tile) * s] += piece * w
            wsum[y * s:(y + tile) * s, x * s:(x + tile) * s] += w
    expected = (acc / wsum).clamp(-1, 1)
    assert rel(vae.decode(z, tile=tile, tile_overlap=overlap), expected) <= 1e-5


@pytest.mark.parametrize("name", VAE_FILES)
def test_tiled_decode_is_close_to_the_untiled_one(name):
    """A reference VAE on a real clip (the round-trip pan, upsampled for 2.1 so there are several tiles): blended
    8-latent-pixel tiles (overlap 4) beat butting them edge to edge by a clear margin and stay within 16 8-bit
    levels on average of the untiled decode. These are random-weight VAEs with tiles far smaller than their
    receptive field: the bound is loose on purpose; docs/wan-vae.md gives the figures at realistic tile sizes."""
    vae = load_vae(_tiny_case_vae(name))
    e = load_file(_tiny_case_vae(name).parent / "expected.safetensors")
    f = 2 if vae.version == "2.1" else 1
    x = torch.nn.functional.interpolate(e["vae_rt.in"][None, :, :5], scale_factor=(1, f, f), mode="trilinear")
    z = vae.encode(x.clamp(-1, 1))  # 2.1: (1, 16, 2, 12, 16); 2.2: (1, 48, 2, 8, 12)
    full = vae.decode(z)
    err = {ov: (vae.decode(z, tile=8, tile_overlap=ov) - full).abs().mean().item() * 127.5 for ov in (0, 4)}
    assert err[4] < 16 and err[4] < 0.8 * err[0], err


# ----------------------------------------------------------------------------------------------- bad inputs

def _tiny_case_vae(name):
    for d in case_dirs("wan", "I2V_WAN_CASES"):
        if (d / name).is_file():
            return d / name
    pytest.skip(f"needs a reference case with {name}")


def test_wrong_version_and_other_families_are_refused(tmp_path):
    v21, v22 = _tiny_case_vae("Wan2.1_VAE.pth"), _tiny_case_vae("Wan2.2_VAE.pth")
    with pytest.raises(CheckpointError, match="Wan2.2 VAE.*Wan22VAE"):
        Wan21VAE.from_pretrained(v22)
    with pytest.raises(CheckpointError, match="Wan2.1 VAE.*Wan21VAE"):
        Wan22VAE.from_pretrained(v21)
    svd = shared_path("reference", "svd-sgm-tiny", "checkpoint.safetensors")
    with pytest.raises(CheckpointError, match="not a Wan VAE.*Stable Video Diffusion"):
        Wan21VAE.from_pretrained(svd)


def test_truncated_and_misshaped_files_are_refused(tmp_path):
    src = _tiny_case_vae("Wan2.1_VAE.pth")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        Wan21VAE.from_pretrained(cut)
    sd = dict(open_wan_vae(src))
    sd["decoder.head.2.weight"] = sd["decoder.head.2.weight"][:2].contiguous()  # 2 output channels, not 3
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, bad)
    with pytest.raises(CheckpointError, match="decoder.head.2.weight"):
        Wan21VAE.from_pretrained(bad)
    ok = tmp_path / "renamed" / "vae"  # a diffusers-pipeline-like folder with the original file in vae/
    ok.mkdir(parents=True)
    shutil.copy(src, ok / "Wan2.1_VAE.pth")
    assert isinstance(load_vae(ok.parent), Wan21VAE)


def test_bad_videos_and_latents_are_refused():
    vae = Wan21VAE(Wan21VAEConfig(dim=4)).eval()
    good = torch.zeros(1, 3, 9, 16, 16)
    with pytest.raises(InputError, match=r"10 frames.*1 \+ 4k.*1, 5, 9, 13.*to 9.*to 13"):
        vae.encode(torch.zeros(1, 3, 10, 16, 16))
    with pytest.raises(InputError, match="multiples of 8"):
        vae.encode(torch.zeros(1, 3, 9, 20, 16))
    with pytest.raises(InputError, match=r"video\[None\]"):
        vae.encode(good[0])
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        vae.encode(good + 200)
    with pytest.raises(InputError, match="Wan2.2 latents"):
        vae.decode(torch.zeros(1, 48, 2, 4, 4))
    with pytest.raises(ConfigError, match="overlap"):
        vae.decode(torch.zeros(1, 16, 2, 4, 4), tile=4, tile_overlap=4)
    vae22 = Wan22VAE(Wan22VAEConfig(dim=4, dec_dim=4)).eval()
    with pytest.raises(InputError, match="multiples of 16"):
        vae22.encode(torch.zeros(1, 3, 5, 24, 32))
    assert vae22.encode(torch.zeros(1, 3, 1, 32, 32)).shape == (1, 48, 1, 2, 2)  # an image is a 1-frame video


# ----------------------------------------------------------------------------------------------- benchmark

def test_benchmark_runs_at_tiny_size(capsys):
    pytest.importorskip("diffusers")
    bench = _benchmark()
    r = bench.main(["--dim", "4", "--latent-frames", "2", "--size", "4x4", "--repeats", "1"])
    assert set(r["wall"]) == {"ours", "diffusers"}
    out = capsys.readouterr().out
    assert "ours/diffusers: wall time" in out and "relative difference" in out
    r = bench.main(["--cuda", "--device", "cpu", "--dtype", "float32", "--dim", "4", "--latent-frames", "2",
                    "--size", "4x4", "--repeats", "1", "--no-diffusers"])
    assert set(r["wall"]) == {"ours"} and r["peak"]["ours"] > 0
    rows = bench.main(["--seam", "--vae", str(_tiny_case_vae("Wan2.2_VAE.pth")), "--frame-size", "32x48",
                       "--tiles", "2:1"])
    assert len(rows) == 1 and rows[0]["mean"] > 0  # 2x3 latent pixels in tiles of 2: not the untiled decode
