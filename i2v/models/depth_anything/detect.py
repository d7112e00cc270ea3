"""Recognising Depth Anything V2 files (no torch): depth_anything_v2_vits/vitb/vitl/vitg.pth."""

from __future__ import annotations

from ..family import Match, count_indexed, has

ENCODERS = {384: "vits", 768: "vitb", 1024: "vitl", 1536: "vitg"}  # embed width -> released encoder


def detect(keys, shapes, metadata) -> Match | None:
    if not has(keys, "pretrained.patch_embed.proj.weight", "pretrained.cls_token", "depth_head.scratch."):
        return None
    width = shapes["pretrained.cls_token"][-1]
    variant = ENCODERS.get(width, f"width {width}")
    return Match("depth-anything-v2", variant, f"Depth Anything V2 ({variant}: DINOv2 ViT + DPT head)",
                 {"width": width, "blocks": count_indexed(keys, "pretrained.blocks.")})


def load(path, match: Match, dtype=None, device="cpu", **options):
    from .model import DepthAnythingV2

    return DepthAnythingV2.from_pretrained(path, dtype=dtype, device=device, **options)
