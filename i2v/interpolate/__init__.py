"""Frame interpolation: make clips smoother and longer, loops seamless, dropped frames whole.

- :func:`interpolate_frames` (clip level: factor or target fps, scene cuts, duplicates, loops; :mod:`.video`),
- :mod:`.flow_based` (DIS flow, intermediate flows, occlusion-aware blending; no weights),
- :mod:`.rife` (RIFE 4.25 from a released flownet.pkl; the network is :mod:`i2v.models.rife.ifnet`).

``from i2v.interpolate import interpolate_frames`` works; the torch-using names load on first use, so the command
line can list :data:`METHODS` without torch.
"""

METHODS = ("flow", "rife")  # flow: DIS optical flow, no weights; rife: RIFE 4.25, needs its flownet.pkl

_LAZY = {"interpolate_frames", "is_scene_cut", "output_times"}  # defined in .video


def __getattr__(name: str):
    if name in _LAZY:
        from . import video

        return getattr(video, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
