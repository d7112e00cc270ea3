"""Wan's samplers and schedule against the original runs (../shared/reference/wan*): the integer timesteps
exactly, the sigmas, and every step of FlowUniPC (and FLF2V's DPM++ run) driven by our DiT with CFG on the
case's own conditioning tensors and initial noise. TI2V's first-frame re-imposition is driven through
:class:`~i2v.diffusion.ImposeKnown`. Then: every other sampler of the core, swapped in by name, integrates the
same flow ODE with the Wan DiT.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import case_dirs
from i2v.diffusion import SAMPLERS, CFGDenoiser, Denoiser, ImposeKnown, flow_timestep, get_sampler, get_schedule
from i2v.errors import ConfigError
from i2v.models.wan.dit import WanDiT, pad_context
from test_wan_dit import dit_inputs, expected, model, rel

CASES = case_dirs("wan", "I2V_WAN_CASES")
needs_cases = pytest.mark.skipif(not CASES, reason="needs ../shared/reference/wan* (absent in a fresh clone)")
TOL = 1e-3


def settings(case_dir) -> dict:
    return json.loads((case_dir / "case.json").read_text())["settings"]


def runs(case_dir):
    """(prefix of the recorded run, sampler, sigma_max): UniPC always; the DPM++ run where the case has one."""
    E = expected(case_dir)
    out = [("sampler.", "flow_unipc", None)]
    if "dpmpp.timesteps" in E:
        out.append(("dpmpp.", "flow_dpmpp_2m", 1.0))  # Wan's get_sampling_sigmas starts at 1
    return out


def schedule(case_dir, sigma_max):
    st = settings(case_dir)
    kw = {} if sigma_max is None else {"sigma_max": sigma_max}
    return get_schedule("wan")(st["sampling_steps"], shift=st["shift"], **kw)


def guided_denoiser(case_dir, net, sigma_to_c_noise=None):
    """CFG over the Wan DiT on the case's conditioning, as the pipeline wires it: (denoiser, x_T, cond)."""
    E, m = expected(case_dir), model(case_dir)
    D = CFGDenoiser(Denoiser(net, "flow", sigma_to_c_noise=sigma_to_c_noise or flow_timestep()),
                    settings(case_dir)["guide_scale"])
    cond = {}
    for branch in ("cond", "uncond"):
        kw = dit_inputs(E, branch)
        kw["context"] = pad_context(kw["context"])  # equal lengths, so cond and uncond batch
        if m.config.model_type == "ti2v":
            kw["clean_first_frame"] = True
        cond[branch] = kw
    x = E["inputs.noise"][None]
    if m.config.model_type == "ti2v":  # frame 0 is the image latent, before the first step and after every step
        known = (1 - E["cond.mask2"])[None, None]  # 1 on latent frame 0
        D = ImposeKnown(D, E["vae.out"][None], known)
        x = known * E["vae.out"][None] + (1 - known) * x
    return D, x, cond


@needs_cases
@pytest.mark.parametrize("case_dir", CASES, ids=[p.name for p in CASES])
def test_timesteps_exactly_and_sigmas(case_dir):
    E = expected(case_dir)
    for prefix, _, sigma_max in runs(case_dir):
        sigmas = schedule(case_dir, sigma_max)
        # the network receives sigma in float32 (the latent's dtype) and turns it into Wan's integer timestep
        assert torch.equal(flow_timestep()(sigmas[:-1].float()), E[prefix + "timesteps"]), prefix
        assert (sigmas.float() - E[prefix + "sigmas"]).abs().max() <= TOL * 1e-3, prefix


@needs_cases
@pytest.mark.parametrize("case_dir", CASES, ids=[p.name for p in CASES])
def test_sampling_matches_the_original_step_by_step(case_dir):
    E, m = expected(case_dir), model(case_dir)
    ti2v = m.config.model_type == "ti2v"
    for prefix, name, sigma_max in runs(case_dir):
        seen_t = []

        def net(x, t, **kw):
            seen_t.append(t[0].item())  # cond and uncond share t
            return m(x, t, **kw)

        D, x, cond = guided_denoiser(case_dir, net)
        steps = []
        state = [x]

        def callback(info):
            steps.append((state[0], info["sigma"], info["denoised"], info["x"]))
            state[0] = info["x"]

        get_sampler(name)(D, x, schedule(case_dir, sigma_max), cond=cond, callback=callback)
        assert seen_t == E[prefix + "timesteps"].tolist()
        errors = {}
        # frame 0 of TI2V: the original writes the image latent back after its step, so its velocity and step
        # output there are discarded values; ours never leave the known latent. Compare frames 1.. there.
        fr = slice(1, None) if ti2v else slice(None)
        for i, (x_i, sigma, denoised, x_next) in enumerate(steps):
            v = (x_i - denoised) / sigma  # the guided velocity: uncond + w (cond - uncond)
            errors[f"noise_pred.{i}"] = rel(v[0][:, fr], E[f"{prefix}noise_pred.{i}"][:, fr])
            errors[f"latent.{i}"] = rel(x_next[0], E[f"{prefix}latent.{i}"])
            if f"{prefix}step_out.{i}" in E:
                errors[f"step_out.{i}"] = rel(x_next[0][:, 1:], E[f"{prefix}step_out.{i}"][:, 1:])
        assert len(steps) == settings(case_dir)["sampling_steps"]
        bad = {k: f"{v:.2e}" for k, v in errors.items() if not v <= TOL}
        assert not bad, f"{case_dir.name} {name}: {bad}"


