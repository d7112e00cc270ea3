"""The Wan pipelines end to end against the original code's own runs (../shared/reference/wan*: WanI2V, WanFLF2V,
WanTI2V.generate in float32 at tiny sizes): from the image file(s), the prompts and the seed only -- no tensor of the
case is fed in -- through the Python API and through the CLI, the decoded video equals the original's
``decode.video_uint8`` within 2 levels on >= 99% of values (measured: within 1 level everywhere; the original
truncates to 8 bits, i2v rounds). Also: the conditioning (``cond.mask``, ``cond.y``; TI2V's image latent), FLF2V's
DPM++ run, the layouts users have (Wan-AI folder, ComfyUI-style single file, diffusers folder), the memory levers,
`i2v encode` / `i2v decode`, and every bad input of the issue. New case directories (``wan*`` in ../shared/reference,
or in I2V_WAN_CASES) are picked up without code changes.
"""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import i2v
from conftest import SHARED, case_dirs
from i2v.cli import main
from i2v.errors import CheckpointError
from i2v.pipelines.wan import WanPipeline, best_output_size, frame_mask, i2v_size, max_area

# FLF2V's reference negative prompt is longer than 512 tokens on purpose: cut as the original does, and said
pytestmark = pytest.mark.filterwarnings("ignore::i2v.text.tokenizer.TruncationWarning")
CASES = case_dirs("wan", "I2V_WAN_CASES")
needs_cases = pytest.mark.skipif(not CASES, reason="needs ../shared/reference/wan* (absent in a fresh clone)")
QUIET = {"log": lambda *a: None}
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"


def settings(case) -> dict:
    return json.loads((case / "case.json").read_text())["settings"]


def clip_head_width(case) -> int | None:
    """CLIP heads leave no trace in the shapes: the case says how many its tiny tower has (ViT-H: 16 of 80)."""
    clip = json.loads((case / "case.json").read_text())["config"].get("clip")
    return clip["vision_dim"] // clip["vision_heads"] if clip else None


