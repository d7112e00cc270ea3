"""Text for the text-conditioned models, written here without ``tokenizers``, ``sentencepiece`` or ``transformers``.

- :mod:`.prompt` -- Wan's prompt cleaning (``ftfy.fix_text``, HTML entities, whitespace).
- :mod:`.charsmap` -- SentencePiece's compiled character map (the ``Precompiled`` normaliser, e.g. nmt_nfkc):
  a double-array trie over UTF-8 bytes and the replacement strings it points to.
- :mod:`.tokenizer` -- a Hugging Face ``tokenizer.json`` of a Unigram model (umT5, T5, mT5) read and applied:
  normaliser, Metaspace pre-tokenizer, Viterbi segmentation, special tokens, truncation and padding.

The encoder that consumes the ids is :mod:`i2v.models.encoders.t5`. See docs/text.md.
"""
