"""The T5 / umT5 encoder (i2v.models.encoders.t5) against Wan's reference runs, the full-size key manifest and
transformers' UMT5EncoderModel / T5EncoderModel.

- Golden: for every Wan reference case, the released-layout bf16 file and the case's tokenizer, through the
  public loaders, give ``t5.*.out`` (float32; the reference ran in float32 from the bf16 values) within 1e-4.
- Full size: umT5-XXL built on the meta device maps every key and shape of wan-full-keys.json ``umt5-xxl-enc``,
  with the manifest's parameter count.
- Oracle (test extra): transformers' encoders at small random configs, saved as a Hugging Face folder and loaded
  through our rename table; relative position distances past max_dist, padding masked.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from conftest import case_dirs, shared_path
from i2v.checkpoints import check_keys
from i2v.errors import CheckpointError, ConfigError
from i2v.models.encoders.t5 import WAN_T5_FILE, Config, T5Encoder, encode_prompts
from i2v.text.prompt import clean_prompt
from i2v.text.tokenizer import Tokenizer, TruncationWarning

CASES = case_dirs("wan", "I2V_WAN_CASES")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _case(case):
    need = [case / WAN_T5_FILE, case / "google" / "umt5-xxl" / "tokenizer.json", case / "case.json",
            case / "expected.safetensors"]
    missing = [p.name for p in need if not p.exists()]
    if missing:
        pytest.skip(f"{case.name}: no {', '.join(missing)}")
    return json.loads((case / "case.json").read_text())["settings"]


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_golden_embeddings(case):
    from safetensors.torch import load_file

    s = _case(case)
    expected = load_file(case / "expected.safetensors")
    if "t5.prompt.out" not in expected:
        pytest.skip(f"{case.name}: no t5.* tensors")
    model = T5Encoder.from_pretrained(case / WAN_T5_FILE)  # bf16 file, upcast to float32
    tok = Tokenizer.from_file(case / "google" / "umt5-xxl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # the FLF2V negative prompt is over 512 tokens
        out = encode_prompts(model, tok, [s["prompt"], s["n_prompt"]])
        # the same through Wan's own route: all 512 positions with the padding mask, then trimmed
        batch = tok.encode_batch([clean_prompt(s["prompt"]), clean_prompt(s["n_prompt"])], length=512)
    with torch.no_grad():
        full = model(batch.ids, batch.mask)  # (2, 512, dim)
    for row, name in enumerate(("prompt", "neg")):
        ref = expected[f"t5.{name}.out"]
        assert out[row].shape == ref.shape and out[row].dtype == torch.float32
        assert rel_err(out[row], ref) <= 1e-4, name
        assert rel_err(full[row, :batch.lengths[row]], ref) <= 1e-4, name


@pytest.mark.parametrize("case", CASES[:1], ids=lambda p: p.name)
def test_loads_as_released_or_upcast(case):
    """dtype=None upcasts the bf16 file to float32 (same values); dtype=bfloat16 keeps it as stored."""
    from i2v.checkpoints import open_state_dict

    _case(case)
    sd = open_state_dict(case / WAN_T5_FILE)
    assert sd.info["token_embedding.weight"].dtype == "bfloat16"
    f32 = T5Encoder.from_pretrained(case / WAN_T5_FILE)
    bf16 = T5Encoder.from_pretrained(case, dtype="bf16")  # a Wan-AI folder: the file found by its name
    key = "blocks.0.attn.q.weight"
    assert f32.state_dict()[key].dtype == torch.float32 and bf16.state_dict()[key].dtype == torch.bfloat16
    assert torch.equal(f32.state_dict()[key], sd[key].float()) and torch.equal(bf16.state_dict()[key], sd[key])


def test_full_size_manifest_maps_on_meta():
    manifest = json.loads(shared_path("reference", "wan-full-keys.json").read_text())
    shapes = {k: tuple(v) for k, v in manifest["umt5-xxl-enc"].items()}
    cfg = Config.from_state_dict(shapes)
    assert cfg == Config()  # the defaults are umT5-XXL: 64 heads (from the (32, 64) bias table), 24 layers
    with torch.device("meta"):
        model = T5Encoder(cfg)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert check_keys(own, shapes, source="umt5-xxl-enc", model="T5Encoder") == {}  # nothing skipped or unused
    assert len(own) == manifest["_meta"]["umt5-xxl-enc"]["tensors"]
    assert sum(v.numel() for v in model.state_dict().values()) == manifest["_meta"]["umt5-xxl-enc"]["params"]


# ------------------------------------------------------------------------------------------------ transformers oracle

def _hf_model(kind: str, tmp_path, seed: int = 0):
    transformers = pytest.importorskip("transformers")
    Cfg, Model = {"umt5": (transformers.UMT5Config, transformers.UMT5EncoderModel),
                  "t5": (transformers.T5Config, transformers.T5EncoderModel)}[kind]
    torch.manual_seed(seed)
    # d_kv * num_heads (24) != d_model (32): the attention width is its own number
    cfg = Cfg(vocab_size=97, d_model=32, d_kv=6, d_ff=40, num_layers=3, num_heads=4, relative_attention_num_buckets=32,
              relative_attention_max_distance=128, feed_forward_proj="gated-gelu", dropout_rate=0.0)
    hf = Model(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():  # random init is near-uniform attention: perturb so every part matters
            p.add_(0.5 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / kind)
    return hf, tmp_path / kind


@pytest.mark.parametrize("kind", ["umt5", "t5"])
def test_equals_transformers_encoder(kind, tmp_path):
    hf, folder = _hf_model(kind, tmp_path)
    ours = T5Encoder.from_pretrained(folder)
    assert ours.cfg.shared_pos == (kind == "t5") and ours.cfg.num_heads == 4 and ours.cfg.dim_attn == 24
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 97, (2, 200), generator=g)  # distances past max_dist = 128 reach the last bucket
    mask = torch.ones(2, 200, dtype=torch.int64)
    mask[1, 150:] = 0
    ids[1, 150:] = 0
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        out = ours(ids, mask)
    assert rel_err(out[0], ref[0]) <= 1e-5
    assert rel_err(out[1, :150], ref[1, :150]) <= 1e-5  # the real rows (Wan drops the padded ones)


def test_encoder_of_a_full_encoder_decoder_checkpoint(tmp_path):
    """google/umt5-xxl is published as UMT5ForConditionalGeneration: the decoder and LM head are skipped by rule."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.UMT5Config(vocab_size=97, d_model=32, d_kv=8, d_ff=40, num_layers=2, num_decoder_layers=2,
                                  num_heads=4, feed_forward_proj="gated-gelu", dropout_rate=0.0)
    full = transformers.UMT5ForConditionalGeneration(cfg).eval()
    full.save_pretrained(tmp_path / "umt5")
    ours = T5Encoder.from_pretrained(tmp_path / "umt5")
    ids = torch.randint(3, 97, (1, 30))
    with torch.no_grad():
        assert rel_err(ours(ids), full.get_encoder()(input_ids=ids).last_hidden_state) <= 1e-5


