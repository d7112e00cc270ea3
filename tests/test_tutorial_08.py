"""Runs tutorials/08_wan_step_by_step.py in small settings (a subprocess, as a user would), checks its figures, and
checks the numbers it prints against values obtained here independently:

- the ORIGINAL Wan code's run with the same weights (../shared/reference/wan21-i2v-tiny/expected.safetensors:
  block 0's q after RoPE, e0, the velocity, the guided velocity, the latent after the first and the last sampler
  step), the block's own ``modulation`` read straight from the released-layout safetensors file, and the
  parameter counts of the full-size manifest (wan-full-keys.json);
- closed forms: L = F' (H'/2) (W'/2) tokens, the RoPE split d/2 - 2 floor(d/6), floor(d/6), floor(d/6) and the
  angles pos * theta^(-j / n), Wan's shifted schedule and integer timesteps (numpy, written out here), and the
  first FlowUniPC step computed by hand as the Euler step x + (sigma_1 - sigma_0) v from the original's tensors.

A second run without ../shared checks that the tutorial falls back to a random model and random inputs."""

from __future__ import annotations

import ast
import json
import math
import re

import numpy as np
import pytest

from conftest import run_tutorial, shared_path

FIGURES = ("08_rope_bands.png", "08_modulation.png", "08_attention.png", "08_unipc_step.png")


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    return run_tutorial("08_wan_step_by_step.py", tmp_path_factory.mktemp("tutorial08"), FIGURES)


@pytest.fixture(scope="module")
def reference():
    from safetensors.torch import load_file

    case = shared_path("reference", "wan21-i2v-tiny")
    return case, load_file(case / "expected.safetensors"), json.loads((case / "case.json").read_text())["settings"]


def numbers(pattern, text):
    m = re.search(pattern, text)
    assert m, f"not printed: {pattern}"
    return m.groups()


def floats(s):
    return [float(v) for v in ast.literal_eval(s)]


def split(d):
    return d // 2 - 2 * (d // 6), d // 6, d // 6


def wan_timesteps(steps, shift):
    """Wan's FlowUniPCMultistepScheduler.set_timesteps, written out: sigma from 0.999 to 0, shifted, x 1000."""
    s = np.linspace(np.float32(0.999), 0.0, steps + 1)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    return (s * 1000).astype(np.int64).tolist()


def check_closed_forms(out, fhw=(3, 6, 8), d=32, steps=4, shift=3.0):
    f, h, w = fhw[0], fhw[1] // 2, fhw[2] // 2
    assert f"tokens L = {f} x {h} x {w} = {f * h * w}, each patch 36 x 1 x 2 x 2 = 144 numbers" in out
    for width in (d, 128):
        assert f"head width d = {width}: {width // 2} pairs = (d/2 - 2 floor(d/6), floor(d/6), floor(d/6)) = " \
               f"{split(width)} for (frames, rows, columns)" in out
    token, bands = numbers(r"token \(f, h, w\) = (\(\d+, \d+, \d+\)) \(index \d+\): pairs 0, 1 of the frame band "
                           r"(.*)", out)
    token = ast.literal_eval(token)
    got = [floats(g) for g in re.findall(r"(\[[-\d., ]+\])", bands)]
    for pos, n, pair in zip(token, split(d), got):
        assert pair == pytest.approx([pos * 10000 ** (-j / n) for j in (0, 1)], abs=1e-4)
    a, b = numbers(r"q\.k at \(0, 1, 0\), \(1, 0, 2\): ([-\d.]+); both moved by \(1, 1, 2\): ([-\d.]+)", out)
    assert a == b  # RoPE: the score depends on the offset only
    (ts,) = numbers(r"timesteps (\[[\d, ]+\])", out)
    assert ast.literal_eval(ts) == wan_timesteps(steps, shift)
    (euler,) = numbers(r"one UniPC step vs the formula: max \|diff\| [\d.e+-]+; vs Euler: ([\d.e+-]+)", out)
    assert float(euler) < 1e-5  # the first (order-1) UniPC step is an Euler step of the flow ODE


def test_tutorial_runs_small_and_draws_its_figures(printed, reference):
    _, _, settings = reference
    assert "RANDOM weights" in printed and "the DiT and inputs of" in printed
    check_closed_forms(printed, tuple(settings["latent_fhw"]), steps=settings["sampling_steps"],
                       shift=settings["shift"])
    assert "mask built by the rule == the case's cond.mask: True ; y == cond.y: True" in printed


