"""Runs tutorials/07_video_vae_and_text.py in small settings (a subprocess, as a user would), checks its figures, and
checks the numbers it prints against values obtained here independently:

- the ORIGINAL Wan code's run on the same files (../shared/reference/wan21-i2v-tiny: ``vae_rt.latent`` and
  ``vae_rt.decoded_raw`` of the same pan clip, ``text.prompt.ids`` / ``.mask``, ``t5.prompt.out``, and case.json's
  cleaned prompt and token strings), and the parameter counts of the full-size manifest (wan-full-keys.json);
- closed forms: 1 + (T - 1) / 4 latent frames, the causal dependency pattern (pixel frame k reaches latent frames
  j >= k / 4; latent frame j >= 1 reaches pixel frames >= 4j - 3), the 8x / 16x sizes, T5's relative-position
  bucket formula, and the best Unigram segmentation of a word found by trying every segmentation.

A second run without ../shared checks that the tutorial falls back to random models and its own tokenizer.json."""

from __future__ import annotations

import ast
import itertools
import json
import math
import re

import pytest

from conftest import run_tutorial, shared_path

FIGURES = ("07_vae_clip.png", "07_causality.png", "07_feature_cache.png", "07_tokens.png", "07_t5.png")


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    return run_tutorial("07_video_vae_and_text.py", tmp_path_factory.mktemp("tutorial07"), FIGURES)


@pytest.fixture(scope="module")
def reference():
    from safetensors.torch import load_file

    case = shared_path("reference", "wan21-i2v-tiny")
    return load_file(case / "expected.safetensors"), json.loads((case / "case.json").read_text())["settings"]


def numbers(pattern, text):
    m = re.search(pattern, text)
    assert m, f"not printed: {pattern}"
    return m.groups()


def floats(s):
    return [float(v) for v in ast.literal_eval(s)]


def check_causal_vae_lines(out, T=9):
    """The printed latent sizes and measured dependencies against the closed forms."""
    sizes = re.findall(r"T = +(\d+) pixel frames -> latent \(1, 16, (\d+), (\d+), (\d+)\)", out)
    assert len(sizes) >= 3
    for n, t, h, w in sizes:
        assert int(t) == (int(n) - 1) // 4 + 1 and (int(h), int(w)) == (48 // 8, 64 // 8)
    t = (T - 1) // 4 + 1
    for k in range(T):
        (got,) = numbers(rf"pixel frame {k} changes latent frames (\[[\d, ]*\])", out)
        assert ast.literal_eval(got) == [j for j in range(t) if 4 * j >= k], k
    for j in range(t):
        (got,) = numbers(rf"latent frame {j} changes decoded frames (\[[\d, ]*\])", out)
        assert ast.literal_eval(got) == list(range(0 if j == 0 else 4 * j - 3, T)), j
    assert "decode: latent frame by latent frame -> [1, 4, 4] pixel frames" in out
    (diff,) = numbers(r"latent frame 0 of the clip vs the image's own latent: max \|diff\| ([\d.e+-]+)", out)
    assert float(diff) <= 1e-6
    # Wan2.2: 2x2 patchify, then 8x: 16x16 to 48 channels; the 81-frame 480x832 sizes of both VAEs
    assert "Wan2.2: (1, 3, 9, 64, 64) -> patchify (1, 12, 9, 32, 32) -> latent (1, 48, 3, 4, 4)" in out
    for z_dim, s in ((16, 8), (48, 16)):
        per = 3 * 4 * s * s // z_dim
        assert f"{4}x{s}x{s} to {z_dim} channels = {per} pixel values per latent number; 81 frames at 480x832 -> " \
               f"latent ({z_dim}, {(81 - 1) // 4 + 1}, {480 // s}, {832 // s})" in out


def bucket(rel, num_buckets=32, max_distance=128):
    """T5's bidirectional relative-position bucket (Raffel et al. 2020; Mesh TensorFlow / transformers' formula)."""
    half = num_buckets // 2
    out = half if rel > 0 else 0
    n = abs(rel)
    exact = half // 2
    if n < exact:
        return out + n
    return out + min(half - 1, exact + int(math.log(n / exact) / math.log(max_distance / exact) * (half - exact)))


def check_buckets(out):
    rel, got = numbers(r"bucket\(j - i\) for j - i = (\[[-\d, ]+\]): (\[[\d, ]+\])", out)
    assert ast.literal_eval(got) == [bucket(r) for r in ast.literal_eval(rel)]


def test_tutorial_runs_small_and_draws_its_figures(printed):
    assert "RANDOM weights" in printed  # the reference weights are random, and the tutorial says so
    assert "the reference files in" in printed
    check_causal_vae_lines(printed)
    check_buckets(printed)
    kib = numbers(r"the cache holds (\d+) KiB after 9 frames and (\d+) KiB after 17", printed)
    assert kib[0] == kib[1]  # the cache does not grow with the clip


