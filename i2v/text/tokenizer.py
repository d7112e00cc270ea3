"""A Unigram tokenizer read from a Hugging Face ``tokenizer.json`` (umT5, T5 v1.1, mT5), written from the file format.

Wan's text encoder reads token ids made by ``transformers.AutoTokenizer("google/umt5-xxl")``, i.e. by the Rust
``tokenizers`` library running the pipeline that ``tokenizer.json`` describes. This file runs the same pipeline
in plain Python, stage by stage::

    text ─► split off added tokens ("</s>", "<extra_id_0>", ... matched in the raw text, longest first)
         ─► normaliser   Precompiled charsmap (nmt_nfkc, :mod:`.charsmap`), then Replace(" {2,}" -> " ")
         ─► pre-tokenizer Metaspace: " " -> "▁", "▁" prepended (prepend_scheme "always"), split before each "▁"
         ─► model        Unigram: the most probable segmentation of each piece (Viterbi, below)
         ─► template     "$A </s>": the end-of-sequence id appended
         ─► truncation to ``length`` (the last slot stays </s>) and right padding with <pad>

The Unigram model (Kudo 2018, "Subword Regularization", arXiv:1804.10959): every vocabulary piece x has a
log-probability score s(x); a word w is split into the pieces x_1..x_k (concatenating to w) that maximise
sum_i s(x_i). Viterbi over the character positions of w::

    best[0] = 0
    best[j] = max over pieces x = w[i:j] of  best[i] + s(x)        (j = 1..len(w), i < j)

visiting i in increasing order and, for each i, the pieces starting there in increasing length; a candidate
replaces the current best only if strictly greater (so ties keep the first found, as the original does). A
character no single-character piece covers gets the unknown piece with score min_x s(x) - 10, and runs of
unknown pieces are fused into one ``<unk>`` (or spelt as ``<0xNN>`` byte pieces when ``byte_fallback`` is set).
This is Hugging Face's ``Unigram::encode_optimized`` (itself SentencePiece's ``unigram_model.cc``).

Supported ``tokenizer.json`` components (anything else is refused with the name of what was found):
normalizers Precompiled, Replace, NFC/NFD/NFKC/NFKD, Lowercase, Strip, Prepend, Sequence; pre-tokenizers
Metaspace, WhitespaceSplit, Sequence; post-processor TemplateProcessing (or none); model Unigram; added tokens
with their lstrip / rstrip / single_word / normalized options.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointError, InputError
from .charsmap import CharsMap

UNK_PENALTY = 10.0  # the unknown piece scores min(s) - 10 (K_UNK_PENALTY in the original)
# Unicode White_Space, what Rust's char::is_whitespace and regex \s mean (Python's str.isspace adds U+001C..1F)
WHITE_SPACE_CHARS = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
                     + "\u2028\u2029\u202f\u205f\u3000")
WHITE_SPACE = re.compile(f"[{WHITE_SPACE_CHARS}]+")


class TruncationWarning(UserWarning):
    """A text had more tokens than the encoder's length: the tail was dropped (the tokenizer says how many)."""


@dataclass(frozen=True)
class AddedToken:
    """An entry of ``added_tokens``: matched in the text before anything else and given its id directly."""

    id: int
    content: str
    special: bool = True
    normalized: bool = False  # matched in the normalised text (True) or the raw text (False: umT5's special tokens)
    lstrip: bool = False  # the match takes the whitespace before it
    rstrip: bool = False  # ... and after it
    single_word: bool = False  # matched only when no word character touches it


@dataclass
class TokenBatch:
    """Token ids of several texts, padded to one length (what the text encoder takes)."""

    ids: "torch.Tensor"  # (b, length) int64: the tokens, the template's </s>, then <pad>
    mask: "torch.Tensor"  # (b, length) int64: 1 on tokens (</s> included), 0 on padding
    lengths: list[int]  # true length of each text (= mask.sum(1))
    dropped: list[int] = field(default_factory=list)  # tokens cut off each text by truncation (0: none)


# ------------------------------------------------------------------------------------------------ pipeline parts

