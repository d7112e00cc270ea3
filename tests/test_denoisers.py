"""Preconditioning wrappers and guidance, against the papers' definitions and hand computations.

For each parameterisation an 'oracle network' knows the clean x0 and the noise eps of the forward process and
returns exactly the training target the paper defines for it; wrapped in :class:`Denoiser` it must give back x0.
"""

from __future__ import annotations


import pytest
import torch

from i2v.diffusion import CFGDenoiser, Denoiser, PARAMETERIZATIONS, Proposal, discrete_timestep, frame_ramp
from i2v.diffusion.schedules import betas_scaled_linear, train_sigmas
from i2v.errors import ConfigError


SIGMAS = torch.tensor([0.03, 0.7, 4.0, 60.0], dtype=torch.float64)


def forward_process(form="ve", seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    s = SIGMAS.view(4, 1, 1, 1)
    x = x0 + s * eps if form == "ve" else (1 - s / 61) * x0 + (s / 61) * eps
    return x0, eps, x


def test_eps_prediction():
    """DDPM: the network sees z = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps (= x / sqrt(1 + sigma^2)) and the
    timestep, and predicts eps."""
    x0, eps, x = forward_process()
    seen = {}

    def net(x_in, c_noise):
        seen.update(x_in=x_in, c_noise=c_noise)
        return eps

    assert torch.allclose(Denoiser(net, "eps")(x, SIGMAS), x0, atol=1e-12)
    alpha_bar = (1 / (1 + SIGMAS**2)).view(4, 1, 1, 1)
    assert torch.allclose(seen["x_in"], alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps, atol=1e-12)
    assert torch.equal(seen["c_noise"], SIGMAS)


@pytest.mark.parametrize("prediction", ["v", "edm_v"])
def test_v_prediction(prediction):
    """Salimans & Ho 2022: z = alpha x0 + sigma_vp eps with alpha^2 + sigma_vp^2 = 1, target v = alpha eps - sigma_vp x0.
    SVD (edm_v) uses the same target with c_noise = 0.25 ln sigma."""
    x0, eps, x = forward_process(seed=1)
    alpha = (1 / (1 + SIGMAS**2)).sqrt().view(4, 1, 1, 1)
    sigma_vp = (SIGMAS / (1 + SIGMAS**2).sqrt()).view(4, 1, 1, 1)
    seen = {}

    def net(z, c_noise):
        seen["c_noise"] = c_noise
        assert torch.allclose(z, alpha * x0 + sigma_vp * eps, atol=1e-12)
        return alpha * eps - sigma_vp * x0

    assert torch.allclose(Denoiser(net, prediction)(x, SIGMAS), x0, atol=1e-10)
    want = 0.25 * SIGMAS.log() if prediction == "edm_v" else SIGMAS
    assert torch.allclose(seen["c_noise"], want)


def test_edm_table_1_by_hand():
    """EDM Table 1 with sigma_data = 0.5 at sigma = 1: c_skip = 0.2, c_out = 0.5/sqrt(1.25), c_in = 1/sqrt(1.25),
    c_noise = 0.25 ln 1 = 0. With F(x_in, c_noise) = x_in + c_noise at x = 2: D = 0.2*2 + 0.5/1.25*2 = 1.2."""
    x = torch.full((1, 1), 2.0, dtype=torch.float64)
    out = Denoiser(lambda x_in, c_noise: x_in + c_noise.view(-1, 1), "edm")(x, torch.tensor([1.0], dtype=torch.float64))
    assert out.item() == pytest.approx(1.2, rel=1e-12)


def test_flow_prediction():
    """Rectified flow: x = (1 - sigma) x0 + sigma eps, the network sees x itself and sigma, predicts v = eps - x0."""
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.25, 0.9], dtype=torch.float64)
    x = (1 - sigma.view(2, 1, 1, 1)) * x0 + sigma.view(2, 1, 1, 1) * eps

    def net(x_in, c_noise):
        assert torch.equal(x_in, x) and torch.equal(c_noise, sigma)
        return eps - x0

    assert torch.allclose(Denoiser(net, "flow")(x, sigma), x0, atol=1e-12)


