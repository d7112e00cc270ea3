"""The diffusion core shared by every model: schedules, preconditioning, samplers, guidance.

``from i2v.diffusion import Denoiser, get_sampler`` works; these names are imported on first use (they need
torch), so the command line can read :mod:`.catalog` -- the sampler and schedule names -- without torch.
"""

# name -> submodule that defines it; an explicit table, resolved in __getattr__
_LAZY = {
    "Denoiser": "denoisers", "Proposal": "denoisers", "PARAMETERIZATIONS": "denoisers", "discrete_timestep": "denoisers",
    "flow_timestep": "denoisers",
    "CFGDenoiser": "guidance", "ImposeKnown": "guidance", "frame_ramp": "guidance",
    "SAMPLERS": "samplers", "get_sampler": "samplers", "progress_callback": "samplers",
    "SCHEDULES": "schedules", "get_schedule": "schedules",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
