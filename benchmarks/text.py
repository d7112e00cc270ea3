"""Benchmark Wan's text path: our umT5 tokenizer against Hugging Face ``tokenizers`` (Rust), and our T5 encoder
against ``transformers.UMT5EncoderModel`` at the same random weights, CPU float32, in one process.

    python benchmarks/text.py [--threads 1] [--repeats 3] [--tokenizer PATH/tokenizer.json]

Printed as ratios (ours / theirs; below 1 is faster), since seconds depend on the machine and its load:
- tokenizer: 200 prompt-like strings of ~60 words, ids only (no padding); the reference tokenizer of the
  tiny Wan cases by default (124 pieces: the real umT5 vocabulary has 256k, which makes Viterbi's dictionary
  look-ups no slower but loading tokenizer.json ~0.5 s longer).
- encoder: a mid-size umT5 (dim 512, 8 heads, 6 layers, ffn 1280), 2 prompts of ~100 and ~60 tokens padded to
  512 as Wan does. transformers runs all 512 positions; ours runs the same and also, as ``encode_prompts`` does,
  only the first max(L) positions (the kept rows are the same).
Needs the test extra (tokenizers, transformers). Run from the repository root (``PYTHONPATH=.`` without an
installed i2v).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TOKENIZER = ROOT.parent / "shared" / "reference" / "wan21-i2v-tiny" / "google" / "umt5-xxl" / "tokenizer.json"


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def prompts(n: int, seed: int = 0) -> list[str]:
    words = ("a slow pan over warm sand, golden light, café-style bokeh, 镜头晃动 色调艳丽 过曝 blurry low quality "
             "the camera follows the dimetrodon as it rests — FULL HD, cinematic, 4k").split()
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(60)) for _ in range(n)]


def bench_tokenizer(path: Path, repeats: int) -> tuple[float, float]:
    import tokenizers

    from i2v.text.tokenizer import Tokenizer

    ours, theirs = Tokenizer.from_file(path), tokenizers.Tokenizer.from_file(str(path))
    texts = prompts(200)
    assert [ours.encode(t) for t in texts] == [e.ids for e in theirs.encode_batch(texts)]
    t_ours = best_of(lambda: [ours.encode(t) for t in texts], repeats)
    t_theirs = best_of(lambda: [theirs.encode(t).ids for t in texts], repeats)  # one at a time, as Wan calls it
    return t_ours, t_theirs


def bench_encoder(repeats: int) -> tuple[float, float, float]:
    import transformers

    from i2v.models.encoders.t5 import T5Encoder

    torch.manual_seed(0)
    cfg = transformers.UMT5Config(vocab_size=1000, d_model=512, d_kv=64, d_ff=1280, num_layers=6, num_heads=8,
                                  feed_forward_proj="gated-gelu", dropout_rate=0.0)
    hf = transformers.UMT5EncoderModel(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = T5Encoder.from_pretrained(d)
    lengths = [100, 60]
    ids = torch.zeros(2, 512, dtype=torch.int64)
    mask = torch.zeros(2, 512, dtype=torch.int64)
    for k, n in enumerate(lengths):
        ids[k, :n] = torch.randint(3, 1000, (n,))
        mask[k, :n] = 1
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        out = ours(ids, mask)
        err = max(((out[k, :n] - ref[k, :n]).norm() / ref[k, :n].norm()).item() for k, n in enumerate(lengths))
        assert err < 1e-4, err
        t_hf = best_of(lambda: hf(input_ids=ids, attention_mask=mask), repeats)
        t_full = best_of(lambda: ours(ids, mask), repeats)
        n = max(lengths)
        t_trim = best_of(lambda: ours(ids[:, :n], mask[:, :n]), repeats)
    return t_full, t_trim, t_hf


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads} (torch.get_num_threads() = {torch.get_num_threads()})")
    if args.tokenizer.is_file():
        mine, theirs = bench_tokenizer(args.tokenizer, args.repeats)
        print(f"tokenizer, 200 prompts: ours {mine * 1e3:.1f} ms, tokenizers {theirs * 1e3:.1f} ms, "
              f"ratio {mine / theirs:.1f}x  ({mine / 200 * 1e3:.2f} ms a prompt)")
    else:
        print(f"tokenizer: skipped ({args.tokenizer} not found; give --tokenizer)")
    full, trim, hf = bench_encoder(args.repeats)
    print(f"encoder, 2 prompts at 512: ours {full * 1e3:.0f} ms, transformers {hf * 1e3:.0f} ms, ratio {full / hf:.2f}x")
    print(f"encoder, trimmed to the longest prompt (encode_prompts): {trim * 1e3:.0f} ms, "
          f"ratio {trim / hf:.2f}x to transformers at 512")


if __name__ == "__main__":
    main()