def test_t5_v11_in_wan_layout(tmp_path):
    """T5 v1.1 saved in Wan's key names (one shared ``pos_embedding``), loaded from a .pth file."""
    hf, folder = _hf_model("t5", tmp_path)
    ours = T5Encoder.from_pretrained(folder)
    path = tmp_path / "t5-v1.1.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in ours.state_dict().items()}, path)
    wan = T5Encoder.from_pretrained(path)
    assert "pos_embedding.embedding.weight" in wan.state_dict() and wan.cfg.shared_pos
    with torch.no_grad():
        hf_bf16 = type(hf)(hf.config).eval()
        hf_bf16.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in hf.state_dict().items()})
        ids = torch.randint(3, 97, (1, 50))
        assert rel_err(wan(ids), hf_bf16(input_ids=ids).last_hidden_state) <= 1e-5


def test_num_heads_disagreement_is_refused(tmp_path):
    _, folder = _hf_model("umt5", tmp_path)
    with pytest.raises(ConfigError, match="num_heads=8 was given but"):
        T5Encoder.from_pretrained(folder, num_heads=8)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "feed_forward_proj": "relu"}))
    with pytest.raises(CheckpointError, match="feed_forward_proj 'relu'"):
        T5Encoder.from_pretrained(folder)


# ------------------------------------------------------------------------------------------------ bad files

@pytest.fixture
def tiny_file(tmp_path):
    torch.manual_seed(0)
    model = T5Encoder(Config(vocab=128, dim=16, dim_attn=16, dim_ffn=24, num_heads=2, num_layers=2))
    sd = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    return sd, tmp_path


def test_misshaped_missing_and_foreign_files(tiny_file):
    sd, tmp = tiny_file
    broken = dict(sd)
    del broken["blocks.1.ffn.fc2.weight"]
    broken["blocks.0.attn.o.weight"] = broken["blocks.0.attn.o.weight"][:, :8]
    torch.save(broken, tmp / "broken.pth")
    missing_and_misshaped = r"1 missing \(blocks\.1\.ffn\.fc2\.weight.*wrong shape \(blocks\.0\.attn\.o"
    with pytest.raises(CheckpointError, match=missing_and_misshaped):
        T5Encoder.from_pretrained(tmp / "broken.pth")
    with pytest.raises(CheckpointError, match="num_heads=4 was given"):
        torch.save(sd, tmp / "ok.pth")
        T5Encoder.from_pretrained(tmp / "ok.pth", num_heads=4)
    torch.save({"encoder.conv1.weight": torch.zeros(4, 3, 3, 3, 3)}, tmp / "vae.pth")
    with pytest.raises(CheckpointError, match="not a T5 encoder in Wan's layout"):
        T5Encoder.from_pretrained(tmp / "vae.pth")
    (tmp / "cut.pth").write_bytes((tmp / "ok.pth").read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        T5Encoder.from_pretrained(tmp / "cut.pth")
    with pytest.raises(ConfigError, match="dtype 'int8'"):
        T5Encoder.from_pretrained(tmp / "ok.pth", dtype="int8")


def test_long_prompt_is_truncated_with_a_warning(tiny_file):
    """encode_prompts on a >512-token prompt: 512 rows (511 tokens + </s>), and the caller is told."""
    sd, tmp = tiny_file
    case = next((c for c in CASES if (c / "google" / "umt5-xxl" / "tokenizer.json").is_file()), None)
    if case is None:
        pytest.skip("needs a reference tokenizer (../shared/reference/wan*/google/umt5-xxl)")
    torch.save(sd, tmp / "t5.pth")
    model = T5Encoder.from_pretrained(tmp / "t5.pth")
    tok = Tokenizer.from_file(case / "google" / "umt5-xxl")
    with pytest.warns(TruncationWarning, match=r"tokens dropped") as record:
        long, short = encode_prompts(model, tok, ["a slow pan over the sand " * 40, "a dune"])
    assert record[0].filename == __file__  # the warning names the caller's line
    assert long.shape == (512, 16) and short.shape == (len(tok.encode("a dune")), 16)
    small = {k: v[:100] if k == "token_embedding.weight" else v for k, v in sd.items()}
    torch.save(small, tmp / "small.pth")
    with pytest.raises(ConfigError, match="has 100 embedding rows: the tokenizer is of another model"):
        encode_prompts(T5Encoder.from_pretrained(tmp / "small.pth"), tok, "x" * 30 + " </s> <extra_id_0>")
