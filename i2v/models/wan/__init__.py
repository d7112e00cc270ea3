"""Wan2.1 / Wan2.2 (Wan-Video): the Wan DiT, the causal 3D VAEs (2.1: 4x8x8 to 16 channels; 2.2: 4x16x16 to 48),
and the pipelines' loaders. The shared encoders (umT5, the XLM-R CLIP vision tower) live in ``models/encoders/``.
``detect.py`` recognises every Wan file layout without importing torch."""
