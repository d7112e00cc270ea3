"""The diffusion core shared by every model: schedules, preconditioning, samplers, guidance."""

from .denoisers import PARAMETERIZATIONS, Denoiser, Proposal, discrete_timestep, flow_timestep
from .guidance import CFGDenoiser, ImposeKnown, frame_ramp
from .samplers import SAMPLERS, get_sampler, progress_callback
from .schedules import SCHEDULES, get_schedule

__all__ = [
    "Denoiser", "Proposal", "PARAMETERIZATIONS", "discrete_timestep", "flow_timestep", "CFGDenoiser", "ImposeKnown",
    "frame_ramp",
    "SAMPLERS", "get_sampler", "progress_callback", "SCHEDULES", "get_schedule",
]
