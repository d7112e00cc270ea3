"""The names the command line offers, without importing torch: every sampler and schedule of the diffusion core
with one line each, and which parameterisations a sampler fits.

:mod:`.samplers` and :mod:`.schedules` hold the functions under the same names (a test checks that the two
agree). ``fits``: ``"any"`` -- a deterministic integrator of dx/dsigma = (x - D) / sigma, which is the
probability-flow ODE of both the variance-exploding form x = x0 + sigma eps (eps, v, edm, edm_v) and the flow form
x = (1 - sigma) x0 + sigma eps; ``"ve"`` -- it adds fresh noise assuming x = x0 + sigma eps; ``"flow"`` --
written for the flow form (sigma in [0, 1]). :func:`check_sampler` applies it to a model's parameterisation.
"""

from ..errors import ConfigError

SAMPLERS = {
    "euler": ("Euler on the probability-flow ODE, 1st order, deterministic (EDM Alg. 2, no churn)", "any"),
    "euler_ancestral": ("Euler + fresh noise each step (eta=1), stochastic", "ve"),
    "heun": ("Heun predictor-corrector, 2nd order, 2 model calls per step (EDM Alg. 1)", "any"),
    "dpm2": ("DPM-Solver-2 midpoint, 2nd order, 2 model calls per step", "any"),
    "dpmpp_2m": ("DPM-Solver++(2M), multistep 2nd order, 1 call per step, deterministic", "any"),
    "dpmpp_2m_sde": ("DPM-Solver++(2M) SDE (midpoint), stochastic", "ve"),
    "ddim": ("DDIM (eta=0: deterministic; pass eta for stochastic)", "ve"),
    "ddpm": ("DDPM ancestral sampling with posterior variance (DDIM eta=1)", "ve"),
    "lms": ("linear multistep, order 4, deterministic", "any"),
    "flow_euler": ("Euler in velocity form for flow-matching models (use with the 'flow' schedule)", "flow"),
    "flow_unipc": ("UniPC bh2, order 2, for flow models: Wan's default solver (use the 'wan' schedule)", "flow"),
    "flow_dpmpp_2m": ("DPM-Solver++(2M) in flow form: Wan's 'dpm++' (wan schedule, sigma_max 1.0)", "flow"),
}

SCHEDULES = {
    "karras": "EDM/Karras rho-schedule (Karras et al. 2022, eq. 5); SVD's discretization",
    "exponential": "log-sigma evenly spaced between sigma_max and sigma_min",
    "vp_linear": "DDPM linear betas 1e-4..0.02 over 1000 steps, converted to sigmas",
    "scaled_linear": "Stable Diffusion scaled-linear betas 0.00085..0.012, converted to sigmas",
    "cosine": "cosine alpha_bar (Nichol & Dhariwal 2021), converted to sigmas",
    "flow": "flow-matching sigmas 1 -> 0 with SD3 time shift (sigma in [0, 1])",
    "wan": "Wan's shifted flow sigmas from float32(0.999) (UniPC; sigma_max=1.0 for its DPM++), shift 5",
}

# a parameterisation (:data:`i2v.diffusion.denoisers.PARAMETERIZATIONS`) -> the noising it was trained with:
# "ve" x = x0 + sigma eps, "flow" x = (1 - sigma) x0 + sigma eps
FORMS = {"eps": "ve", "v": "ve", "edm": "ve", "edm_v": "ve", "flow": "flow"}


def check_sampler(name: str, prediction: str) -> str | None:
    """Whether sampler ``name`` fits a model of parameterisation ``prediction``, before any work is done.

    A flow-form sampler on a VE model is an error (its sigmas leave [0, 1]); a sampler that adds VE noise on a
    flow model runs but does not sample the model's marginals exactly: the returned note says so (None when the
    sampler fits). Unknown names are an error listing the valid ones."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    if prediction not in FORMS:
        raise ConfigError(f"unknown parameterisation {prediction!r}; choose one of: {', '.join(FORMS)}")
    form, fits = FORMS[prediction], SAMPLERS[name][1]
    if fits in ("any", form):
        return None
    if fits == "flow":
        fitting = [n for n, (_, f) in SAMPLERS.items() if f != "flow"]
        raise ConfigError(f"{name} is written for flow-matching models; this one is {prediction!r} "
                          f"(x = x0 + sigma eps): use one of {', '.join(fitting)}")
    return (f"{name} adds fresh noise for the form x = x0 + sigma eps; this {prediction!r} model is flow-form, so it "
            f"runs but does not sample the model's distribution exactly (the deterministic samplers do)")
