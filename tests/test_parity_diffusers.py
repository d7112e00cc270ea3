"""Parity of our samplers with an independent implementation: diffusers' schedulers (a test extra, imported
here only; the i2v package never imports diffusers).

Both sides run the same epsilon network from the same starting noise and (for stochastic samplers) the same
fresh noise, and must agree at EVERY step to 1e-5 relative. Our samplers are fed the scheduler's own sigmas.

Conventions that make the comparison exact:
- The network ``eps_model(x_in)`` depends only on its scaled input ``x_in``, so the two libraries' different
  timestep conventions (diffusers passes a training timestep, we pass sigma) cannot matter; the dependence
  on sigma enters only through the input scaling c_in = 1/sqrt(sigma^2 + 1), which both sides apply.
- The k-diffusion-style schedulers (Euler, Euler ancestral, Heun, KDPM2, LMS) keep the state in
  variance-exploding form x = x0 + sigma eps, as we do. DPM-Solver++, DDIM and DDPM keep the
  variance-preserving state z = x / sqrt(1 + sigma^2); we convert with that factor. Flow matching uses
  x = (1 - sigma) x0 + sigma eps on both sides, with a velocity network.
- "Relative" means max |ours - diffusers| <= 1e-5 * max |diffusers| for the state after each step.
- diffusers' Euler-family schedulers compute in float32, so 1e-5 is close to what float32 allows over
  a few dozen steps; our side runs in float64.
"""

from __future__ import annotations

import pytest
import torch

from i2v.diffusion import Denoiser, get_sampler

diffusers = pytest.importorskip("diffusers", reason="parity tests need the test extra: pip install -e '.[test]'")


RTOL = 1e-5
SHAPE = (2, 3, 8, 8)
SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)


def eps_model(x_in, c_noise=None, **cond):
    """A fixed nonlinear 'network': eps depends on the scaled input only (and mixes pixels so the
    batch/channel layout matters)."""
    x_in = x_in.to(torch.float64)
    mixed = 0.6 * torch.tanh(1.3 * x_in) + 0.25 * x_in.roll(1, dims=-1) - 0.1 * x_in.mean(dim=1, keepdim=True) + 0.05
    return mixed


def assert_close_rel(ours, theirs, what):
    ours, theirs = ours.to(torch.float64), theirs.to(torch.float64)
    err = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    assert err <= RTOL * scale, f"{what}: max |ours - diffusers| = {err:.3g} > {RTOL} * {scale:.3g}"


def initial_noise(seed=0):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def ours_trajectory(name, sigmas, x, **kwargs):
    """Run our sampler; return the list of states after each step (VE form)."""
    states = []
    get_sampler(name)(Denoiser(eps_model, "eps"), x, sigmas, callback=lambda info: states.append(info["x"].clone()),
                      **kwargs)
    return states


def pairs(ours, theirs):
    """The two trajectories step by step; they must have the same, non-zero number of steps (a loop over a
    shorter list, or an empty one, would compare nothing)."""
    assert len(ours) == len(theirs) > 0, f"{len(ours)} states of ours vs {len(theirs)} of diffusers"
    return zip(ours, theirs, strict=True)


def diffusers_trajectory(sched, sample, step_kwargs=lambda i: {}, keep=lambda sched, i: True):
    """Run a diffusers scheduler loop; return the states after each kept step."""
    states = []
    for i, t in enumerate(sched.timesteps):
        model_in = sched.scale_model_input(sample, t)
        sample = sched.step(eps_model(model_in).to(sample.dtype), t, sample, **step_kwargs(i)).prev_sample
        if keep(sched, i):
            states.append(sample.clone())
    return states


@pytest.mark.parametrize("steps", [7, 25])
@pytest.mark.parametrize("name, cls", [("euler", "EulerDiscreteScheduler"), ("lms", "LMSDiscreteScheduler")])
def test_ve_deterministic(name, cls, steps):
    sched = getattr(diffusers, cls)(**SD_BETAS)
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.to(torch.float64)
    assert len(sigmas) == steps + 1 and sigmas[-1] == 0
    x = initial_noise() * sigmas[0]
    ours = ours_trajectory(name, sigmas, x)
    theirs = diffusers_trajectory(sched, x.clone())
    assert len(ours) == len(theirs) == steps
    for i, (a, b) in enumerate(pairs(ours, theirs)):
        assert_close_rel(a, b, f"{name} step {i}")