# ------------------------------------------------------------------------------------------ the schedule

@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 16.0])
@pytest.mark.parametrize("sigma_max", [None, 1.0])
def test_wan_schedule_keeps_the_integer_timesteps_through_float32(shift, sigma_max):
    """Wan truncates the float64 sigma * 1000 to its timestep but keeps sigma in float32; 1% of (steps, shift)
    pairs round across a multiple of 1/1000 (e.g. shift 1, where 1000 sigma is a whole number in exact
    arithmetic). The schedule's float32 sigmas still give back the truncated float64 timesteps, one float32
    step from the rounded value at most."""
    smax = float(np.float32(0.999)) if sigma_max is None else sigma_max
    for n in range(1, 61):
        s = np.linspace(smax, 0.0, n + 1)[:-1]
        s = shift * s / (1 + (shift - 1) * s)
        want = torch.from_numpy((s * 1000).astype(np.int64))
        sigmas = get_schedule("wan")(n, shift=shift, **({} if sigma_max is None else {"sigma_max": sigma_max}))
        assert sigmas[-1] == 0 and len(sigmas) == n + 1
        assert torch.equal(flow_timestep()(sigmas[:-1].float()), want), (n, shift)
        assert np.abs(sigmas[:-1].numpy() - s).max() <= 2 * np.spacing(np.float32(1.0))


def test_wan_schedule_rounding_example_from_the_issue():
    assert flow_timestep()(get_schedule("wan")(4, shift=3.0)[:-1].float()).tolist() == [999, 899, 749, 499]


def test_flow_samplers_refuse_ve_sigmas():
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        get_sampler("flow_unipc")(lambda x, s, c=None: x, torch.zeros(2), get_schedule("karras")(4))


# ------------------------------------------------------------------------------------------ swapping samplers

STOCHASTIC = {"euler_ancestral", "dpmpp_2m_sde", "ddpm"}


@pytest.fixture(scope="module")
def smooth_i2v():
    """The tiny I2V DiT with the high-frequency columns of its time embedding zeroed (kept: sinusoids slower
    than 0.005 rad per timestep). Its random weights otherwise make v oscillate within one timestep, an ODE no
    sampler resolves at sane step counts; and the network sees sigma * 1000 unrounded, so that every step count
    integrates the same ODE (Wan's integer timesteps differ between schedules)."""
    case = next((c for c in CASES if settings(c).get("last_frame") is None and "cond.y" in expected(c)), None)
    if case is None:
        pytest.skip("needs an i2v case in ../shared/reference/wan*")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before conftest's per-test one_thread
    m = WanDiT.from_pretrained(case)  # our own copy: the golden tests' cached model stays as released
    half = m.config.freq_dim // 2
    slow = (torch.exp(-math.log(10000) * torch.arange(half) / half) < 0.005).float().repeat(2)
    m.time_embedding[0].weight.mul_(slow)
    D, x, cond = guided_denoiser(case, m, sigma_to_c_noise=lambda s: 1000 * s)
    reference = get_sampler("lms")(D, x, get_schedule("wan")(96, shift=3.0), cond=cond)  # 4th-order multistep
    torch.set_num_threads(threads)
    return D, x, cond, reference


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n not in STOCHASTIC])
def test_every_deterministic_sampler_integrates_the_wan_flow_ode(name, smooth_i2v):
    """Swapped in by name over the same denoiser and the 'wan' schedule, each ODE sampler converges to the
    same end point: the error falls at least 2.5x from 8 to 32 steps (first order: 4x) and is below 2e-2."""
    D, x, cond, reference = smooth_i2v
    err = [rel(get_sampler(name)(D, x, get_schedule("wan")(n, shift=3.0), cond=cond), reference) for n in (8, 32)]
    assert err[1] < err[0] / 2.5 and err[1] < 2e-2, f"{name}: {err}"


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_stochastic_samplers_run_with_the_wan_dit(name, smooth_i2v):
    """The ancestral / SDE samplers run with a flow model and are reproducible from their generator; they add
    noise for the VE form x0 + sigma eps, so they do not sample a flow model's marginals exactly (docs/wan.md)."""
    D, x, cond, _ = smooth_i2v
    sigmas = get_schedule("wan")(6, shift=3.0)
    a = get_sampler(name)(D, x, sigmas, cond=cond, generator=torch.Generator().manual_seed(0))
    b = get_sampler(name)(D, x, sigmas, cond=cond, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(a).all() and torch.equal(a, b)
