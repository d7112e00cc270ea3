"""Depth Anything V2 (Yang et al. 2024): a DINOv2 ViT encoder and a DPT head, relative inverse depth."""