@pytest.mark.parametrize("karras", [False, True])
def test_heun(karras):
    """HeunDiscreteScheduler returns the predictor as an extra half step; we compare after each full step.
    Its last step (to sigma = 0) is a plain Euler step, as ours is."""
    steps = 12
    sched = diffusers.HeunDiscreteScheduler(**SD_BETAS, use_karras_sigmas=karras)
    sched.set_timesteps(steps)
    # diffusers repeats the inner sigmas for its two stages: [s0, s1, s1, s2, s2, ..., 0]
    sigmas = torch.cat([sched.sigmas[:1], sched.sigmas[1:-1:2], sched.sigmas[-1:]]).to(torch.float64)
    assert len(sigmas) == steps + 1 and sigmas[-1] == 0
    x = initial_noise(1) * sigmas[0]
    ours = ours_trajectory("heun", sigmas, x)
    theirs = diffusers_trajectory(sched, x.clone(), keep=lambda s, i: s.state_in_first_order or i == len(s.timesteps) - 1)
    assert len(ours) == len(theirs) == steps
    for i, (a, b) in enumerate(pairs(ours, theirs)):
        assert_close_rel(a, b, f"heun step {i}")


def test_dpm2():
    """KDPM2DiscreteScheduler (DPM-Solver-2 with the midpoint at the geometric mean of sigma and sigma_next) keeps
    its sigmas as [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0, ...] and returns the midpoint as an extra half step."""
    steps = 8
    sched = diffusers.KDPM2DiscreteScheduler(**SD_BETAS)
    sched.set_timesteps(steps)
    sigmas = torch.cat([sched.sigmas[:1], sched.sigmas[1:2 * steps - 1:2], torch.zeros(1)]).to(torch.float64)
    assert len(sigmas) == steps + 1 and (sigmas[1:] < sigmas[:-1]).all()
    x = initial_noise(8) * sigmas[0]
    ours = ours_trajectory("dpm2", sigmas, x)
    theirs = diffusers_trajectory(sched, x.clone(), keep=lambda s, i: s.state_in_first_order or i == len(s.timesteps) - 1)
    assert len(ours) == len(theirs) == steps
    for i, (a, b) in enumerate(pairs(ours, theirs)):
        assert_close_rel(a, b, f"dpm2 step {i}")


def test_flow_euler():
    """FlowMatchEulerDiscreteScheduler (SD3's shift = 3): the network predicts the velocity v = eps - x0 from
    x itself (c_in = 1 for flow models); x starts as plain noise at sigma = 1."""
    steps = 10
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.to(torch.float64)
    assert len(sigmas) == steps + 1 and sigmas[-1] == 0
    x = initial_noise(9)
    ours = []
    get_sampler("flow_euler")(Denoiser(eps_model, "flow"), x, sigmas, callback=lambda info: ours.append(info["x"].clone()))
    theirs = []
    sample = x.clone()
    for t in sched.timesteps:
        sample = sched.step(eps_model(sample).to(sample.dtype), t, sample).prev_sample
        theirs.append(sample.clone())
    for i, (a, b) in enumerate(pairs(ours, theirs)):
        assert_close_rel(a, b, f"flow_euler step {i}")