def test_a_proposal_is_blended_after_preconditioning():
    """D = m W + (1 - m)(c_skip x + c_out F), by hand with EDM's scalings (sigma_data = 0.5) at sigma = 2."""
    x = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    w = torch.tensor([[0.3, 0.3, -0.7]], dtype=torch.float64)
    m = torch.tensor([[0.0, 1.0, 0.25]], dtype=torch.float64)
    net = lambda x_in, c_noise: Proposal(torch.full_like(x_in, 0.4), w, m)  # noqa: E731
    c_skip, c_out = 0.25 / 4.25, 2 * 0.5 / 4.25**0.5
    plain = c_skip * x + c_out * 0.4
    expected = torch.stack([plain[0, 0], w[0, 1], 0.25 * w[0, 2] + 0.75 * plain[0, 2]])[None]
    torch.testing.assert_close(Denoiser(net, "edm")(x, torch.tensor([2.0], dtype=torch.float64)), expected)


def test_scalar_sigma_broadcasts_over_the_batch():
    x0, eps, x = forward_process()
    d = Denoiser(lambda x_in, c_noise: x_in * 0 + c_noise.view(-1, 1, 1, 1), "eps")
    out = d(x[:, :1], torch.tensor(2.0, dtype=torch.float64))
    assert torch.allclose(out, x[:, :1] - 2.0 * 2.0)  # D = x - sigma * eps_hat with eps_hat = c_noise = sigma


def test_cond_is_passed_to_the_network():
    d = Denoiser(lambda x_in, c_noise, context, scale: x_in * 0 + context * scale, "flow")
    out = d(torch.ones(2, 3), torch.tensor([0.5, 0.5]), {"context": torch.full((2, 3), 2.0), "scale": 3.0})
    assert torch.allclose(out, torch.ones(2, 3) - 0.5 * 6.0)


def test_unknown_prediction_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        Denoiser(lambda x, c: x, "x0")
    assert all(name in str(e.value) for name in PARAMETERIZATIONS)


def test_discrete_timestep_inverts_training_sigmas():
    """Training timestep t from sigma by interpolation in log sigma: exact at the training sigmas, log-linear
    between them, clamped to [0, T-1] outside."""
    ts = train_sigmas(betas_scaled_linear())
    to_t = discrete_timestep(ts)
    t_int = torch.tensor([0, 1, 17, 500, 998, 999])
    assert torch.allclose(to_t(ts[t_int]), t_int.to(torch.float64), atol=1e-9)
    lo, frac = torch.tensor([3, 250, 900]), torch.tensor([0.25, 0.5, 0.9], dtype=torch.float64)
    sigma = ((1 - frac) * ts[lo].log() + frac * ts[lo + 1].log()).exp()
    assert torch.allclose(to_t(sigma), lo + frac, atol=1e-9)
    assert to_t(torch.tensor([1e-6, 1e6], dtype=torch.float64)).tolist() == [0.0, 999.0]


# ------------------------------------------------------------------------------------------------- guidance


def test_frame_ramp_by_hand():
    assert frame_ramp(1.0, 2.5, 4).tolist() == [1.0, 1.5, 2.0, 2.5]
    assert frame_ramp(2.0, 2.0, 1).tolist() == [2.0]
    with pytest.raises(ConfigError):
        frame_ramp(1.0, 2.0, 0)


def make_cfg_inner():
    """A denoiser whose output tells cond and uncond apart: D = x * sigma + context."""
    calls = []

    def inner(x, sigma, cond):
        calls.append(x.shape[0])
        return x * sigma.view(-1, 1, 1, 1) + cond["context"].view(-1, 1, 1, 1)

    return inner, calls


