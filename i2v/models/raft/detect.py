"""Recognising RAFT files (no torch), with or without the ``module.`` prefix (the registry strips it)."""

from __future__ import annotations

from ..family import Match, has


def detect(keys, shapes, metadata) -> Match | None:
    if not has(keys, "fnet.conv1.", "cnet.conv1.", "update_block.flow_head."):
        return None
    if has(keys, "update_block.mask."):
        return Match("raft", "large", "RAFT optical flow, full model with convex upsampling "
                     "(raft-things.pth, raft-sintel.pth, raft-kitti.pth, raft-chairs.pth)",
                     {"feature_dim": shapes["fnet.conv2.weight"][0] if "fnet.conv2.weight" in shapes else None})
    return Match("raft", "small", "RAFT optical flow, small model (raft-small.pth)",
                 {"feature_dim": shapes["fnet.conv2.weight"][0] if "fnet.conv2.weight" in shapes else None})


def load(path, match: Match, dtype=None, device="cpu", **options):
    from .raft import RAFT

    return RAFT.from_pretrained(path, dtype=dtype, device=device, **options)