@lru_cache(maxsize=None)
def expected(case) -> dict:
    with safe_open(str(case / "expected.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def images(case) -> tuple[Path, Path | None]:
    """The case's input image files (in ../shared/data), as a user has them."""
    st = settings(case)
    first = SHARED / "data" / st["image"]
    if not first.is_file():
        pytest.skip(f"needs the case's image {first}")
    return first, (SHARED / "data" / st["last_frame"]) if st.get("last_frame") else None


def call_kwargs(case, **over) -> dict:
    st = settings(case)
    first, last = images(case)
    kw = dict(prompt=st["prompt"], negative_prompt=st["n_prompt"], last_frame=last, frames=st["frame_num"],
              steps=st["sampling_steps"], shift=st["shift"], guidance=st["guide_scale"], seed=st["seed"],
              size=st["max_area"], progress=False)
    return kw | over


@lru_cache(maxsize=None)
def pipeline(case) -> WanPipeline:
    return WanPipeline.from_pretrained(case, clip_head_width=clip_head_width(case), **QUIET)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(F, 3, H, W) in [0, 1] -> (F, H, W, 3) uint8, as the writer makes it (rounding)."""
    return (frames * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def truncated_uint8(video: torch.Tensor) -> np.ndarray:
    """The original's cache_video: ((clamp(x) + 1) / 2 * 255).type(uint8) of a (3, F, H, W) video."""
    return ((video.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()


def assert_video_matches(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
    d = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    within = (d <= 2).mean()
    assert within >= 0.99, f"{what}: {within:.4f} of values within 2 levels (max {d.max()})"
    assert ref.std() > 10  # a real video, not a flat one


def read_frames(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


# ------------------------------------------------------------------------------------------ end to end, golden

@needs_cases
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_end_to_end_from_the_image_file_prompt_and_seed(case):
    first, _ = images(case)
    out = pipeline(case)(first, **call_kwargs(case))
    assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert_video_matches(to_uint8(out), expected(case)["decode.video_uint8"].numpy(), case.name)


@needs_cases
@pytest.mark.parametrize("case", [c for c in CASES if "dpmpp.decode.video" in expected(c)] or CASES[:0],
                         ids=lambda c: c.name)
def test_end_to_end_with_wans_dpmpp_solver(case):
    """FLF2V's second run with sample_solver='dpm++' (Wan's FlowDPMSolverMultistepScheduler, sigmas from 1.0)."""
    first, _ = images(case)
    out = pipeline(case)(first, **call_kwargs(case, sampler="flow_dpmpp_2m"))
    assert_video_matches(to_uint8(out), truncated_uint8(expected(case)["dpmpp.decode.video"]), case.name + " dpm++")


@needs_cases
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_end_to_end_through_the_cli(case, tmp_path, capsys):
    st = settings(case)
    first, last = images(case)
    args = ["animate", str(first), "--checkpoint", str(case), "--prompt", st["prompt"], "--negative-prompt",
            st["n_prompt"], "--frames", str(st["frame_num"]), "--steps", str(st["sampling_steps"]),
            "--shift", str(st["shift"]), "--guidance", str(st["guide_scale"]), "--seed", str(st["seed"]),
            "--size", f"{st['max_area']}x1",  # the pixel area W x H; the aspect ratio follows the image
            "--threads", "1", "-o", str(tmp_path / "frames")]
    if last is not None:
        args += ["--last-frame", str(last)]
    if clip_head_width(case):
        args += ["--clip-head-width", str(clip_head_width(case))]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "peak RAM" in text and f"{st['frame_num']} frames" in text
    assert_video_matches(read_frames(tmp_path / "frames"), expected(case)["decode.video_uint8"].numpy(), case.name)


@needs_cases
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conditioning_from_the_image_file(case):
    """cond.mask / cond.y (I2V, FLF2V: mask channels + the VAE latent of image + zero frames), TI2V's LANCZOS-
    resized, centre-cropped image and its latent, each from the image file."""
    E, st, pipe = expected(case), settings(case), pipeline(case)
    first, last = images(case)
    cond = pipe.condition(first, last, st["frame_num"], st["max_area"], progress=False)
    rel = lambda a, b: float((a.double() - b.double()).norm() / b.double().norm())  # noqa: E731
    if "cond.y" in E:
        assert torch.equal(cond["y"][0, :4], E["cond.mask"])  # 0 / 1 exactly
        assert rel(cond["y"][0], E["cond.y"]) <= 1e-4
        assert cond["clip"].shape[1] == E["clip.out"].shape[0] * E["clip.out"].shape[1]
    else:
        from i2v.image import resize_cover_uint8

        H, W = st["video_hw"]
        assert np.array_equal(resize_cover_uint8(np.asarray(Image.open(first).convert("RGB")), H, W),
                              E["image.resized_uint8"].numpy())
        assert rel(cond["z"][0], E["vae.out"]) <= 1e-4
    assert cond["size"] == tuple(st["video_hw"]) and cond["latent"] == tuple(st["latent_fhw"])


def test_size_rules_and_mask_by_their_definitions():
    """The rules the cases exercise once, on more inputs: Wan2.1's max_area rule, Wan2.2's best_output_size
    (multiples, the area bound, the closer of its two roundings), and the mask's 4j + c - 3 indexing."""
    for h, w in [(388, 584), (480, 832), (1080, 1920), (1000, 300), (512, 512)]:
        for area in (480 * 832, 720 * 1280):
            H, W = i2v_size(h, w, area)
            assert H % 16 == 0 and W % 16 == 0 and H * W <= area and abs(H / W - h / w) / (h / w) < 0.1
            ow, oh = best_output_size(w, h, 32, 32, area)
            assert ow % 32 == 0 and oh % 32 == 0 and ow * oh <= area
    assert i2v_size(388, 584, 3840) == (48, 64) and best_output_size(584, 388, 32, 32, 24576) == (192, 128)
    assert max_area("720p", "ti2v") == 704 * 1280 and max_area("720p", "i2v") == 720 * 1280
    assert max_area("832x480", "i2v") == max_area((832, 480), "i2v") == max_area("480p", "i2v")
    for last in (False, True):
        m = frame_mask(13, 2, 2, last=last)  # (4, 4 latent frames, 2, 2)
        given = {0, 12} if last else {0}
        for j in range(4):
            for c in range(4):
                frame = max(0, 4 * j + c - 3)
                assert m[c, j, 0, 0] == (1.0 if frame in given else 0.0), (last, j, c)


# ------------------------------------------------------------------------------------------ loading layouts

def _case_of(kind: str):
    for c in CASES:
        if json.loads((c / "case.json").read_text())["model_type"] == kind:
            return c
    pytest.skip(f"needs a wan* case of model_type {kind} in ../shared/reference")


def test_registry_loads_pipelines_and_modules():
    case = _case_of("i2v")
    pipe = i2v.load(case, clip_head_width=clip_head_width(case), **QUIET)
    assert isinstance(pipe, WanPipeline) and pipe.model_type == "i2v" and pipe.dit is None  # nothing loaded yet
    vae = i2v.load(case / "Wan2.1_VAE.pth")
    assert type(vae).__name__ == "Wan21VAE"
    pipe = i2v.load(case / "diffusion_pytorch_model.safetensors", **QUIET)  # a DiT file: its parts beside it
    assert pipe.files.layout == "single-file" and pipe.files.vae == case / "Wan2.1_VAE.pth"


def _comfy_layout(case, root: Path) -> dict:
    """ComfyUI's folders: the DiT alone as one bf16 file under model.diffusion_model. (no config.json), the other
    parts in their own folders; the tokenizer lives beside the text encoder."""
    sd = load_file(str(case / "diffusion_pytorch_model.safetensors"))
    (root / "diffusion_models").mkdir(parents=True)
    dit = root / "diffusion_models" / "wan2.1_tiny_bf16.safetensors"
    save_file({f"model.diffusion_model.{k}": v.to(torch.bfloat16) for k, v in sd.items()}, str(dit))
    parts = {"dit": dit}
    for folder, name, key in (("vae", "Wan2.1_VAE.pth", "vae"), ("text_encoders", "models_t5_umt5-xxl-enc-bf16.pth",
                                                                  "text_encoder"), ("clip_vision", CLIP_FILE, "clip")):
        (root / folder).mkdir()
        parts[key] = root / folder / name
        shutil.copy(case / name, parts[key])
    shutil.copytree(case / "google", root / "text_encoders" / "google")
    return parts


def test_comfyui_single_file_prefixed_bf16_with_its_parts_given(tmp_path, capsys):
    """The same run as from the release folder whose DiT holds the same bf16-rounded weights: equal frames."""
    case = _case_of("i2v")
    parts = _comfy_layout(case, tmp_path / "comfy")
    st, (first, _) = settings(case), images(case)
    args = ["animate", str(first), "--checkpoint", str(parts["dit"]), "--vae", str(parts["vae"]), "--text-encoder",
            str(parts["text_encoder"]), "--clip", str(parts["clip"]), "--num-heads", "2", "--clip-head-width",
            str(clip_head_width(case)), "--prompt", st["prompt"], "--frames", "5", "--steps", "2", "--seed", "3",
            "--size", f"{st['max_area']}x1", "--threads", "1", "-o", str(tmp_path / "a")]
    assert main(args) == 0
    assert "tokenizer found beside the text encoder" in capsys.readouterr().out

    release = tmp_path / "release"  # the release layout, its DiT rounded to bf16 and stored in float32
    shutil.copytree(case, release, ignore=shutil.ignore_patterns("expected.safetensors"))
    sd = load_file(str(case / "diffusion_pytorch_model.safetensors"))
    save_file({k: v.to(torch.bfloat16).float() for k, v in sd.items()}, str(release / "diffusion_pytorch_model.safetensors"))
    pipe = WanPipeline.from_pretrained(release, clip_head_width=clip_head_width(case), **QUIET)
    ref = pipe(first, prompt=st["prompt"], frames=5, steps=2, seed=3, size=st["max_area"], progress=False)
    assert np.array_equal(read_frames(tmp_path / "a"), to_uint8(ref))


def _diffusers_folder(case, root: Path) -> Path:
    """A Wan-AI/...-Diffusers folder made from the case: diffusers / transformers (the test extra) build the modules
    and write config.json; their weights are the case's, fetched through i2v's rename tables (diffusers key ->
    original key), so the folder holds the same model in the other layout."""
    diffusers = pytest.importorskip("diffusers", reason="writing the layout needs the test extra (diffusers)")
    transformers = pytest.importorskip("transformers", reason="writing the layout needs the test extra (transformers)")
    from i2v.checkpoints import open_state_dict
    from i2v.models.encoders.clip_vision import TRANSFORMERS_RENAMES, _renamed, wan_to_open_clip
    from i2v.models.encoders.t5 import hf_to_wan
    from i2v.models.wan.dit import diffusers_to_original
    from i2v.models.wan.vae import diffusers_renamer

    cfg = json.loads((case / "case.json").read_text())["config"]
    d, kind = cfg["dit"], cfg["dit"]["model_type"]

    def fill(module, source, name_of):
        sd = module.state_dict()
        with torch.no_grad():
            for k in sd:
                sd[k] = name_of(k, source).reshape(sd[k].shape).to(sd[k].dtype)
        module.load_state_dict(sd)
        return module

    dit_sd = load_file(str(case / "diffusion_pytorch_model.safetensors"))
    extra = dict(image_dim=d["image_dim"], added_kv_proj_dim=d["dim"]) if "image_dim" in d else {}
    if kind == "flf2v":
        extra["pos_embed_seq_len"] = 514
    dit = diffusers.WanTransformer3DModel(
        patch_size=tuple(d["patch_size"]), num_attention_heads=d["num_heads"], attention_head_dim=d["dim"] // d["num_heads"],
        in_channels=d["in_dim"], out_channels=d["out_dim"], text_dim=d["text_dim"], freq_dim=d["freq_dim"],
        ffn_dim=d["ffn_dim"], num_layers=d["num_layers"], cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        eps=d["eps"], **extra)
    fill(dit, dit_sd, lambda k, s: s["head.modulation" if k == "scale_shift_table" else diffusers_to_original(k)])
    dit.save_pretrained(root / "transformer")

    v = cfg["vae"]
    vae_sd = torch.load(case / ("Wan2.2_VAE.pth" if v["z_dim"] == 48 else "Wan2.1_VAE.pth"), weights_only=True)
    vkw = dict(base_dim=v["dim"], z_dim=v["z_dim"])
    if v["z_dim"] == 48:
        vkw |= dict(decoder_base_dim=v["dec_dim"], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                    scale_factor_spatial=16)
    vae = diffusers.AutoencoderKLWan(**vkw)
    rename = diffusers_renamer({k: tuple(t.shape) for k, t in vae.state_dict().items()})
    fill(vae, vae_sd, lambda k, s: s[rename(k)])
    vae.save_pretrained(root / "vae")

    t = cfg["t5"]
    t5 = transformers.UMT5EncoderModel(transformers.UMT5Config(
        vocab_size=t["vocab_size"], d_model=t["dim"], d_kv=t["dim_attn"] // t["num_heads"], d_ff=t["dim_ffn"],
        num_layers=t["encoder_layers"], num_heads=t["num_heads"], relative_attention_num_buckets=t["num_buckets"],
        relative_attention_max_distance=128, feed_forward_proj="gated-gelu"))

    class Names:  # hf_to_wan's rename function, taken out of its lazy view
        shapes = {k: tuple(p.shape) for k, p in t5.state_dict().items()}

        def rename(self, fn):
            self.fn = fn
            return self

    t5_names, _ = hf_to_wan(Names())
    t5_sd = torch.load(case / "models_t5_umt5-xxl-enc-bf16.pth", weights_only=True)
    tied = {"encoder.embed_tokens.weight": "token_embedding.weight"}  # transformers' tied copy of shared.weight
    fill(t5, t5_sd, lambda k, s: s[tied.get(k) or t5_names.fn(k)])
    t5.save_pretrained(root / "text_encoder")
    shutil.copytree(case / "google" / "umt5-xxl", root / "tokenizer")

    if "clip" in cfg:
        c = cfg["clip"]
        clip = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
            hidden_size=c["vision_dim"], intermediate_size=c["vision_dim"] * c["vision_mlp_ratio"],
            num_hidden_layers=c["vision_layers"], num_attention_heads=c["vision_heads"], image_size=c["image_size"],
            patch_size=c["patch_size"], hidden_act="gelu", layer_norm_eps=1e-5))
        open_clip = wan_to_open_clip(open_state_dict(case / CLIP_FILE))

        def clip_name(k, s):
            name = _renamed(TRANSFORMERS_RENAMES, k)  # -> OpenCLIP names; q, k, v are thirds of in_proj
            for i, x in enumerate("qkv"):
                if f".attn.{x}_proj." in name:
                    packed = s[name.replace(f"{x}_proj.", "in_proj_")]
                    return packed.chunk(3)[i]
            return s[name]

        clip.save_pretrained(root / "image_encoder")  # config.json; the weights under the released names:
        # Wan's diffusers repositories (transformers 4) prefix them vision_model., which transformers 5 drops
        keys = {k if k.startswith("vision_model.") else f"vision_model.{k}": t for k, t in clip.state_dict().items()}
        save_file({k: clip_name(k, open_clip).reshape(t.shape).contiguous() for k, t in keys.items()},
                  str(root / "image_encoder" / "model.safetensors"))
    cls = {"i2v": "WanImageToVideoPipeline", "flf2v": "WanImageToVideoPipeline", "ti2v": "WanPipeline"}[kind]
    (root / "model_index.json").write_text(json.dumps({"_class_name": cls, "_diffusers_version": diffusers.__version__}))
    return root


@needs_cases
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_diffusers_folder_end_to_end(case, tmp_path):
    folder = _diffusers_folder(case, tmp_path / "Wan-Diffusers")
    pipe = i2v.load(folder, **QUIET)  # the head counts come from the config.json files
    assert pipe.files.layout == "diffusers"
    assert pipe.model_type == json.loads((case / "case.json").read_text())["model_type"]
    first, _ = images(case)
    out = pipe(first, **call_kwargs(case))
    assert_video_matches(to_uint8(out), expected(case)["decode.video_uint8"].numpy(), case.name + " (diffusers)")


# ------------------------------------------------------------------------------------------ memory levers

def test_text_encoders_are_freed_before_the_dit_loads_and_offload_gives_the_same_video(monkeypatch):
    case = _case_of("i2v")
    first, _ = images(case)
    kw = call_kwargs(case, steps=2)
    pipe = WanPipeline.from_pretrained(case, clip_head_width=clip_head_width(case), **QUIET)
    seen = []
    real = WanPipeline.load_dit

    def spy(self):
        seen.append((self.text_encoder, self.clip))
        return real(self)

    monkeypatch.setattr(WanPipeline, "load_dit", spy)
    ref = pipe(first, **kw)
    assert seen and all(t is None and c is None for t, c in seen)  # T5 and CLIP gone when the DiT arrives

    both = WanPipeline.from_pretrained(case, clip_head_width=clip_head_width(case), offload="all", **QUIET)
    out = both(first, **kw)
    assert both.text_encoder is not None and both.clip is not None  # kept, on the CPU
    assert len(both._offload.handles) == 2 * len(both.dit.blocks)  # each block visits the device for its call
    assert torch.equal(out, ref)
    assert WanPipeline.from_pretrained(case, dtype="bf16", device="cpu", **QUIET).dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------ encode / decode

def test_encode_and_decode_cli_round_trip_equal_the_vaes_own(tmp_path, capsys):
    from i2v.models.wan.vae import load_vae

    for n, case in enumerate(CASES):
        E = expected(case)
        if "vae_rt.in" not in E:
            continue
        vae_file = next(p for p in (case / "Wan2.1_VAE.pth", case / "Wan2.2_VAE.pth") if p.is_file())
        clip = ((E["vae_rt.in"].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (3, F, H, W): a real clip
        src = tmp_path / case.name / "clip"
        src.mkdir(parents=True)
        for i, frame in enumerate(clip.permute(1, 2, 3, 0).numpy()):
            Image.fromarray(frame).save(src / f"{i:03d}.png")
        lat = tmp_path / case.name / "clip.safetensors"
        assert main(["encode", str(src), "--vae", str(vae_file), "--threads", "1", "-o", str(lat)]) == 0
        vae = load_vae(vae_file)
        z = vae.encode(clip[None].float() / 127.5 - 1)
        saved = load_file(str(lat))["latents"]
        assert torch.equal(saved, z)  # the same numbers as the module
        assert float((z - E["vae_rt.latent"]).norm() / E["vae_rt.latent"].norm()) < 0.05  # and near the original's
        out = tmp_path / case.name / "decoded"
        assert main(["decode", str(lat), "--vae", str(vae_file), "--threads", "1", "-o", str(out)]) == 0
        ref = ((vae.decode(z)[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
        assert np.array_equal(read_frames(out), ref)
        if n:
            continue
        tiled = tmp_path / case.name / "tiled"  # through the release folder's VAE, tiled
        assert main(["decode", str(lat), "--checkpoint", str(case), "--tile", "4", "--threads", "1", "-o", str(tiled)]) == 0
        ref = ((vae.decode(z, tile=4)[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0)
        assert np.array_equal(read_frames(tiled), ref.numpy())
    capsys.readouterr()


def test_saved_latents_decode_to_the_same_video(tmp_path, capsys):
    case = _case_of("ti2v")
    st, (first, _) = settings(case), images(case)
    common = ["--frames", "5", "--steps", "2", "--seed", "0", "--size", f"{st['max_area']}x1", "--threads", "1"]
    assert main(["animate", str(first), "--checkpoint", str(case), "--prompt", "p", *common, "--save-latents",
                 str(tmp_path / "run.safetensors"), "-o", str(tmp_path / "a")]) == 0
    assert main(["decode", str(tmp_path / "run.safetensors"), "--checkpoint", str(case), "--threads", "1",
                 "-o", str(tmp_path / "b")]) == 0
    assert np.array_equal(read_frames(tmp_path / "a"), read_frames(tmp_path / "b"))
    assert "at 24 fps" in capsys.readouterr().out  # TI2V's rate, kept in the latents file
    assert i2v.registry.identify_path(tmp_path / "run.safetensors").variant == "latents"


# ------------------------------------------------------------------------------------------ bad input

def _fails(args, capsys, *needles, out=None) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    if out is not None:
        assert not Path(out).exists()
    return err


def test_bad_inputs_are_clear_errors_and_write_nothing(tmp_path, capsys):
    i2v_case, ti2v_case = _case_of("i2v"), _case_of("ti2v")
    first, _ = images(i2v_case)
    out = tmp_path / "o.mp4"
    base = ["--prompt", "p", "--clip-head-width", str(clip_head_width(i2v_case)), "--threads", "1", "-o", str(out)]
    # an image smaller than one latent patch (16 px for Wan2.1)
    Image.new("RGB", (12, 40), (200, 30, 30)).save(tmp_path / "tiny.png")
    _fails(["animate", str(tmp_path / "tiny.png"), "--checkpoint", str(i2v_case), *base], capsys, "12x40", ">= 16",
           out=out)
    # --last-frame with an I2V-only checkpoint
    _fails(["animate", str(first), "--checkpoint", str(i2v_case), "--last-frame", str(first), *base], capsys,
           "first-last-frame", "FLF2V", out=out)
    # a DiT file without its VAE and T5 (nothing beside it): which files, and where they usually are
    lone = tmp_path / "lone" / "wan_dit.safetensors"
    lone.parent.mkdir()
    shutil.copy(i2v_case / "diffusion_pytorch_model.safetensors", lone)
    err = _fails(["animate", str(first), "--checkpoint", str(lone), *base], capsys, "--vae", "--text-encoder", "--clip",
                 "--tokenizer", "Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", out=out)
    assert "vae/" in err and "ComfyUI" in err
    # a 2.1 VAE given to TI2V
    _fails(["animate", str(first), "--checkpoint", str(ti2v_case), "--vae", str(i2v_case / "Wan2.1_VAE.pth"),
            "--prompt", "p", "-o", str(out)], capsys, "Wan2.1 VAE", "Wan2.2_VAE.pth", out=out)
    # a file of another kind as --text-encoder
    _fails(["animate", str(first), "--checkpoint", str(i2v_case), "--text-encoder", str(i2v_case / "Wan2.1_VAE.pth"),
            *base], capsys, "--text-encoder", "VAE", out=out)
    # FLF2V without its last frame
    flf = next((c for c in CASES if settings(c).get("last_frame")), None)
    if flf is not None:
        _fails(["animate", str(first), "--checkpoint", str(flf), *base], capsys, "--last-frame", out=out)
    # bad sizes and counts
    _fails(["animate", str(first), "--checkpoint", str(i2v_case), "--size", "huge", *base], capsys, "--size", out=out)
    _fails(["animate", str(first), "--checkpoint", str(i2v_case), "--frames", "3", *base], capsys, "--frames", out=out)
    assert not list(tmp_path.glob(".o*"))  # no temporaries left


def test_a_too_long_prompt_is_cut_as_the_original_and_named():
    from i2v.text.tokenizer import TruncationWarning

    pipe = pipeline(_case_of("i2v"))
    with pytest.warns(TruncationWarning, match="the negative prompt has .* tokens"):
        _, null = pipe.encode_prompts("short", "blurry static " * 400, progress=False)
    assert null.shape[1] == 512
    pipe.free_encoders()


def test_frames_not_4k_plus_1_are_rounded_as_the_original_and_said(tmp_path):
    case = _case_of("i2v")
    first, _ = images(case)
    notes = []
    pipe = WanPipeline.from_pretrained(case, clip_head_width=clip_head_width(case), log=notes.append)
    out = pipe(first, prompt="p", frames=8, steps=1, seed=0, size=settings(case)["max_area"], progress=False)
    assert out.shape[0] == 5 and any("8 frames is not 1 + 4k" in n and "making 5" in n for n in notes)


def test_a_last_frame_of_another_size_is_resized_and_said(tmp_path):
    case = next((c for c in CASES if settings(c).get("last_frame")), None)
    if case is None:
        pytest.skip("needs an FLF2V case")
    first, last = images(case)
    Image.open(last).convert("RGB").resize((300, 120)).save(tmp_path / "last.png")
    notes = []
    pipe = WanPipeline.from_pretrained(case, clip_head_width=clip_head_width(case), log=notes.append)
    out = pipe(first, prompt="p", last_frame=tmp_path / "last.png", frames=5, steps=1, seed=0,
               size=settings(case)["max_area"], progress=False)
    assert out.shape == (5, 3, *settings(case)["video_hw"])
    assert any("the last frame is 300x120" in n and "resized" in n for n in notes)


def test_other_dits_are_refused_by_what_they_are(tmp_path):
    from i2v.models.wan.dit import WanDiT, WanDiTConfig

    for in_dim, image_dim, what in ((16, None, "text-to-video"), (36, None, "I2V-A14B")):
        m = WanDiT(WanDiTConfig(dim=32, ffn_dim=32, num_heads=2, num_layers=1, in_dim=in_dim, text_dim=16,
                                freq_dim=16, image_dim=image_dim))
        path = tmp_path / f"dit{in_dim}.safetensors"
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
        with pytest.raises(CheckpointError, match=what):
            WanPipeline.from_pretrained(path, **QUIET)


def test_encode_refuses_bad_clips_and_fits_them_when_asked(tmp_path, capsys):
    case = _case_of("i2v")
    vae = str(case / "Wan2.1_VAE.pth")
    src = tmp_path / "clip"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (36, 44, 3), dtype=np.uint8)).save(src / f"{i}.png")
    lat = tmp_path / "z.safetensors"
    _fails(["encode", str(src), "--vae", vae, "-o", str(lat)], capsys, "7 frames", "1, 5, 9", "--fit pad", out=lat)
    _fails(["encode", str(src), "--vae", vae, "--fit", "trim", "-o", str(lat)], capsys, "44x36", "multiples of 8",
           "--crop", out=lat)
    _fails(["encode", str(src), "--vae", str(case / "models_t5_umt5-xxl-enc-bf16.pth"), "-o", str(lat)], capsys,
           "not a Wan VAE", out=lat)
    assert main(["encode", str(src), "--vae", vae, "--fit", "pad", "--crop", "--threads", "1", "-o", str(lat)]) == 0
    z = load_file(str(lat))["latents"]
    assert z.shape == (1, 16, 3, 4, 5)  # 7 -> 9 frames, 44x36 -> 40x32
    # decoding Wan latents with the other VAE, or with SVD's options
    other = next((c / "Wan2.2_VAE.pth" for c in CASES if (c / "Wan2.2_VAE.pth").is_file()), None)
    if other is not None:
        _fails(["decode", str(lat), "--vae", str(other), "-o", str(tmp_path / "d.mp4")], capsys, "Wan2.1",
               out=tmp_path / "d.mp4")
    _fails(["decode", str(lat), "--vae", vae, "--decode-chunk-size", "2", "-o", str(tmp_path / "d.mp4")], capsys,
           "--decode-chunk-size", "Wan", out=tmp_path / "d.mp4")
    _fails(["decode", str(lat), "-o", str(tmp_path / "d.mp4")], capsys, "--vae", out=tmp_path / "d.mp4")
    capsys.readouterr()


def test_options_of_another_family_are_refused_by_name(tmp_path, capsys):
    case = _case_of("i2v")
    first, _ = images(case)
    out = tmp_path / "o.mp4"
    _fails(["animate", str(first), "--prompt", "p", "--shift", "3", "-o", str(out)], capsys, "--prompt, --shift",
           "only Wan", "--checkpoint", out=out)
    _fails(["animate", str(first), "--checkpoint", str(case), "--motion", "pan-left", "-o", str(out)], capsys,
           "--motion", "built-in", "Wan checkpoint", out=out)
    _fails(["animate", str(first), "--checkpoint", str(case), "--motion-bucket-id", "3", "--schedule", "karras",
            "-o", str(out)], capsys, "--motion-bucket-id", "Stable Video Diffusion", "--schedule", out=out)
    # the checkpoint's own family decides: an SVD checkpoint refuses Wan's options
    svd = SHARED / "reference" / "svd-sgm-tiny" / "checkpoint.safetensors"
    if svd.is_file():
        _fails(["animate", str(first), "--checkpoint", str(svd), "--prompt", "p", "-o", str(out)], capsys,
               "--prompt", "only Wan", "Stable Video Diffusion checkpoint", out=out)
    # a VAE file is not a model to animate with
    _fails(["animate", str(first), "--checkpoint", str(case / "Wan2.1_VAE.pth"), "-o", str(out)], capsys,
           "VAE", out=out)
