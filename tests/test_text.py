"""The umT5 tokenizer (i2v.text) against the reference runs of Wan and against Hugging Face ``tokenizers``.

- Golden: for every Wan reference case with a ``google/umt5-xxl/tokenizer.json``, the prompts in case.json cleaned
  (i2v.text.prompt) and tokenized give the reference ``text.*.ids`` / ``.mask`` exactly (made by the original
  Wan code through ``transformers``), and the cleaned strings and token strings of case.json.
- Oracles (test extra): the ``tokenizers`` library on the same tokenizer.json, over generated strings and over
  every Unicode code point through the normaliser; prompt cleaning against ftfy + html + ``regex`` as Wan writes it.
- The Precompiled (nmt_nfkc) map against NFKC: exactly the documented differences (docs/text.md).
- Bad inputs: tokenizer.json files of other model types, damaged files, prompts over 512 tokens.
"""

from __future__ import annotations

import base64
import html
import json
import random
import unicodedata
import warnings

import pytest

from conftest import case_dirs
from i2v.errors import CheckpointError
from i2v.text.charsmap import CharsMap
from i2v.text.prompt import clean_prompt
from i2v.text.tokenizer import Tokenizer, TruncationWarning

CASES = [d for d in case_dirs("wan", "I2V_WAN_CASES")]
TOKENIZER = "google/umt5-xxl/tokenizer.json"


def _case(case):
    need = [case / TOKENIZER, case / "case.json", case / "expected.safetensors"]
    missing = [p.name for p in need if not p.exists()]
    if missing:
        pytest.skip(f"{case.name}: no {', '.join(missing)}")
    settings = json.loads((case / "case.json").read_text())["settings"]
    if "prompt" not in settings:
        pytest.skip(f"{case.name}: case.json has no prompts")
    return settings


@pytest.fixture(scope="module")
def reference_tokenizer_json():
    """The first reference case's tokenizer.json (they are the umT5 structure), or skip."""
    for case in CASES:
        if (case / TOKENIZER).is_file():
            return case / TOKENIZER
    pytest.skip("needs a Wan reference case with google/umt5-xxl/tokenizer.json (../shared/reference/wan*)")


@pytest.fixture(scope="module")
def oracle(reference_tokenizer_json):
    tokenizers = pytest.importorskip("tokenizers")
    return tokenizers.Tokenizer.from_file(str(reference_tokenizer_json))


# ------------------------------------------------------------------------------------------------ golden

@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_prompt_cleaning_matches_reference(case):
    s = _case(case)
    assert clean_prompt(s["prompt"]) == s["prompt_cleaned"]
    assert clean_prompt(s["n_prompt"]) == s["n_prompt_cleaned"]


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_ids_and_mask_match_reference(case):
    from safetensors.torch import load_file

    s = _case(case)
    expected = load_file(case / "expected.safetensors")
    if "text.prompt.ids" not in expected:
        pytest.skip(f"{case.name}: no text.* tensors")
    tok = Tokenizer.from_file(case / "google" / "umt5-xxl")  # the folder, as a user gives it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = tok.encode_batch([clean_prompt(s["prompt"]), clean_prompt(s["n_prompt"])], length=512)
    for row, name in enumerate(("prompt", "neg")):
        ids, mask = expected[f"text.{name}.ids"], expected[f"text.{name}.mask"]
        assert batch.ids[row].tolist() == ids.tolist(), name
        assert batch.mask[row].tolist() == mask.tolist(), name
        assert batch.lengths[row] == int(mask.sum())
        truncated = bool(batch.dropped[row])
        assert truncated == any(f"text {row} has" in str(w.message) for w in caught)
        if int(mask.sum()) < 512:
            assert not truncated  # a text that fits is never cut
    for row, key in enumerate(("prompt_tokens", "n_prompt_tokens")):
        if key in s:  # the reference's token strings (the last one is </s>)
            cleaned = clean_prompt(s["prompt" if row == 0 else "n_prompt"])
            assert tok.tokenize(cleaned)[:len(s[key]) - 1] == s[key][:-1] and s[key][-1] == "</s>"


