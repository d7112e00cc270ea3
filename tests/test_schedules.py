"""Noise schedules: shape and ordering contract, analytic formulas, and diffusers' schedulers as an oracle
for the VP conversions and the flow shift."""

from __future__ import annotations

import math

import pytest
import torch

from i2v.diffusion import SCHEDULES, get_schedule
from i2v.diffusion import schedules as sch
from i2v.errors import ConfigError



@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_contract_n_plus_one_decreasing_ending_in_zero(name, n):
    sigmas = get_schedule(name)(n)
    assert sigmas.shape == (n + 1,) and sigmas.dtype == torch.float64
    assert sigmas[-1] == 0
    assert (sigmas[:-1] > 0).all()
    assert (sigmas[1:] < sigmas[:-1]).all()


def test_karras_endpoints_and_rho_spacing():
    n, lo, hi, rho = 10, 0.002, 80.0, 7.0
    s = sch.karras(n, sigma_min=lo, sigma_max=hi, rho=rho)
    assert s[0].item() == pytest.approx(hi, rel=1e-12) and s[n - 1].item() == pytest.approx(lo, rel=1e-12)
    # EDM eq. 5: sigma_i^(1/rho) is evenly spaced between sigma_max^(1/rho) and sigma_min^(1/rho)
    roots = s[:-1] ** (1 / rho)
    steps = roots[1:] - roots[:-1]
    assert torch.allclose(steps, torch.full_like(steps, (lo ** (1 / rho) - hi ** (1 / rho)) / (n - 1)), rtol=1e-10)
    # one value by hand: i = 5 of 10
    i = 5
    want = (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    assert s[i].item() == pytest.approx(want, rel=1e-12)


def test_karras_svd_settings():
    """SVD: sigma_min 0.002, sigma_max 700, rho 7; the reference run's sigmas, when ../shared is present."""
    s = sch.karras(25, sigma_min=0.002, sigma_max=700.0, rho=7.0)
    assert s[0].item() == pytest.approx(700.0) and s[-2].item() == pytest.approx(0.002)


def test_karras_matches_svd_reference(shared):
    from safetensors.torch import load_file
    import json

    case = shared / "reference" / "svd-sgm-tiny"
    cfg = json.loads((case / "case.json").read_text())
    ref = load_file(case / "expected.safetensors")["sampler.sigmas"].to(torch.float64)
    steps = len(ref) - 1
    s = sch.karras(steps, sigma_min=0.002, sigma_max=700.0, rho=7.0)
    assert torch.allclose(s, ref, rtol=1e-6), (cfg.get("sampler"), s, ref)


def test_exponential_is_log_linear():
    s = sch.exponential(8, sigma_min=0.01, sigma_max=10.0)
    logs = s[:-1].log()
    assert torch.allclose(logs[1:] - logs[:-1], torch.full((7,), (math.log(0.01) - math.log(10.0)) / 7, dtype=torch.float64))
    assert s[0].item() == pytest.approx(10.0) and s[-2].item() == pytest.approx(0.01)


def test_single_step_schedules_start_at_sigma_max():
    assert sch.karras(1, sigma_max=5.0).tolist() == pytest.approx([5.0, 0.0])
    assert sch.flow(1).tolist() == [1.0, 0.0]


# ---- VP conversions, against diffusers (oracle) and against the definition


@pytest.mark.parametrize("ours, beta_schedule, kwargs", [
    (sch.betas_linear, "linear", dict(beta_start=1e-4, beta_end=0.02)),
    (sch.betas_scaled_linear, "scaled_linear", dict(beta_start=0.00085, beta_end=0.012)),
    (sch.betas_cosine, "squaredcos_cap_v2", dict()),
])
def test_train_sigmas_match_diffusers_alphas_cumprod(ours, beta_schedule, kwargs):
    """diffusers keeps betas and alpha_bar in float32, so the comparison is on betas and on
    alpha_bar = 1 / (1 + sigma^2) with float32-sized absolute tolerances."""
    diffusers = pytest.importorskip("diffusers", reason="oracle needs the test extra: pip install -e '.[test]'")
    sched = diffusers.DDPMScheduler(beta_schedule=beta_schedule, num_train_timesteps=1000, **kwargs)
    betas = ours(**kwargs)
    assert torch.allclose(betas, sched.betas.to(torch.float64), rtol=0, atol=1e-7)
    alpha_bar = 1 / (1 + sch.train_sigmas(betas) ** 2)
    want = sched.alphas_cumprod.to(torch.float64)
    assert torch.allclose(alpha_bar, want, rtol=0, atol=2e-6), (alpha_bar - want).abs().max()


@pytest.mark.parametrize("name, beta_schedule, kwargs", [
    ("vp_linear", "linear", dict(beta_start=1e-4, beta_end=0.02)),
    ("scaled_linear", "scaled_linear", dict(beta_start=0.00085, beta_end=0.012)),
    ("cosine", "squaredcos_cap_v2", dict()),
])
@pytest.mark.parametrize("n", [4, 30])
def test_vp_schedules_match_diffusers_euler_linspace(name, beta_schedule, kwargs, n):
    """diffusers' EulerDiscreteScheduler with 'linspace' spacing picks the same timesteps (T-1 .. 0 evenly)
    and interpolates sigma linearly between training steps. It computes in float32, where 1 - alpha_bar near
    alpha_bar = 1 carries an absolute error of ~1e-7: hence the absolute tolerance on small sigmas."""
    diffusers = pytest.importorskip("diffusers", reason="oracle needs the test extra: pip install -e '.[test]'")
    sched = diffusers.EulerDiscreteScheduler(beta_schedule=beta_schedule, timestep_spacing="linspace", **kwargs)
    sched.set_timesteps(n)
    want = sched.sigmas.to(torch.float64)
    got = get_schedule(name)(n)
    assert torch.allclose(got, want, rtol=2e-5, atol=1e-5), (got, want)


def test_vp_sigma_definition_by_hand():
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), alpha_bar_t = prod (1 - beta): two steps by hand."""
    betas = torch.tensor([0.1, 0.2], dtype=torch.float64)
    ab0, ab1 = 0.9, 0.9 * 0.8
    assert sch.train_sigmas(betas).tolist() == pytest.approx([math.sqrt(0.1 / ab0), math.sqrt((1 - ab1) / ab1)])
    # with 2 steps over 2 training timesteps: t = 1, 0, then 0
    assert sch.vp_from_betas(2, betas).tolist() == pytest.approx([math.sqrt((1 - ab1) / ab1), math.sqrt(0.1 / ab0), 0.0])


# ---- flow matching


def test_flow_without_shift_is_linear():
    assert torch.allclose(sch.flow(5), torch.linspace(1, 0, 6, dtype=torch.float64))


@pytest.mark.parametrize("shift", [0.5, 3.0])
def test_flow_shift_formula_and_inverse(shift):
    s = sch.flow(10, shift=shift)
    t = torch.linspace(1, 0, 11, dtype=torch.float64)
    # SD3 eq. 23 inverted: t = sigma / (shift - (shift - 1) sigma)
    assert torch.allclose(s / (shift - (shift - 1) * s), t, atol=1e-12)
    assert s[0] == 1 and s[-1] == 0
    mid = s[5].item()
    assert (mid > 0.5) == (shift > 1)  # shift > 1 keeps the middle step noisier


def test_flow_shift_matches_diffusers():
    diffusers = pytest.importorskip("diffusers", reason="oracle needs the test extra: pip install -e '.[test]'")
    n, shift = 12, 3.0
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(sigmas=torch.linspace(1, 0, n + 1)[:-1].numpy())
    assert torch.allclose(sch.flow(n, shift=shift), sched.sigmas.to(torch.float64), atol=1e-6)


# ---- bad input


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        get_schedule("karas")
    assert "karas" in str(e.value) and all(name in str(e.value) for name in SCHEDULES)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10"])
def test_steps_must_be_a_positive_integer(name, n):
    with pytest.raises(ConfigError, match="steps"):
        get_schedule(name)(n)


@pytest.mark.parametrize("name", ["karras", "exponential"])
@pytest.mark.parametrize("lo, hi", [(1.0, 1.0), (2.0, 1.0), (0.0, 1.0), (-1.0, 5.0)])
def test_sigma_range_must_be_increasing_and_positive(name, lo, hi):
    with pytest.raises(ConfigError, match="sigma_m"):
        get_schedule(name)(10, sigma_min=lo, sigma_max=hi)


def test_flow_shift_must_be_positive():
    with pytest.raises(ConfigError, match="shift"):
        sch.flow(10, shift=0.0)


# ---- properties over many settings (hypothesis)

from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), lo=st.floats(1e-4, 10.0), ratio=st.floats(1.001, 1e5), rho=st.floats(1.0, 10.0))
def test_karras_and_exponential_contract_for_any_range(n, lo, ratio, rho):
    hi = lo * ratio
    for s in (sch.karras(n, sigma_min=lo, sigma_max=hi, rho=rho), sch.exponential(n, sigma_min=lo, sigma_max=hi)):
        assert s.shape == (n + 1,) and s[-1] == 0 and (s[1:] < s[:-1]).all()
        assert s[0].item() == pytest.approx(hi, rel=1e-9)
        assert s[-2].item() == pytest.approx(hi if n == 1 else lo, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), shift=st.floats(0.05, 20.0))
def test_flow_contract_for_any_shift(n, shift):
    s = sch.flow(n, shift=shift)
    assert s.shape == (n + 1,) and s[0] == 1 and s[-1] == 0 and (s[1:] < s[:-1]).all()