def _normalizer(spec: dict | None, source: str) -> list[Callable[[str], str]]:
    """The normaliser of ``tokenizer.json`` as a list of str -> str steps."""
    if spec is None:
        return []
    kind = spec.get("type")
    if kind == "Sequence":
        return [step for s in spec["normalizers"] for step in _normalizer(s, source)]
    if kind == "Precompiled":
        blob = spec.get("precompiled_charsmap")
        return [CharsMap(base64.b64decode(blob), source).normalize] if blob else []
    if kind == "Replace":
        pattern, content = spec["pattern"], spec["content"]
        if "Regex" in pattern:  # the original uses Oniguruma; Python's re agrees on the patterns tokenizers ship
            rx = re.compile(pattern["Regex"])
            return [lambda s: rx.sub(lambda m: content, s)]
        literal = pattern["String"]
        return [lambda s: s.replace(literal, content)]
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        return [lambda s: unicodedata.normalize(kind, s)]
    if kind == "Lowercase":
        return [str.lower]
    if kind == "Strip":
        left, right = spec.get("strip_left", True), spec.get("strip_right", True)
        return [lambda s: (s.lstrip() if left else s).rstrip() if right else (s.lstrip() if left else s)]
    if kind == "Prepend":
        prefix = spec["prepend"]
        return [lambda s: prefix + s if s else s]
    raise CheckpointError(f"{source}: normalizer {kind!r} is not supported (i2v reads Precompiled, Replace, NFC/NFD/"
                          "NFKC/NFKD, Lowercase, Strip, Prepend and Sequence, what T5-family tokenizers use)")


@dataclass(frozen=True)
class _Metaspace:
    """" " -> "▁", "▁" prepended ("always": to every piece; "first": to the piece at the start of the text;
    "never"), then each piece split before every "▁" (when ``split``)."""

    replacement: str = "\u2581"
    prepend_scheme: str = "always"
    split: bool = True

    def __call__(self, piece: str, offset: int) -> list[tuple[str, int]]:
        piece = piece.replace(" ", self.replacement)
        if piece and not piece.startswith(self.replacement) and (
                self.prepend_scheme == "always" or (self.prepend_scheme == "first" and offset == 0)):
            piece = self.replacement + piece
        if not self.split:
            return [(piece, offset)] if piece else []
        cuts = [i for i, ch in enumerate(piece) if ch == self.replacement and i > 0]
        return [(piece[a:b], offset + a) for a, b in zip([0, *cuts], [*cuts, len(piece)]) if b > a]


def _pre_tokenizer(spec: dict | None, source: str) -> list:
    """The pre-tokenizer as a list of steps (piece, offset in the text) -> [(piece, offset), ...]."""
    if spec is None:
        return []
    kind = spec.get("type")
    if kind == "Sequence":
        return [step for s in spec["pretokenizers"] for step in _pre_tokenizer(s, source)]
    if kind == "Metaspace":
        scheme = spec.get("prepend_scheme")
        if scheme is None:  # older files: add_prefix_space true/false
            scheme = "always" if spec.get("add_prefix_space", True) else "never"
        if scheme not in ("always", "first", "never"):
            raise CheckpointError(f"{source}: Metaspace prepend_scheme {scheme!r} (expected always, first or never)")
        return [_Metaspace(spec.get("replacement", "\u2581"), scheme, spec.get("split", True))]
    if kind == "WhitespaceSplit":
        return [_whitespace_split]
    raise CheckpointError(f"{source}: pre-tokenizer {kind!r} is not supported (i2v reads Metaspace, WhitespaceSplit "
                          "and Sequence, what SentencePiece-converted tokenizers use)")


def _whitespace_split(piece: str, offset: int) -> list[tuple[str, int]]:
    """Words between runs of whitespace (the whitespace dropped)."""
    return [(m.group(), offset + m.start()) for m in re.finditer("[^ ]+", WHITE_SPACE.sub(" ", piece))]


def _template(spec: dict | None, source: str) -> list[int | None]:
    """The single-sequence template as a list: None where the text goes, else a special token id."""
    if spec is None:
        return [None]
    if spec.get("type") != "TemplateProcessing":
        raise CheckpointError(f"{source}: post-processor {spec.get('type')!r} is not supported (i2v reads "
                              "TemplateProcessing, e.g. T5's '$A </s>')")
    out: list[int | None] = []
    for item in spec["single"]:
        if "Sequence" in item:
            out.append(None)
        else:
            out.extend(spec["special_tokens"][item["SpecialToken"]["id"]]["ids"])
    return out