def test_truncation_keeps_511_tokens_and_end_token(reference_tokenizer_json):
    """A prompt over 512 tokens: the first 511 tokens, then </s>, mask all ones, and a warning saying so (the FLF2V
    reference's negative prompt is such a case)."""
    tok = Tokenizer.from_file(reference_tokenizer_json)
    text = "blurry low quality, static " * 60
    full = tok.encode(text)
    assert len(full) > 600
    with pytest.warns(TruncationWarning, match=r"kept the first 511 and the end token"):
        batch = tok.encode_batch([text, "short"], length=512)
    assert batch.ids[0].tolist() == full[:511] + [1]
    assert batch.mask[0].sum() == 512 and batch.dropped == [len(full) - 512, 0]
    assert batch.ids[1, batch.lengths[1]:].eq(0).all()  # <pad> = 0 after the end token


# ------------------------------------------------------------------------------------------------ oracles

PARTS = {
    "ascii": list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()-_/&<>#@"),
    "cjk": list("镜头晃动色调艳丽过曝静态细节模糊不清字幕风格作品画面整体发灰最差质量低的一个在山上猫狗"),
    "accents": list("éèêëàâäôöùûüçñÉÀÇåøæßÿœ"),
    "combining": ["e\u0301", "a\u0300", "o\u0308", "n\u0303", "\u00aa\u0300", "\uff21\u0301", "\u0301",
                  "i\u0307\u0301", "c\u0327", "\u1100\u1161"],
    "emoji": ["\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
              "\U0001f1eb\U0001f1f7", "\u2764\ufe0f", "1\ufe0f\u20e3", "\u00a9\u200d\u00a9", "\u2728"],
    "space": [" ", "  ", "   ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u2009", "\u200b"],
    "entity": ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&amp;amp;", "&nbsp;"],
    "wide": list("ＦＵＬＬ ＨＤ１２３ｱｲｳ①②ⅣⅫ㎏ﬁ™～"),
    "other": ["\u2581", "\u2581\u2581", "</s>", "<pad>", "<unk>", "<extra_id_0>", "\x00", "\x07", "\x7f", "\ufeff",
              "…", "—", "“", "”", "\ufffd"],
    "scripts": ["안녕하세요", "مرحبا", "\u0600١", "नमस्ते", "สวัสดี", "Привет", "Γειά", "שלום"],
}


def generated_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 25)):
            kind = rng.choice(list(PARTS))
            count = rng.randint(1, 2 if kind == "combining" else 6)
            parts.append("".join(rng.choice(PARTS[kind]) for _ in range(count)))
            if rng.random() < 0.5:
                parts.append(" ")
        out.append("".join(parts))
    return out


def test_ids_equal_tokenizers_library(reference_tokenizer_json, oracle):
    """>= 500 generated strings (ASCII, CJK, accents precomposed and combining, emoji sequences, repeated and odd
    spaces, HTML entities, fullwidth forms, special tokens in the text, control characters): identical ids."""
    tok = Tokenizer.from_file(reference_tokenizer_json)
    strings = generated_strings(600) + ["", " ", "\u2581", "\u00aa\u0300", "hello</s>world <extra_id_0>x"]
    ours = [tok.encode(s) for s in strings]
    theirs = [e.ids for e in oracle.encode_batch(strings)]
    bad = [(s, a, b) for s, a, b in zip(strings, ours, theirs) if a != b]
    assert not bad, f"{len(bad)} of {len(strings)} differ, e.g. {bad[0]!r}"
    assert [tok.decode(ids) for ids in theirs] == [oracle.decode(ids) for ids in theirs]
    # the same on the cleaned prompts, as the pipeline feeds them
    cleaned = [clean_prompt(s) for s in strings[:200]]
    assert [tok.encode(s) for s in cleaned] == [e.ids for e in oracle.encode_batch(cleaned)]


def test_viterbi_equals_tokenizers_library_on_a_large_vocabulary(reference_tokenizer_json, tmp_path):
    """The reference vocabulary is mostly single characters; here 4000 random multi-character pieces with scores
    on a 0.5 grid (so equal-score segmentations are common and the tie rule matters), same pipeline otherwise."""
    tokenizers = pytest.importorskip("tokenizers")
    spec = json.loads(reference_tokenizer_json.read_text())
    rng = random.Random(3)
    alphabet = "abcdeélmnorst镜头晃动▁"
    vocab, seen = spec["model"]["vocab"], {p for p, _ in spec["model"]["vocab"]}
    while len(vocab) < 4000:
        piece = "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 7)))
        if piece not in seen:
            seen.add(piece)
            vocab.append([piece, -0.5 * rng.randint(4, 30)])
    path = _write(tmp_path, spec)
    # the file still says <extra_id_3> is 124, now a piece's id: like tokenizers, we number it after the vocabulary
    with pytest.warns(UserWarning, match="'<extra_id_3>' says id 124 but is given 4000"):
        ours = Tokenizer.from_file(path)
    theirs = tokenizers.Tokenizer.from_file(str(path))
    strings = ["".join(rng.choice(alphabet + "  xyz") for _ in range(rng.randint(5, 80))) for _ in range(300)]
    strings += generated_strings(100, seed=4)
    assert [ours.encode(s) for s in strings] == [e.ids for e in theirs.encode_batch(strings)]


