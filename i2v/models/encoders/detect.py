"""Recognising encoder files (no torch): CLIP vision towers and T5 / umT5 text encoders, in the layouts released."""

from __future__ import annotations

from ..family import Match, count_indexed, has


def detect_clip(keys, shapes, metadata) -> Match | None:
    if has(keys, "embeddings.patch_embedding.", "encoder.layers.0.self_attn.", "pre_layrnorm."):
        # transformers >= 5 saves CLIPVisionModel without its "vision_model." prefix
        keys = {f"vision_model.{k}" for k in keys}
        shapes = {f"vision_model.{k}": v for k, v in shapes.items()}
    if has(keys, "vision_model.embeddings.patch_embedding.") and (
            has(keys, "visual_projection.") or has(keys, "vision_model.encoder.layers.0.")):
        width = shapes["vision_model.embeddings.patch_embedding.weight"][0]
        proj = "with" if has(keys, "visual_projection.") else "without"
        return Match("clip-vision", "transformers",
                     f"CLIP vision tower in transformers layout ({proj} projection; SVD's image_encoder/)",
                     {"width": width, "layers": count_indexed(keys, "vision_model.encoder.layers.")})
    if has(keys, "visual.patch_embedding.weight", "visual.cls_embedding", "visual.transformer."):
        width = shapes["visual.patch_embedding.weight"][0]
        text = " + XLM-RoBERTa text tower (unused)" if has(keys, "textual.") else ""
        return Match("clip-vision", "xlm-roberta-vit-h",
                     f"Wan's open-clip xlm-roberta-large-vit-huge-14 CLIP (vision tower{text})",
                     {"width": width, "layers": count_indexed(keys, "visual.transformer."),
                      "tokens": shapes["visual.pos_embedding"][1]})
    return None


def detect_t5(keys, shapes, metadata) -> Match | None:
    if has(keys, "token_embedding.weight", "blocks.0.attn.q.weight", "blocks.0.ffn.gate.0.weight"):
        per_layer = "blocks.0.pos_embedding.embedding.weight" in keys
        variant = "umt5" if per_layer else "t5-v1.1"
        vocab, dim = shapes["token_embedding.weight"]
        return Match("t5", variant, f"{'umT5' if per_layer else 'T5 v1.1'} encoder in Wan's layout "
                     f"({'relative position bias per layer' if per_layer else 'one shared position bias'})",
                     {"dim": dim, "vocab": vocab, "layers": count_indexed(keys, "blocks.")})
    if has(keys, "shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight"):
        per_layer = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in keys
        variant = "hf-umt5" if per_layer else "hf-t5"
        vocab, dim = shapes["shared.weight"]
        return Match("t5", variant, f"{'UMT5' if per_layer else 'T5'}EncoderModel in Hugging Face layout",
                     {"dim": dim, "vocab": vocab, "layers": count_indexed(keys, "encoder.block.")})
    return None


def load_clip(path, match: Match, dtype=None, device="cpu", **options):
    from .clip_vision import ClipVision

    return ClipVision.from_pretrained(path, dtype=dtype, device=device, **options)


def load_t5(path, match: Match, dtype=None, device="cpu", **options):
    from .t5 import T5Encoder

    return T5Encoder.from_pretrained(path, dtype=dtype, device=device, **options)
