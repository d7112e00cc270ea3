"""Samplers against analytic answers.

Data x0 ~ N(mu, s^2). In the variance-exploding form x = x0 + sigma eps the ideal denoiser is the posterior mean
    D(x, sigma) = E[x0 | x] = (s^2 x + sigma^2 mu) / (s^2 + sigma^2)
and the probability-flow ODE dx/dsigma = (x - D)/sigma = (x - mu) sigma / (s^2 + sigma^2) has the exact solution
    x(sigma) = mu + (x_T - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_T^2).
For flow matching, x = (1 - sigma) x0 + sigma eps: x ~ N((1 - sigma) mu, v) with v = (1 - sigma)^2 s^2 + sigma^2,
    D(x, sigma) = mu + (1 - sigma) s^2 / v * (x - (1 - sigma) mu),
and the exact ODE map from sigma = 1 is x(0) = mu + s x_1.
All in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from i2v.diffusion import SAMPLERS, get_sampler, get_schedule, progress_callback
from i2v.diffusion.denoisers import append_dims
from i2v.errors import ConfigError, NumericalError


MU, S = 0.7, 0.4
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
STOCHASTIC = {"euler_ancestral", "dpmpp_2m_sde", "ddpm"}
FLOW = {"flow_euler", "flow_unipc", "flow_dpmpp_2m"}  # samplers written for x = (1 - sigma) x0 + sigma eps
DETERMINISTIC = [n for n in SAMPLERS if n not in STOCHASTIC]


def gaussian_denoiser(x, sigma, cond=None):
    s2 = append_dims(sigma, x.ndim) ** 2
    return (S**2 * x + s2 * MU) / (S**2 + s2)


def flow_gaussian_denoiser(x, sigma, cond=None):
    sg = append_dims(sigma, x.ndim)
    v = (1 - sg) ** 2 * S**2 + sg**2
    return MU + (1 - sg) * S**2 / v * (x - (1 - sg) * MU)


def standard_normal(n, seed=0):
    """n draws standardised to mean 0 and std 1 exactly, so deterministic samplers carry no sampling error."""
    z = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (z - z.mean()) / z.std()


def run(name, steps, z, seed=1, **kwargs):
    """Sample from pure noise z ~ N(0, 1); return (samples, exact ODE solution from the same start)."""
    if name in FLOW:
        sigmas = get_schedule("flow")(steps)
        out = get_sampler(name)(flow_gaussian_denoiser, z.clone(), sigmas, **kwargs)
        return out, MU + S * z
    sigmas = get_schedule("karras")(steps, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    x_T = z * sigmas[0]
    out = get_sampler(name)(gaussian_denoiser, x_T, sigmas, generator=torch.Generator().manual_seed(seed), **kwargs)
    return out, MU + (x_T - MU) * S / math.sqrt(S**2 + SIGMA_MAX**2)


# ------------------------------------------------------------------ moments match the data, tightening with steps

# name -> (C, p): the discretisation part of the tolerance on |std - s| is C / steps^p (p = the sampler's order;
# C about 1.5x what was measured at 12 steps). Stochastic samplers add a sampling-error term, see below.
TOLERANCE = {
    "euler": (1.5, 1), "euler_ancestral": (3.0, 1), "heun": (12.0, 2), "dpm2": (12.0, 2), "dpmpp_2m": (12.0, 2),
    "dpmpp_2m_sde": (1.5, 1), "ddim": (1.5, 1), "ddpm": (3.0, 1), "lms": (12.0, 2), "flow_euler": (1.0, 1),
    # measured |std - s|: UniPC 7.6e-4 / 8.8e-4, flow DPM++ 1.7e-3 / 2.0e-3 at 12 / 48 steps (the last step,
    # to sigma = 0 at first order, dominates at these step counts)
    "flow_unipc": (0.1, 1), "flow_dpmpp_2m": (0.2, 1),
}
# below torch's intra-op parallel grain (32768 elements): these tiny element-wise ops stay single-threaded,
# which keeps the test fast on a busy machine
N_SAMPLES = 30_000


def test_every_sampler_has_a_tolerance():
    assert set(TOLERANCE) == set(SAMPLERS)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_moments_match_the_data(name):
    """mean and std of the samples match mu and s within  C / steps^p  (+ the start bias, + sampling error)."""
    z = standard_normal(N_SAMPLES)
    C, p = TOLERANCE[name]
    # Starting from N(0, sigma_max^2) instead of N(mu, s^2 + sigma_max^2) shifts the exact result's mean by
    # mu s / sqrt(s^2 + sigma_max^2) (0.0035 here); flow matching starts exactly at sigma = 1.
    start_bias = 0.0 if name in FLOW else MU * S / math.sqrt(S**2 + SIGMA_MAX**2)
    # fresh noise: 4 standard errors of the sample mean (s/sqrt(N)) and of the sample std (s/sqrt(2N))
    stat_mean = 4 * S / math.sqrt(N_SAMPLES) if name in STOCHASTIC else 1e-12
    stat_std = 4 * S / math.sqrt(2 * N_SAMPLES) if name in STOCHASTIC else 1e-12
    tols = []
    for steps in (12, 48):
        out, _ = run(name, steps, z)
        tol = C / steps**p
        tols.append(tol)
        mean, std = out.mean().item(), out.std().item()
        assert abs(mean - MU) <= start_bias + tol * S + stat_mean, f"{name}, {steps} steps: mean {mean:.5f}, want {MU}"
        assert abs(std - S) <= tol + stat_std, f"{name}, {steps} steps: std {std:.5f}, want {S} +- {tol + stat_std:.4f}"
    assert tols[1] < tols[0]


def test_ddim_with_eta_is_stochastic_and_still_matches():
    z = standard_normal(N_SAMPLES)
    out, _ = run("ddim", 48, z, eta=0.5)
    assert abs(out.std().item() - S) <= 3.0 / 48 + 4 * S / math.sqrt(2 * N_SAMPLES)
    out_b, _ = run("ddim", 48, z, seed=2, eta=0.5)
    assert not torch.equal(out, out_b)


# ------------------------------------------------------------------ convergence order against the exact ODE solution

# Deterministic samplers, error of each sample against the exact ODE solution from the same start (the limit
# a high-step reference approximates), max over samples; the fitted slope of log error vs log steps is -order.
ORDER = {"euler": 1, "ddim": 1, "flow_euler": 1, "heun": 2, "dpm2": 2, "dpmpp_2m": 2}


@pytest.mark.parametrize("name", list(ORDER))
def test_convergence_order(name):
    z = standard_normal(512, seed=3)
    steps = np.array([20, 40, 80, 160])
    errors = []
    for n in steps:
        out, exact = run(name, int(n), z)
        errors.append((out - exact).abs().max().item())
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope + ORDER[name]) < 0.25, f"{name}: error {errors} has slope {slope:.2f}, want -{ORDER[name]}"


def test_lms_is_higher_order():
    """LMS (order-4 Adams-Bashforth, lower order for its first steps) converges faster than second order."""
    z = standard_normal(512, seed=3)
    steps = np.array([20, 40, 80])
    errors = [(lambda o: (o[0] - o[1]).abs().max().item())(run("lms", int(n), z)) for n in steps]
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert slope < -3.0, f"lms error {errors}, slope {slope:.2f}"


# A nonlinear case without a closed form: a 2-D mixture of four Gaussians (its exact denoiser is the
# responsibility-weighted posterior mean). The reference is Heun at 2560 steps (error ~1e-6, 60x below the
# smallest error measured here); the mean error over samples is fitted from 40 to 320 steps.
MIX_MEANS = torch.tensor([[1.5, 0.0], [-1.5, 0.0], [0.0, 1.5], [0.5, -1.2]], dtype=torch.float64)
MIX_WEIGHTS = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
MIX_S = 0.3


def mixture_denoiser(x, sigma, cond=None):
    var = MIX_S**2 + sigma[:, None] ** 2  # (n, 1)
    sq_dist = ((x[:, None, :] - MIX_MEANS[None]) ** 2).sum(-1)  # (n, K)
    r = torch.softmax(MIX_WEIGHTS.log()[None] - sq_dist / (2 * var) - var.log(), dim=1)  # responsibilities
    post_mean = (MIX_S**2 * x[:, None, :] + sigma[:, None, None] ** 2 * MIX_MEANS[None]) / var[:, :, None]
    return (r[:, :, None] * post_mean).sum(1)


@pytest.fixture(scope="module")
def mixture_reference():
    z = torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = get_schedule("karras")(2560, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    return z * SIGMA_MAX, get_sampler("heun")(mixture_denoiser, z * SIGMA_MAX, sigmas)


@pytest.mark.parametrize("name, order", [("euler", 1), ("heun", 2), ("dpm2", 2), ("dpmpp_2m", 2), ("lms", 3)])
def test_convergence_order_on_a_mixture(name, order, mixture_reference):
    x_T, reference = mixture_reference
    steps = np.array([40, 80, 160, 320])
    errors = []
    for n in steps:
        sigmas = get_schedule("karras")(int(n), sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
        errors.append((get_sampler(name)(mixture_denoiser, x_T, sigmas) - reference).abs().mean().item())
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope + order) < 0.2, f"{name}: error {errors} has slope {slope:.2f}, want -{order}"


def test_deterministic_samplers_agree_with_each_other_at_high_steps():
    """Every deterministic sampler solves the same ODE: at 160 steps all land within 2e-2 of the exact map."""
    z = standard_normal(64, seed=4)
    for name in DETERMINISTIC:
        out, exact = run(name, 160, z)
        assert (out - exact).abs().max().item() < 2e-2, name


def test_euler_ancestral_with_eta_zero_is_euler():
    z = standard_normal(256)
    a, _ = run("euler_ancestral", 10, z, eta=0.0)
    b, _ = run("euler", 10, z)
    assert torch.equal(a, b)


# ------------------------------------------------------------------ reproducibility


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_same_seed_same_output_bit_for_bit(name):
    z = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    outs = []
    for global_seed in (123, 456):  # the global RNG must not matter when a generator is given
        torch.manual_seed(global_seed)
        out, _ = run(name, 6, z, seed=42)
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    other, _ = run(name, 6, z, seed=43)
    if name in STOCHASTIC:
        assert not torch.equal(outs[0], other), f"{name} ignored its generator"
    else:
        assert torch.equal(outs[0], other)


# ------------------------------------------------------------------ callback and progress


def test_callback_reports_every_step():
    sigmas = get_schedule("karras")(5)
    seen = []
    get_sampler("heun")(gaussian_denoiser, torch.randn(4, dtype=torch.float64) * sigmas[0], sigmas, callback=seen.append)
    assert [info["i"] for info in seen] == list(range(5))
    assert [info["sigma"] for info in seen] == sigmas[:-1].tolist()
    assert [info["sigma_next"] for info in seen] == sigmas[1:].tolist()
    assert all(info["x"].shape == (4,) and info["denoised"].shape == (4,) for info in seen)


def test_progress_callback_passes_info_on():
    sigmas = get_schedule("exponential")(4)
    seen = []
    get_sampler("euler")(gaussian_denoiser, torch.randn(3, dtype=torch.float64) * sigmas[0], sigmas,
                         callback=progress_callback(4, then=lambda info: seen.append(info["i"])))
    assert seen == [0, 1, 2, 3]


# ------------------------------------------------------------------ bad input


def test_unknown_sampler_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        get_sampler("eulr")
    assert "eulr" in str(e.value) and all(name in str(e.value) for name in SAMPLERS)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_nan_in_the_state_is_an_error(name):
    sigmas = get_schedule("flow" if name in FLOW else "karras")(4)
    x = torch.randn(2, 3) * sigmas[0]
    x[1, 2] = float("nan")
    with pytest.raises(NumericalError, match="NaN"):
        get_sampler(name)(gaussian_denoiser, x, sigmas, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_denoiser_blowing_up_mid_run_names_the_step(name):
    calls = []

    def exploding(x, sigma, cond=None):
        calls.append(1)
        out = gaussian_denoiser(x, sigma)
        return out * float("inf") if len(calls) >= 3 else out

    sigmas = get_schedule("flow" if name in FLOW else "karras")(6)
    with pytest.raises(NumericalError, match=r"step \d"):
        get_sampler(name)(exploding, torch.randn(2, 3) * sigmas[0], sigmas, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("sigmas", [[1.0, 2.0, 0.0], [3.0, 3.0, 0.0], [5.0], [2.0, float("nan"), 0.0], [1.0, -0.5]])
def test_bad_sigmas_are_an_error(sigmas):
    with pytest.raises(ConfigError, match="sigmas"):
        get_sampler("euler")(gaussian_denoiser, torch.zeros(2), torch.tensor(sigmas))


# ------------------------------------------------------------------ what a parameterisation implies

def test_the_catalog_says_which_samplers_are_flow_form():
    from i2v.diffusion.catalog import SAMPLERS as NAMES

    assert {n for n, (_, fits) in NAMES.items() if fits == "flow"} == FLOW
    assert {n for n, (_, fits) in NAMES.items() if fits == "ve"} == STOCHASTIC | {"ddim"}


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n not in FLOW | STOCHASTIC | {"ddim"}])
def test_samplers_that_fit_any_form_sample_a_flow_model(name):
    """check_sampler lets the 'any' samplers run on a flow model: on flow matching's Gaussian, from sigma = 1,
    each converges to the exact ODE end point mu + s z: the error falls at least 3.5x from 16 to 64 steps (first
    order: 4x) and is below 0.04 (Euler, first order: 0.033; the 2nd-order ones 0.005 and less)."""
    from i2v.diffusion.catalog import check_sampler

    assert check_sampler(name, "flow") is None
    z = standard_normal(512, seed=3)
    err = [(get_sampler(name)(flow_gaussian_denoiser, z.clone(), get_schedule("flow")(n)) - (MU + S * z)).abs().max()
           for n in (16, 64)]
    assert err[1] < err[0] / 3.5 and err[1] < 0.04, f"{name}: {err}"


@pytest.mark.parametrize("prediction", ["eps", "v", "edm", "edm_v"])
def test_flow_samplers_are_refused_for_ve_models_before_any_work(prediction):
    from i2v.diffusion.catalog import check_sampler

    for name in FLOW:
        with pytest.raises(ConfigError, match="flow-matching models.*use one of"):
            check_sampler(name, prediction)
    assert all(check_sampler(n, prediction) is None for n in SAMPLERS if n not in FLOW)


def test_ve_noise_samplers_on_a_flow_model_come_with_a_note():
    from i2v.diffusion.catalog import check_sampler

    for name in STOCHASTIC | {"ddim"}:
        assert "does not sample the model's distribution exactly" in check_sampler(name, "flow")
    with pytest.raises(ConfigError, match="unknown sampler 'nope'"):
        check_sampler("nope", "flow")
    with pytest.raises(ConfigError, match="unknown parameterisation 'x0'"):
        check_sampler("euler", "x0")


@pytest.mark.parametrize("data_variance", [0.0, 1.0, 0.25])
def test_initial_noise_has_the_variance_of_noised_data(data_variance):
    """The VE start at sigma_max has the spread of x0 + sigma_max eps for data of that variance (Monte Carlo
    with 200k draws, std within 1%); the flow start is the noise itself."""
    from i2v.diffusion.denoisers import initial_noise

    g = torch.Generator().manual_seed(0)
    sigma = 3.0
    x0 = torch.randn(200_000, generator=g, dtype=torch.float64) * math.sqrt(data_variance)
    noised = x0 + sigma * torch.randn(200_000, generator=g, dtype=torch.float64)
    start = initial_noise(torch.randn(200_000, generator=g, dtype=torch.float64), sigma, "edm", data_variance)
    assert abs(start.std().item() / noised.std().item() - 1) < 0.01
    eps = torch.randn(5, generator=g)
    assert torch.equal(initial_noise(eps, 1.0, "flow"), eps)
    with pytest.raises(ConfigError, match="unknown parameterisation"):
        initial_noise(eps, 1.0, "x0")
