"""SentencePiece's compiled character map: the ``Precompiled`` normaliser of a Hugging Face ``tokenizer.json``.

A SentencePiece model normalises text before segmenting it, with rules compiled into one binary blob, the
``precompiled_charsmap`` (for T5, mT5 and umT5: *nmt_nfkc*, Unicode NFKC plus a few rules for machine
translation: control characters removed, tab / newline / zero-width and other odd spaces turned into " ").
``tokenizer.json`` stores the blob base64-encoded. Its layout (SentencePiece ``normalizer.cc``; Hugging Face's
``spm_precompiled`` crate reads it the same way)::

    u32 little-endian  trie_size                 bytes of the trie that follows
    u32[trie_size/4]   the trie                  a darts-clone double array over the UTF-8 bytes of the keys
    bytes              the replacements          NUL-terminated UTF-8 strings; a key's value is a byte offset

The double array. Node ``p`` is the 32-bit unit ``units[p]``; a node's children live around its *base*
``b = p ^ offset(units[p])``: the child reached by byte ``c`` is ``b ^ c``, and it is really a child only if its
``label`` equals ``c``. A key ends at a node whose ``has_leaf`` bit is set; the value sits at that node's base
(``b ^ 0``). Unit bits::

    bits 0-7   label      the byte leading to this node (bit 31 is part of the label too: value units have
                          it set, so they never match a byte)
    bit  8     has_leaf   a key ends here
    bit  9     scale      offset is in units of 256
    bits 10-30 offset     ``(unit >> 10) << (8 if scale else 0)``
    (value unit) bits 0-30 the value

How it is applied -- exactly as Hugging Face ``tokenizers`` does it (its ``Precompiled`` normaliser, which the
reference ids and our oracle tests come from). The text is split into extended grapheme clusters (Unicode
UAX #29, ``regex``'s ``\\X``). A cluster shorter than 6 UTF-8 bytes is looked up whole: if *any* prefix of it is a
key, the whole cluster becomes the replacement of the *shortest* such prefix. Otherwise each character is looked
up alone and replaced if it is a key. SentencePiece itself takes the *longest* prefix and consumes only what it
matched; the two differ on rare sequences such as "ª" + U+0300 (nmt_nfkc maps "ª" to "a" and "ª" + U+0300 to
"à": Hugging Face gives "a", dropping the accent, SentencePiece "à"). Wan's ids come from Hugging Face, so we do
the same; the oracle test in tests/test_text.py checks it on such strings.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator

import regex

from ..errors import CheckpointError

LABEL_MASK = (1 << 31) | 0xFF
VALUE_MASK = (1 << 31) - 1
WHOLE_CLUSTER_BYTES = 6  # clusters shorter than this (in UTF-8 bytes) are looked up whole


def _offset(unit: int) -> int:
    return (unit >> 10) << ((unit & (1 << 9)) >> 6)  # bit 9 set: shift by 8


class CharsMap:
    """The compiled map of one tokenizer: ``CharsMap(blob)`` with the raw (base64-decoded) bytes."""

    def __init__(self, blob: bytes, source: str = "precompiled_charsmap"):
        if len(blob) < 4:
            raise CheckpointError(f"{source}: a Precompiled charsmap of {len(blob)} bytes (expected a u32 trie size "
                                  "followed by the trie); the tokenizer.json is damaged")
        (trie_size,) = struct.unpack_from("<I", blob, 0)
        if trie_size % 4 or 4 + trie_size > len(blob) or trie_size == 0:
            raise CheckpointError(f"{source}: Precompiled charsmap says its trie has {trie_size} bytes but the blob "
                                  f"holds {len(blob) - 4}; the tokenizer.json is damaged")
        self.units = array("I")
        if self.units.itemsize != 4:  # pragma: no cover - every platform torch runs on has a 4-byte "I"
            self.units = array("L")
        self.units.frombytes(blob[4:4 + trie_size])
        if struct.pack("=I", 1) != struct.pack("<I", 1):  # pragma: no cover - big-endian hosts
            self.units.byteswap()
        self.replacements = blob[4 + trie_size:]
        self._decoded: dict[int, str] = {}

    # -- the trie ------------------------------------------------------------------------------------------------
    def shortest_match(self, key: bytes) -> int | None:
        """The value of the shortest trie key that is a prefix of ``key`` (None if none is). A NUL byte ends the
        search, as in the original (keys never contain NUL)."""
        units, n = self.units, len(self.units)
        pos = _offset(units[0])  # the root's base
        for c in key:
            if c == 0:
                break
            pos ^= c  # the would-be child for byte c
            if pos >= n or (units[pos] & LABEL_MASK) != c:
                return None
            unit = units[pos]
            pos ^= _offset(unit)  # this node's base: its children, and its value when a key ends here
            if (unit >> 8) & 1:
                return units[pos] & VALUE_MASK
        return None

    def replacement(self, text: str) -> str | None:
        """What ``text`` (or rather its shortest prefix that is a key) is replaced by, or None."""
        value = self.shortest_match(text.encode("utf-8", "surrogatepass"))
        if value is None:
            return None
        if value not in self._decoded:
            end = self.replacements.find(b"\0", value)
            self._decoded[value] = self.replacements[value:end if end >= 0 else None].decode("utf-8")
        return self._decoded[value]

    def entries(self) -> Iterator[tuple[str, str]]:
        """Every (key, replacement) pair of the map, by walking the whole trie (for inspection and docs)."""
        units, n = self.units, len(self.units)
        stack = [(_offset(units[0]), b"")]
        while stack:
            base, prefix = stack.pop()
            for c in range(1, 256):
                pos = base ^ c
                if pos >= n or (units[pos] & LABEL_MASK) != c:
                    continue
                unit = units[pos]
                child_base = pos ^ _offset(unit)
                key = prefix + bytes([c])
                if (unit >> 8) & 1:
                    value = units[child_base] & VALUE_MASK
                    end = self.replacements.find(b"\0", value)
                    yield key.decode("utf-8", "replace"), self.replacements[value:end].decode("utf-8")
                stack.append((child_base, key))

    # -- the normaliser --------------------------------------------------------------------------------------------
    def normalize(self, text: str) -> str:
        """Apply the map as Hugging Face ``tokenizers`` does (see the module docstring)."""
        out = []
        for cluster in regex.findall(r"\X", text):
            if len(cluster.encode("utf-8", "surrogatepass")) < WHOLE_CLUSTER_BYTES:
                whole = self.replacement(cluster)
                if whole is not None:
                    out.append(whole)
                    continue
            for ch in cluster:
                r = self.replacement(ch)
                out.append(ch if r is None else r)
        return "".join(out)
