"""The shared CLIP ViT tower: Wan's readout (penultimate tokens) and preprocessing against the original Wan code's
golden cases, the released XLM-R CLIP file's full-size key map, and the documented skip of its text tower.
(SVD's readout is checked in test_svd_golden.py and against transformers in test_svd_loading.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import i2v
from conftest import case_dirs, shared_path
from i2v.checkpoints import check_keys
from i2v.errors import CheckpointError, InputError
from i2v.models.encoders.clip_vision import WAN_SKIPS, ClipVision, ClipVisionConfig, wan_preprocess

CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
CASES = [c for c in case_dirs("wan", "I2V_WAN_CASES") if (c / CLIP_FILE).is_file()]


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def head_width(case) -> int:
    """Heads leave no trace in the shapes: the case says how many its tiny tower has (the real ViT-H: 16 of 80)."""
    clip = json.loads((case / "case.json").read_text())["config"]["clip"]
    return clip["vision_dim"] // clip["vision_heads"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_wan_readout_matches_the_original(case):
    expected = load_file(str(case / "expected.safetensors"))
    tower = i2v.load(case / CLIP_FILE, head_width=head_width(case))  # through the registry, as a user would
    assert isinstance(tower, ClipVision)
    images = [expected["inputs.image_uint8"]] + ([expected["inputs.last_uint8"]] if "inputs.last_uint8" in expected else [])
    x = torch.stack([torch.from_numpy(np.asarray(im)).permute(2, 0, 1).float() / 255 * 2 - 1 for im in images])
    assert rel(wan_preprocess(x), expected["clip.in"]) <= 1e-5
    with torch.no_grad():
        out = tower.tokens(x)
    assert out.shape == expected["clip.out"].shape
    assert rel(out, expected["clip.out"]) <= 1e-4


def test_full_size_xlmr_clip_maps_with_only_the_text_tower_skipped():
    manifest = json.loads(shared_path("reference", "wan-full-keys.json").read_text())
    keys = {k: tuple(v) for k, v in manifest["clip-xlmr-vit-h"].items()}
    from i2v.models.encoders.clip_vision import WAN_RENAMES, _renamed

    renamed = {}
    for k, shape in keys.items():
        new = _renamed(WAN_RENAMES, k)
        if new is None:
            renamed[k] = shape
        else:  # the embeddings lose their leading 1-axes
            renamed[new] = shape[-1:] if new == "class_embedding" else shape[1:] if new == "positional_embedding" else shape
    cfg = ClipVisionConfig.from_state_dict(renamed)
    assert (cfg.width, cfg.layers, cfg.heads, cfg.patch_size, cfg.image_size, cfg.mlp_width) == (1280, 32, 16, 14, 224, 5120)
    with torch.device("meta"):
        model = ClipVision(cfg)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    skipped = check_keys(own, renamed, source="clip-xlmr-vit-h", model="ClipVision", skip=WAN_SKIPS)
    n_skipped = sum(len(v) for v in skipped.values())
    assert n_skipped + len(own) == len(keys) == manifest["_meta"]["clip-xlmr-vit-h"]["tensors"]
    assert all(k.startswith("textual.") or k == "log_scale" for v in skipped.values() for k in v)
    visual = sum(int(np.prod(s)) for s in own.values())
    assert visual == manifest["_meta"]["clip-xlmr-vit-h"]["visual_params"]


def test_unknown_width_asks_for_the_head_width():
    path = shared_path("reference", "wan21-i2v-tiny", CLIP_FILE)
    with pytest.raises(CheckpointError, match="--clip-head-width"):
        ClipVision.from_pretrained(path)


def test_a_stray_tensor_is_not_skipped(tmp_path):
    sd = torch.load(shared_path("reference", "wan21-i2v-tiny", CLIP_FILE), weights_only=True)
    sd["visual.extra"] = torch.zeros(3)
    torch.save(sd, tmp_path / "clip.pth")
    with pytest.raises(CheckpointError, match=r"1 unexpected.*visual\.extra"):
        ClipVision.from_pretrained(tmp_path / "clip.pth", head_width=32)


def test_bad_image_shape_is_an_input_error():
    with pytest.raises(InputError, match=r"\(b, 3, H, W\)"):
        wan_preprocess(torch.zeros(3, 16, 16))


@pytest.mark.parametrize("with_projection", [False, True])
def test_transformers_vision_towers_in_both_key_layouts(tmp_path, with_projection):
    """transformers 5 saves CLIPVisionModel without the "vision_model." prefix, CLIPVisionModelWithProjection with
    it; both load through i2v.load and give transformers' own penultimate hidden state (Wan's readout)."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                        num_attention_heads=2, image_size=28, patch_size=14, projection_dim=32,
                                        hidden_act="gelu", layer_norm_eps=1e-5)
    torch.manual_seed(0)
    cls = transformers.CLIPVisionModelWithProjection if with_projection else transformers.CLIPVisionModel
    ref = cls(cfg).eval()
    ref.save_pretrained(tmp_path / "enc")
    tower = i2v.load(tmp_path / "enc" / "model.safetensors", head_width=32)
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        want = ref(pixel_values=x, output_hidden_states=True).hidden_states[-2]
        got = tower(x, blocks=tower.config.layers - 1)
    assert rel(got, want) <= 1e-5