def test_euler_ancestral_same_noise():
    """Both sides draw their fresh noise from a torch.Generator with the same seed, same shape and dtype, one
    draw per step in the same order (diffusers also draws at the last step, where its weight sigma_up is 0)."""
    steps = 15
    sched = diffusers.EulerAncestralDiscreteScheduler(**SD_BETAS)
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.to(torch.float64)
    x = initial_noise(2) * sigmas[0]
    ours = ours_trajectory("euler_ancestral", sigmas, x, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    # diffusers casts the state to the model output's dtype: run it in float64 so the noise is drawn in float64
    theirs = diffusers_trajectory(sched, x.clone(), step_kwargs=lambda i: {"generator": g})
    for i, (a, b) in enumerate(pairs(ours, theirs)):
        assert_close_rel(a, b, f"euler_ancestral step {i}")


def vp_to_ve(z, sigma):
    """Variance-preserving state z = x / sqrt(1 + sigma^2) -> variance-exploding x."""
    return z * (1 + sigma**2) ** 0.5


@pytest.mark.parametrize("steps", [6, 20])
def test_dpmpp_2m(steps):
    sched = diffusers.DPMSolverMultistepScheduler(**SD_BETAS, algorithm_type="dpmsolver++", solver_order=2)
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.to(torch.float64)
    assert len(sigmas) == steps + 1 and sigmas[-1] == 0
    z = initial_noise(3) * sched.init_noise_sigma
    ours = ours_trajectory("dpmpp_2m", sigmas, vp_to_ve(z, sigmas[0]))
    theirs = diffusers_trajectory(sched, z.clone())
    for i, (a, b) in enumerate(pairs(ours, theirs)):
        assert_close_rel(a, vp_to_ve(b, sigmas[i + 1]), f"dpmpp_2m step {i}")


def test_dpmpp_2m_sde_same_noise():
    """sde-dpmsolver++ (2nd order, midpoint) takes its noise through ``variance_noise``; we hand it the same
    standard normal draws our sampler takes from its generator (one per step except the last, to sigma = 0)."""
    steps = 10
    sched = diffusers.DPMSolverMultistepScheduler(**SD_BETAS, algorithm_type="sde-dpmsolver++", solver_order=2)
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.to(torch.float64)
    g = torch.Generator().manual_seed(11)
    noises = [torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(steps - 1)] + [torch.zeros(SHAPE, dtype=torch.float64)]
    z = initial_noise(4)
    ours = ours_trajectory("dpmpp_2m_sde", sigmas, vp_to_ve(z, sigmas[0]), generator=torch.Generator().manual_seed(11))
    theirs = diffusers_trajectory(sched, z.clone(), step_kwargs=lambda i: {"variance_noise": noises[i]})
    for i, (a, b) in enumerate(pairs(ours, theirs)):
        assert_close_rel(a, vp_to_ve(b, sigmas[i + 1]), f"dpmpp_2m_sde step {i}")


def ddim_sigmas(sched):
    """Our sigmas for the scheduler's timesteps: sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), then 0
    (DDIM with set_alpha_to_one and DDPM step to alpha_bar = 1 at the end)."""
    ab = sched.alphas_cumprod.to(torch.float64)[sched.timesteps]
    return torch.cat([((1 - ab) / ab).sqrt(), torch.zeros(1, dtype=torch.float64)])


@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_ddim(eta):
    """DDIM eta > 0: diffusers takes the noise through ``variance_noise`` (we pass it our generator's draws)."""
    steps = 12
    sched = diffusers.DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=True)
    sched.set_timesteps(steps)
    sigmas = ddim_sigmas(sched)
    g = torch.Generator().manual_seed(5)
    noises = [torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(steps - 1)] + [torch.zeros(SHAPE, dtype=torch.float64)]
    z = initial_noise(5)
    ours = ours_trajectory("ddim", sigmas, vp_to_ve(z, sigmas[0]), generator=torch.Generator().manual_seed(5), eta=eta)
    theirs = diffusers_trajectory(sched, z.clone(), step_kwargs=lambda i: {"eta": eta, "variance_noise": noises[i]})
    for i, (a, b) in enumerate(pairs(ours, theirs)):
        assert_close_rel(a, vp_to_ve(b, sigmas[i + 1]), f"ddim(eta={eta}) step {i}")


def test_ddpm_same_noise():
    """DDPMScheduler ('fixed_small' posterior variance) draws its noise from the generator we give it at every
    step but the last (t = 0), exactly when ours does."""
    steps = 10
    sched = diffusers.DDPMScheduler(**SD_BETAS, clip_sample=False, variance_type="fixed_small")
    sched.set_timesteps(steps)
    sigmas = ddim_sigmas(sched)
    z = initial_noise(6)
    ours = ours_trajectory("ddpm", sigmas, vp_to_ve(z, sigmas[0]), generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    theirs = diffusers_trajectory(sched, z.clone(), step_kwargs=lambda i: {"generator": g})
    for i, (a, b) in enumerate(pairs(ours, theirs)):
        assert_close_rel(a, vp_to_ve(b, sigmas[i + 1]), f"ddpm step {i}")