def _added_tokens(entries: list[dict], vocab: list, source: str) -> list[AddedToken]:
    """The added tokens with the ids Hugging Face gives them: a token that is also a piece keeps the piece's id,
    the others are numbered from the vocabulary size on, in file order. The ``id`` written in the file is not
    used (as in ``tokenizers``); a file where it differs gets a warning."""
    index = {p: i for i, (p, _) in enumerate(vocab)}
    out, next_id, moved = [], len(vocab), []
    for t in entries:
        if not t["content"]:
            continue
        if t["content"] in index:
            token_id = index[t["content"]]
        else:
            token_id, next_id = next_id, next_id + 1
        if t.get("id", token_id) != token_id:
            moved.append(f"{t['content']!r} says id {t['id']} but is given {token_id}")
        out.append(AddedToken(token_id, t["content"], t.get("special", False), t.get("normalized", False),
                              t.get("lstrip", False), t.get("rstrip", False), t.get("single_word", False)))
    if moved:
        warnings.warn(f"{source}: added token {', '.join(moved)} (ids follow the vocabulary, as in Hugging Face "
                      "tokenizers); the file's ids are inconsistent", stacklevel=3)
    return out


# ------------------------------------------------------------------------------------------------ the tokenizer

class Tokenizer:
    """A Unigram ``tokenizer.json``: ``Tokenizer.from_file(path)`` (the file, or a folder holding it, such as
    Wan's ``google/umt5-xxl/``); then :meth:`encode_batch` (ids + mask, padded) or :meth:`encode` / :meth:`tokenize`."""

    def __init__(self, pieces: Sequence[tuple[str, float]], *, unk_id: int | None, byte_fallback: bool = False,
                 normalizer: Sequence[Callable[[str], str]] = (), pre_tokenizer: Sequence = (),
                 template: Sequence[int | None] = (None,), added_tokens: Sequence[AddedToken] = (),
                 pad_token: str = "<pad>", source: str = "tokenizer"):
        self.source = source
        self.pieces = list(pieces)
        if not self.pieces:
            raise CheckpointError(f"{source}: the Unigram vocabulary is empty")
        self.vocab = {piece: (i, score) for i, (piece, score) in enumerate(self.pieces)}  # a later duplicate wins
        self.unk_id, self.byte_fallback = unk_id, byte_fallback
        self.unk_score = min(score for _, score in self.pieces) - UNK_PENALTY
        self.longest = {}  # first character -> length of the longest piece starting with it (bounds the search)
        for piece in self.vocab:
            if piece:
                self.longest[piece[0]] = max(self.longest.get(piece[0], 0), len(piece))
        self.normalizer, self.pre_tokenizer, self.template = list(normalizer), list(pre_tokenizer), list(template)
        self.added = {t.content: t for t in added_tokens}
        self._raw_added = {t.content: t for t in added_tokens if not t.normalized}  # matched in the raw text
        self._normalized_added = {self.normalize(t.content): t for t in added_tokens if t.normalized}
        self._raw_matcher = self._matcher(self._raw_added)
        self._normalized_matcher = self._matcher(self._normalized_added)
        self.id_to_token = {i: piece for i, (piece, _) in enumerate(self.pieces)}
        self.id_to_token |= {t.id: t.content for t in added_tokens}
        self.pad_id = self.token_id(pad_token)

    @classmethod
    def from_file(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise CheckpointError(f"{path}: no tokenizer.json here (Wan's is in the model folder under "
                                  "google/umt5-xxl/; give that folder or the file)")
        try:
            spec = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{file}: not a readable tokenizer.json ({e})") from None
        source = str(file)
        model = spec.get("model") or {}
        if model.get("type") != "Unigram":
            raise CheckpointError(f"{file}: a {model.get('type', 'unknown')} tokenizer; i2v reads Unigram "
                                  "tokenizer.json files (SentencePiece models: umT5, T5, mT5), not BPE or WordPiece. "
                                  "Is this the tokenizer of another model?")
        added = _added_tokens(spec.get("added_tokens", []), model["vocab"], source)
        pad = "<pad>"
        special_map = folder / "special_tokens_map.json"
        if special_map.is_file():
            value = json.loads(special_map.read_text(encoding="utf-8")).get("pad_token", pad)
            pad = value["content"] if isinstance(value, dict) else value
        return cls([(p, float(s)) for p, s in model["vocab"]], unk_id=model.get("unk_id"),
                   byte_fallback=bool(model.get("byte_fallback", False)),
                   normalizer=_normalizer(spec.get("normalizer"), source),
                   pre_tokenizer=_pre_tokenizer(spec.get("pre_tokenizer"), source),
                   template=_template(spec.get("post_processor"), source), added_tokens=added, pad_token=pad,
                   source=source)

    def __repr__(self) -> str:
        return f"Tokenizer({self.source!r}, {len(self.pieces)} pieces, {len(self.added)} added tokens)"

    def token_id(self, token: str) -> int | None:
        """The id of a piece or added token (None if the vocabulary has neither)."""
        if token in self.added:
            return self.added[token].id
        return self.vocab[token][0] if token in self.vocab else None

    # -- stages ------------------------------------------------------------------------------------------------
    def normalize(self, text: str) -> str:
        for step in self.normalizer:
            text = step(text)
        return text

    @staticmethod
    def _matcher(tokens: dict[str, AddedToken]):
        """One regex for all added tokens: at each position the longest one wins (tried first)."""
        contents = sorted((c for c in tokens if c), key=len, reverse=True)
        return re.compile("|".join(map(re.escape, contents))) if contents else None

    def _split_added(self, text: str, matcher, tokens: dict[str, AddedToken]) -> list[tuple[str, int | None, int]]:
        """Cut ``text`` around added tokens: (text, None, offset) for plain parts, (token, id, offset) for tokens.
        ``single_word`` tokens touching a word character are not matches; ``lstrip`` / ``rstrip`` ones take the
        whitespace beside them (as ``tokenizers``' ``find_matches``)."""
        if matcher is None:
            return [(text, None, 0)] if text else []
        out, at = [], 0
        for m in matcher.finditer(text):
            token, start, stop = tokens[m.group()], m.start(), m.end()
            if start < at:
                continue
            if token.single_word and (re.search(r"\w$", text[:start]) or re.match(r"\w", text[stop:])):
                continue
            if token.lstrip:
                start = max(at, len(text[:start].rstrip(WHITE_SPACE_CHARS)))
            if token.rstrip:
                stop = len(text) - len(text[stop:].lstrip(WHITE_SPACE_CHARS))
            if start > at:
                out.append((text[at:start], None, at))
            out.append((token.content, token.id, start))
            at = stop
        if at < len(text):
            out.append((text[at:], None, at))
        return out

    def viterbi(self, word: str) -> list[tuple[str, int]]:
        """The best segmentation of one pre-token into (piece, id) pairs (see the module docstring)."""
        n = len(word)
        best = [0.0] * (n + 1)  # best[j]: score of the best segmentation of word[:j]
        start_of: list[int | None] = [None] * (n + 1)  # where the last piece of that segmentation starts
        id_of = [0] * (n + 1)  # ... and its id
        for i in range(n):
            single = False
            for j in range(i + 1, min(n, i + self.longest.get(word[i], 0)) + 1):  # pieces word[i:j], shortest first
                hit = self.vocab.get(word[i:j])
                if hit is None:
                    continue
                candidate = hit[1] + best[i]
                if start_of[j] is None or candidate > best[j]:
                    best[j], start_of[j], id_of[j] = candidate, i, hit[0]
                single = single or j == i + 1
            if not single:  # no piece for this character: the unknown piece
                if self.unk_id is None:
                    raise InputError(f"{self.source}: {word[i]!r} has no piece and the tokenizer defines no <unk>")
                candidate = self.unk_score + best[i]
                if start_of[i + 1] is None or candidate > best[i + 1]:
                    best[i + 1], start_of[i + 1], id_of[i + 1] = candidate, i, self.unk_id
        pieces: list[str] = []  # back from the end; consecutive unknown pieces fused into one
        unknown, j = "", n
        while j > 0:
            i = start_of[j]
            if id_of[j] == self.unk_id:
                unknown = word[i:j] + unknown
            else:
                if unknown:
                    pieces.append(unknown)
                    unknown = ""
                pieces.append(word[i:j])
            j = i
        if unknown:
            pieces.append(unknown)
        out = []
        for piece in reversed(pieces):
            if piece in self.vocab:
                out.append((piece, self.vocab[piece][0]))
            elif self.byte_fallback and all(f"<0x{b:02X}>" in self.vocab for b in piece.encode()):
                out.extend((f"<0x{b:02X}>", self.vocab[f"<0x{b:02X}>"][0]) for b in piece.encode())
            else:
                out.append((piece, self.unk_id))
        return out

    def tokenize_with_ids(self, text: str) -> list[tuple[str, int]]:
        """(token, id) pairs of ``text``, without the template's special tokens."""
        out: list[tuple[str, int]] = []
        for part, token_id, offset in self._split_added(text, self._raw_matcher, self._raw_added):
            if token_id is not None:
                out.append((part, token_id))
                continue
            normalized = self.normalize(part)
            subs = self._split_added(normalized, self._normalized_matcher, self._normalized_added)
            for sub, sub_id, sub_offset in subs:
                if sub_id is not None:
                    out.append((sub, sub_id))
                    continue
                pieces = [(sub, offset + sub_offset)]
                for step in self.pre_tokenizer:
                    pieces = [q for p, at in pieces for q in step(p, at)]
                for piece, _ in pieces:
                    out.extend(self.viterbi(piece))
        return out

    def tokenize(self, text: str) -> list[str]:
        """The tokens of ``text`` as strings (pieces like "▁wa"), without special tokens."""
        return [t for t, _ in self.tokenize_with_ids(text)]

    def encode(self, text: str, *, max_length: int | None = None) -> list[int]:
        """Token ids with the template applied (umT5: ``... </s>``). ``max_length``: truncate the text's tokens so
        that the result fits, keeping the special tokens (as ``transformers`` does with ``truncation=True``)."""
        ids = [i for _, i in self.tokenize_with_ids(text)]
        if max_length is not None:
            room = max_length - sum(1 for t in self.template if t is not None)
            if room < 0:
                raise InputError(f"max_length {max_length} leaves no room for the template's special tokens")
            ids = ids[:room]
        return [i for t in self.template for i in (ids if t is None else [t])]

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids back to text, as the Metaspace decoder: special tokens and padding left out, "▁" -> " ",
        except in the first token, where the "▁"s the pre-tokenizer prepended are dropped."""
        special = {t.id for t in self.added.values() if t.special}
        tokens = [self.id_to_token.get(int(i), "") for i in ids if int(i) not in special]
        meta = next((s for s in self.pre_tokenizer if isinstance(s, _Metaspace)), _Metaspace(prepend_scheme="never"))
        return "".join(t.replace(meta.replacement, "" if k == 0 and meta.prepend_scheme != "never" else " ")
                       for k, t in enumerate(tokens))

    def encode_batch(self, texts: str | Sequence[str], length: int = 512, *, stacklevel: int = 2) -> TokenBatch:
        """Ids and attention mask of each text, truncated and right-padded to ``length`` -- what Wan's
        ``HuggingfaceTokenizer(seq_len=512)`` returns. A text longer than ``length`` keeps its first
        ``length - 1`` tokens and ``</s>``, like the original; a :class:`TruncationWarning` says so
        (``stacklevel``: whose line the warning names, as in :func:`warnings.warn`)."""
        import torch

        if isinstance(texts, str):
            texts = [texts]
        if self.pad_id is None:
            raise CheckpointError(f"{self.source}: no padding token in the vocabulary (expected <pad>)")
        rows, dropped = [], []
        for k, text in enumerate(texts):
            full = self.encode(text)
            ids = self.encode(text, max_length=length) if len(full) > length else full
            rows.append(ids)
            dropped.append(len(full) - len(ids))
            if dropped[-1]:
                special = sum(t is not None for t in self.template)
                warnings.warn(f"text {k} has {len(full)} tokens, more than the {length} the text encoder reads: kept "
                              f"the first {len(ids) - special} and the end token, as Wan does "
                              f"({dropped[-1]} tokens dropped); shorten it to keep its end", TruncationWarning,
                              stacklevel=stacklevel)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(rows), length), dtype=torch.int64)
        for k, row in enumerate(rows):
            ids[k, :len(row)] = torch.tensor(row, dtype=torch.int64)
            mask[k, :len(row)] = 1
        return TokenBatch(ids, mask, [len(r) for r in rows], dropped)
