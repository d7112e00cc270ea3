"""Frame interpolation: make clips smoother and longer, loops seamless, dropped frames whole.

- :func:`interpolate_frames` (clip level: factor or target fps, scene cuts, duplicates, loops),
- :mod:`.flow_based` (DIS flow, intermediate flows, occlusion-aware blending; no weights),
- :mod:`.rife` (RIFE 4.25 from a released flownet.pkl; the network is :mod:`i2v.models.rife`).
"""

from .video import METHODS, interpolate_frames, is_scene_cut, output_times  # noqa: F401