def test_added_token_options_equal_tokenizers_library(reference_tokenizer_json, tmp_path):
    """lstrip / rstrip / single_word special tokens and a normalised (non-special) added token, which umT5's file
    does not use but other T5-family files may: the same splits as tokenizers."""
    tokenizers = pytest.importorskip("tokenizers")
    spec = json.loads(reference_tokenizer_json.read_text())
    flags = {"<extra_id_0>": "lstrip", "<extra_id_1>": "rstrip", "<extra_id_2>": "single_word"}
    for t in spec["added_tokens"]:
        if t["content"] in flags:
            t[flags[t["content"]]] = True
    spec["added_tokens"].append({"id": 128, "content": "\uff38tok", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": True, "special": False})
    path = _write(tmp_path, spec)
    ours, theirs = Tokenizer.from_file(path), tokenizers.Tokenizer.from_file(str(path))
    rng = random.Random(5)
    bits = ["<extra_id_0>", "<extra_id_1>", "<extra_id_2>", "<extra_id_3>", "</s>", "Xtok", "\uff38tok", " ", "  ",
            "\t", "ab", "c_", "镜头", "."]
    strings = ["".join(rng.choice(bits) for _ in range(rng.randint(1, 12))) for _ in range(400)]
    assert [ours.encode(s) for s in strings] == [e.ids for e in theirs.encode_batch(strings)]


def test_truncation_equals_tokenizers_library(reference_tokenizer_json, oracle):
    import copy

    tok = Tokenizer.from_file(reference_tokenizer_json)
    text = " ".join(generated_strings(80, seed=1))
    o = copy.deepcopy(oracle)
    o.enable_truncation(max_length=512)
    o.enable_padding(length=512, pad_id=0, pad_token="<pad>")
    ref = o.encode(text)
    assert len(tok.encode(text)) > 512
    with pytest.warns(TruncationWarning):
        batch = tok.encode_batch(text, length=512)
    assert batch.ids[0].tolist() == ref.ids and batch.mask[0].tolist() == ref.attention_mask


def test_normalizer_equals_tokenizers_library_on_every_code_point(reference_tokenizer_json, oracle):
    """The Precompiled map + Replace over every code point of planes 0-3 and 14 (all but the private-use planes
    and the empty ones), each alone between separators so the whole-cluster rule meets every character, and
    over all of the BMP run together (clusters across neighbours)."""
    tok = Tokenizer.from_file(reference_tokenizer_json)
    chars = [chr(c) for c in [*range(1, 0x40000), *range(0xE0000, 0xF0000)] if not 0xD800 <= c < 0xE000]
    for block in range(0, len(chars), 1 << 16):
        text = "|".join(chars[block:block + (1 << 16)])
        assert tok.normalize(text) == oracle.normalizer.normalize_str(text), f"block {block}"
    bmp = "".join(chars[:0xD7FF])
    assert tok.normalize(bmp) == oracle.normalizer.normalize_str(bmp)


def test_whole_cluster_rule_as_tokenizers_does(reference_tokenizer_json):
    """A cluster shorter than 6 bytes takes the replacement of its *shortest* matching prefix (Hugging Face's rule;
    SentencePiece would take the longest): "ª" + U+0300 -> "a" (nmt_nfkc maps "ª" -> "a" and "ª̀" -> "à")."""
    tok = Tokenizer.from_file(reference_tokenizer_json)
    assert tok.normalize("\u00aa\u0300") == "a"
    assert tok.normalize("\u00aa") == "a" and tok.normalize("\u00aa\u0300\u0300\u0300") != "a"  # 8 bytes: per char
    assert tok.normalize("e\u0301") == "\u00e9"  # a decomposed accent is composed


def test_charsmap_differs_from_nfkc_exactly_as_documented(reference_tokenizer_json):
    """Where nmt_nfkc is not NFKC, character by character (docs/text.md): control characters removed; tab, newline,
    form feed, carriage return and some invisible or odd spaces -> " "; U+FF5E kept; and characters newer than this
    Python's Unicode database (NFKC cannot know them)."""
    spec = json.loads(reference_tokenizer_json.read_text())
    steps = spec["normalizer"]["normalizers"]
    cmap = CharsMap(base64.b64decode(next(s for s in steps if s["type"] == "Precompiled")["precompiled_charsmap"]))
    removed = {*range(0x01, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, 0x8F, 0x9F}
    to_space = {0x09, 0x0A, 0x0C, 0x0D, 0x061C, 0x1680, 0x200B, 0x200C, 0x200E, 0x200F, 0x2028, 0x2029, 0x2581,
                0xFEFF, 0xFFFD}
    kept = {0xFF5E}  # FULLWIDTH TILDE: NFKC gives "~"
    differs = {}
    for cp in range(1, 0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        mapped = cmap.replacement(c)
        mapped = c if mapped is None else mapped
        if mapped != unicodedata.normalize("NFKC", c):
            differs[cp] = mapped
    newer = {cp for cp in differs if unicodedata.category(chr(cp)) == "Cn"}
    assert set(differs) - newer == removed | to_space | kept
    assert all(differs[cp] == "" for cp in removed) and all(differs[cp] == " " for cp in to_space)
    assert differs[0xFF5E] == "\uff5e"


def test_prompt_cleaning_equals_wan_formula():
    """clean_prompt against Wan's own two lines (ftfy, html twice, strip, regex \\s+), on tricky strings."""
    ftfy = pytest.importorskip("ftfy")
    regex = pytest.importorskip("regex")

    def wan(text):
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return regex.sub(r"\s+", " ", text).strip()

    tricky = ["cafÃ©", "&amp;amp; &lt;3 &#39;x&#39;", "“golden” ‘light’", "ＦＵＬＬ ＨＤ", "a\u3000b\u00a0c\u2009d",
              "a\x1cb\x1dc\x1e\x1f", "line\r\nbreak\ttab\x0bvt\x0cff", "\u200b zero width", "  lead and trail  ",
              "e\u0301", "ﬁ ligature ㎏", "\ufeffbom", "…—–", "Ð¿Ñ€Ð¸Ð²ÐµÑ‚", "&nbsp;&nbsp;x", "\x00nul\x07bell",
              "😀 ❤️ 👍🏽", "<b>bold</b>", "x" * 3 + "\u2028" + "y"]
    tricky += generated_strings(200, seed=2)
    assert [clean_prompt(t) for t in tricky] == [wan(t) for t in tricky]
    assert clean_prompt("  a \t\n b  ") == "a b" and clean_prompt("&amp;amp;") == "&"
    assert clean_prompt("“golden”") == '"golden"'


# ------------------------------------------------------------------------------------------------ bad inputs

def _write(tmp_path, spec: dict):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize("kind, model", [
    ("BPE", {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"], "unk_token": None}),
    ("WordPiece", {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1}, "unk_token": "[UNK]"}),
])
def test_other_model_types_are_refused(tmp_path, kind, model):
    path = _write(tmp_path, {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": None,
                             "post_processor": None, "model": model})
    with pytest.raises(CheckpointError, match=f"a {kind} tokenizer; i2v reads Unigram"):
        Tokenizer.from_file(path)


def test_damaged_or_missing_files(tmp_path, reference_tokenizer_json):
    with pytest.raises(CheckpointError, match="no tokenizer.json here"):
        Tokenizer.from_file(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "Unig')
    with pytest.raises(CheckpointError, match="not a readable tokenizer.json"):
        Tokenizer.from_file(tmp_path)
    spec = json.loads(reference_tokenizer_json.read_text())
    spec["normalizer"]["normalizers"][0]["precompiled_charsmap"] = base64.b64encode(b"\xff\xff\x00\x00abc").decode()
    with pytest.raises(CheckpointError, match="Precompiled charsmap says its trie has"):
        Tokenizer.from_file(_write(tmp_path, spec))
    spec = json.loads(reference_tokenizer_json.read_text())
    spec["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False}
    with pytest.raises(CheckpointError, match="pre-tokenizer 'ByteLevel' is not supported"):
        Tokenizer.from_file(_write(tmp_path, spec))