def test_vae_numbers_are_the_original_codes(printed, reference):
    E, _ = reference
    z0, z2 = numbers(r"z\[0, :4, 0, 0, 0\] = (\[.*?\]) +z\[0, :4, 2, 3, 5\] = (\[.*?\])", printed)
    assert floats(z0) == pytest.approx(E["vae_rt.latent"][:4, 0, 0, 0].tolist(), abs=2e-4)
    assert floats(z2) == pytest.approx(E["vae_rt.latent"][:4, 2, 3, 5].tolist(), abs=2e-4)
    (dec,) = numbers(r"decoded\[0, :, 4, 10, 20\] = (\[.*?\])", printed)
    assert floats(dec) == pytest.approx(E["vae_rt.decoded_raw"][:, 4, 10, 20].tolist(), abs=2e-4)


def test_text_numbers_are_the_original_codes(printed, reference):
    E, settings = reference
    (cleaned,) = numbers(r"cleaned: +(.*)", printed)
    assert cleaned == settings["prompt_cleaned"]
    n, pieces = numbers(r"pieces \((\d+)\): (\[.*\])", printed)
    assert ast.literal_eval(pieces) == settings["prompt_tokens"] and int(n) == len(settings["prompt_tokens"])
    L = int(E["text.prompt.mask"].sum())
    (ids,) = numbers(r"ids: (\[[\d, ]+\])", printed)
    assert ast.literal_eval(ids) == E["text.prompt.ids"][:L].tolist()
    assert f"ids (1, 512): {L} tokens then {512 - L} <pad>; mask: {L} ones then {512 - L} zeros" in printed
    ref = E["t5.prompt.out"].double()
    shape, mean, std, row = numbers(r"T5 output \((\d+, \d+)\): mean ([-\d.]+), std ([-\d.]+), \[0, :4\] = (\[.*?\])",
                                    printed)
    assert ast.literal_eval(f"({shape})") == tuple(ref.shape)
    assert (float(mean), float(std)) == pytest.approx((ref.mean().item(), ref.std().item()), abs=2e-4)
    assert floats(row) == pytest.approx(ref[0, :4].tolist(), abs=2e-4)


def test_viterbi_is_the_best_of_all_segmentations(printed):
    """Every way to cut the word into vocabulary pieces, scored with the tokenizer.json's log-probabilities."""
    vocab = json.loads(shared_path("reference", "wan21-i2v-tiny", "google", "umt5-xxl", "tokenizer.json")
                       .read_text(encoding="utf-8"))["model"]["vocab"]
    score = {p: s for p, s in vocab}
    word, seg, best = numbers(r"best segmentation of '(.+?)': (\[.*?\]) score ([-\d.]+)", printed)
    options = []
    for cuts in itertools.product((0, 1), repeat=len(word) - 1):
        parts, start = [], 0
        for i, cut in enumerate(cuts, 1):
            if cut:
                parts.append(word[start:i])
                start = i
        parts.append(word[start:])
        if all(p in score for p in parts):
            options.append((sum(score[p] for p in parts), parts))
    top, parts = max(options, key=lambda o: o[0])
    assert ast.literal_eval(seg) == parts and float(best) == pytest.approx(top, abs=1e-5)


def test_full_size_parameter_counts_match_the_manifest(printed):
    meta = json.loads(shared_path("reference", "wan-full-keys.json").read_text())["_meta"]
    for name, key in (("Wan2.1 VAE", "vae-2.1"), ("Wan2.2 VAE", "vae-2.2"), ("umT5-XXL encoder", "umt5-xxl-enc")):
        (count,) = numbers(rf"full size {name}: ([\d,]+) parameters", printed)
        assert int(count.replace(",", "")) == meta[key]["params"], name


def test_tutorial_runs_without_shared(tmp_path, monkeypatch):
    """No ../shared (a fresh clone): random tiny models and a tokenizer.json written by the script, said plainly."""
    monkeypatch.setenv("I2V_SHARED", str(tmp_path / "absent"))
    out = run_tutorial("07_video_vae_and_text.py", tmp_path, FIGURES)
    assert "(../shared is absent): a randomly initialised tiny Wan2.1 VAE and umT5" in out
    check_causal_vae_lines(out)
    check_buckets(out)
    n, pieces = numbers(r"pieces \((\d+)\): (\[.*\])", out)
    assert ast.literal_eval(pieces)[-1] == "</s>" and f"ids (1, 512): {n} tokens then {512 - int(n)} <pad>" in out