def test_dit_numbers_are_the_original_codes(printed, reference):
    case, E, _ = reference
    (q,) = numbers(r"q after RoPE, head 0, token 5, \[:4\] = (\[.*?\])", printed)
    assert floats(q) == pytest.approx(E["dit.step0.cond.block0.q_rope"][0, 5, 0, :4].tolist(), abs=2e-4)
    from safetensors import safe_open

    with safe_open(str(case / "diffusion_pytorch_model.safetensors"), framework="pt") as f:
        modulation = f.get_tensor("blocks.0.modulation")  # (1, 6, dim), the block's own parameter
    mod = (modulation + E["dit.step0.e0"])[0].double()
    for i, name in enumerate(("shift1", "scale1", "gate1", "shift2", "scale2", "gate2")):
        mean, std, first = numbers(rf"block 0 {name}: mean ([-+\d.]+), std ([\d.]+), \[:3\] = (\[.*?\])", printed)
        assert (float(mean), float(std)) == pytest.approx((mod[i].mean().item(), mod[i].std().item()), abs=2e-4)
        assert floats(first) == pytest.approx(mod[i, :3].tolist(), abs=2e-4)
    n_text = E["t5.prompt.out"].shape[0]
    assert f"text rows: {n_text} from the prompt + {512 - n_text} zero padding; the model embeds {n_text + 1} rows " \
           f"with a bias ln({512 - n_text}) = {math.log(512 - n_text):.3f}" in printed
    (v,) = numbers(r"velocity\[0, :4, 1, 2, 3\] = (\[.*?\])", printed)
    assert floats(v) == pytest.approx(E["dit.step0.cond.out"][:4, 1, 2, 3].tolist(), abs=2e-4)
    (g,) = numbers(r"guided velocity \(w = [\d.]+\) \[0, :4, 1, 2, 3\] = (\[.*?\])", printed)
    assert floats(g) == pytest.approx(E["sampler.noise_pred.0"][:4, 1, 2, 3].tolist(), abs=2e-4)


def test_sampler_numbers_are_the_original_codes(printed, reference):
    _, E, settings = reference
    assert wan_timesteps(settings["sampling_steps"], settings["shift"]) == E["sampler.timesteps"].tolist()
    s = E["sampler.sigmas"].double()
    x, v = E["inputs.noise"].double(), E["sampler.noise_pred.0"].double()
    euler = x + (s[1] - s[0]) * v  # the first step by hand, from the original's noise and guided velocity
    (x1,) = numbers(r"x_1\[0, :4, 1, 2, 3\] = (\[.*?\])", printed)
    assert floats(x1) == pytest.approx(euler[:4, 1, 2, 3].tolist(), abs=2e-4)
    assert floats(x1) == pytest.approx(E["sampler.latent.0"][:4, 1, 2, 3].tolist(), abs=2e-4)
    (xf,) = numbers(r"after all \d+ steps: x\[0, :4, 1, 2, 3\] = (\[.*?\])", printed)
    last = settings["sampling_steps"] - 1
    assert floats(xf) == pytest.approx(E[f"sampler.latent.{last}"][:4, 1, 2, 3].tolist(), abs=1e-3)


def test_full_size_numbers(printed):
    meta = json.loads(shared_path("reference", "wan-full-keys.json").read_text())["_meta"]
    for name, key in (("Wan2.1 I2V-14B", "i2v-14B"), ("Wan2.2 TI2V-5B", "ti2v-5B")):
        (count,) = numbers(rf"full size {name}: ([\d,]+) parameters, head width 128, RoPE pairs \(22, 21, 21\)",
                           printed)
        assert int(count.replace(",", "")) == meta[key]["params"], name
    f, h, w = (81 - 1) // 4 + 1, 480 // 8, 832 // 8
    assert f"latent (16, {f}, {h}, {w}) -> {f * (h // 2) * (w // 2):,} tokens" in printed


def test_tutorial_runs_without_shared(tmp_path, monkeypatch):
    """No ../shared (a fresh clone): a random tiny DiT and random inputs built by the script, said plainly."""
    monkeypatch.setenv("I2V_SHARED", str(tmp_path / "absent"))
    out = run_tutorial("08_wan_step_by_step.py", tmp_path, FIGURES)
    assert "(../shared is absent): a randomly initialised tiny Wan DiT and random inputs" in out
    check_closed_forms(out)