def test_cfg_per_frame_ramp_by_hand():
    """b = 2 videos of T = 3 frames folded as (b t): item k = video k // 3, frame k % 3 gets w_(k % 3)."""
    B, T = 2, 3
    x = torch.arange(B * T, dtype=torch.float64).view(B * T, 1, 1, 1) + 1.0  # (b t) c h w
    sigma = torch.full((B * T,), 0.5, dtype=torch.float64)
    cond = {"cond": {"context": torch.full((B * T,), 10.0, dtype=torch.float64)},
            "uncond": {"context": torch.full((B * T,), -4.0, dtype=torch.float64)}}
    inner, calls = make_cfg_inner()
    out = CFGDenoiser(inner, frame_ramp(1.0, 2.0, T))(x, sigma, cond)
    assert calls == [2 * B * T]  # one batched call on [uncond; cond]
    w = [1.0, 1.5, 2.0]
    for k in range(B * T):
        xk = k + 1.0
        d_u, d_c = xk * 0.5 - 4.0, xk * 0.5 + 10.0
        assert out[k].item() == pytest.approx(d_u + w[k % T] * (d_c - d_u)), k


def test_cfg_constant_scale_and_scale_one():
    x = torch.ones(4, 1, 1, 1, dtype=torch.float64)
    sigma = torch.ones(4, dtype=torch.float64)
    cond = {"cond": {"context": torch.full((4,), 3.0, dtype=torch.float64)},
            "uncond": {"context": torch.zeros(4, dtype=torch.float64)}}
    inner, calls = make_cfg_inner()
    assert torch.allclose(CFGDenoiser(inner, 2.5)(x, sigma, cond), torch.full_like(x, 1 + 2.5 * 3.0))
    assert torch.allclose(CFGDenoiser(inner, 1.0)(x, sigma, cond), torch.full_like(x, 4.0))
    assert calls == [8, 4]  # w = 1 skips the unconditional half
    assert torch.allclose(CFGDenoiser(inner, 2.5)(x, torch.tensor(1.0, dtype=torch.float64), cond), torch.full_like(x, 8.5))


def test_cfg_bad_input():
    inner, _ = make_cfg_inner()
    x, sigma = torch.ones(5, 1, 1, 1), torch.ones(5)
    good = {"cond": {"context": torch.ones(5)}, "uncond": {"context": torch.zeros(5)}}
    with pytest.raises(ConfigError, match="multiple"):
        CFGDenoiser(inner, frame_ramp(1, 2, 3))(x, sigma, good)
    with pytest.raises(ConfigError, match="uncond"):
        CFGDenoiser(inner, 2.0)(x, sigma, {"context": torch.ones(5)})
    with pytest.raises(ConfigError, match="same keys"):
        CFGDenoiser(inner, 2.0)(x, sigma, {"cond": {"context": torch.ones(5)}, "uncond": {"other": torch.ones(5)}})


def test_cfg_inside_a_sampler():
    """Guidance is just another denoiser: with D_c, D_u Gaussian ideal denoisers of means 1 and -1, CFG with w
    gives the ideal denoiser of mean -1 + w*2 (linear in the mean), so the sampler lands on N(2, 0.5^2)."""
    from i2v.diffusion import get_sampler, get_schedule

    def inner(x, sigma, cond):
        s2 = sigma.view(-1, 1) ** 2
        return (0.25 * x + s2 * cond["mu"].view(-1, 1)) / (0.25 + s2)

    n = 2000
    x = torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = (x - x.mean()) / x.std()
    sigmas = get_schedule("karras")(60, sigma_max=200.0)
    cond = {"cond": {"mu": torch.ones(n, dtype=torch.float64)}, "uncond": {"mu": -torch.ones(n, dtype=torch.float64)}}
    out = get_sampler("heun")(CFGDenoiser(inner, 1.5), x * sigmas[0], sigmas, cond=cond)
    assert out.mean().item() == pytest.approx(2.0, abs=0.01)
    assert out.std().item() == pytest.approx(0.5, abs=0.01)
