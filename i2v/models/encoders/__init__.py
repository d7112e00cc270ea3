"""Encoders shared across families: the CLIP ViT vision tower (OpenCLIP ViT-H/14 for SVD, the XLM-RoBERTa CLIP
ViT-H/14 for Wan: one architecture, two readouts) and the T5 / umT5 text encoder (Wan)."""
