"""Wan's prompt cleaning, applied to every prompt (and negative prompt) before tokenizing.

Original: Wan-Video/Wan2.1 ``wan/modules/tokenizers.py``, ``HuggingfaceTokenizer(clean='whitespace')``::

    basic_clean(text)      = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    whitespace_clean(text) = regex.sub(r"\\s+", " ", text).strip()
    clean = whitespace_clean(basic_clean(text))

``ftfy.fix_text`` repairs mojibake ("cafÃ©" -> "café"), turns curly quotes into straight ones, fullwidth and
other compatibility characters into their plain forms (NFKC-like, through its ``uncurl_quotes`` and
``fix_character_width`` fixes), removes control characters and normalises to NFC. It is a dependency of i2v
(pure Python, small) because its heuristics (the mojibake detector in particular) are large and would
otherwise be re-implemented only to drift. ``html.unescape`` twice turns "&amp;amp;" into "&".

Whitespace: the original uses the third-party ``regex`` module, whose ``\\s`` is the Unicode White_Space
property; Python's ``re`` would also match U+001C..U+001F, so we spell the class out (they agree on every
string ``ftfy`` can return, which has no control characters).
"""

from __future__ import annotations

import html
import re

import ftfy

# Unicode White_Space (what regex's \s matches): \t \n \v \f \r, space, NEL, NBSP, ogham space, U+2000..U+200A,
# line / paragraph separators, narrow NBSP, medium mathematical space, ideographic space
WHITESPACE = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


def basic_clean(text: str) -> str:
    """``ftfy.fix_text``, then HTML entities decoded twice, then strip."""
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def whitespace_clean(text: str) -> str:
    """Every run of whitespace becomes one space; strip."""
    return WHITESPACE.sub(" ", text).strip()


def clean_prompt(text: str) -> str:
    """Wan's cleaning of a prompt: :func:`whitespace_clean` of :func:`basic_clean`."""
    return whitespace_clean(basic_clean(text))
