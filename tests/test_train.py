"""The trainer: a tiny run reduces the diffusion loss on held-out clips; resume continues bit-for-bit;
configs are type-checked; `i2v train` runs end to end and its export loads in the pipeline."""

import pytest
import torch
from safetensors.torch import load_file

from i2v.cli import main
from i2v.data.procedural import make_batch
from i2v.diffusion.denoisers import Denoiser
from i2v.errors import ConfigError
from i2v.calibrate import (CAMERA_LAYERS, MASK_LAYERS, calibration_loss, calibration_parameters, camera_error,
                           camera_loss, camera_theta, draw_camera_batch, temporal_loss, true_flows)
from i2v.train import build_model, diffusion_loss, load_config, make_cond, sample_sigma, train



def tiny(tmp_path, backbone="unet", steps=40, **extra):
    sets = [f"train.steps={steps}", f"train.out_dir='{tmp_path / backbone}'", "train.batch_size=2",
            "train.lr=2e-3", "train.warmup=5", "train.checkpoint_every=1000", "data.frames=4", "data.size=32",
            "unet.channels=[16, 32]", "unet.spatial_attention=[false, false]", "dit.dim=32", "dit.depth=1",
            "train.ema_decay=0.9", "train.bf16=false"] + [f"{k}={v}" for k, v in extra.items()]
    return load_config(f"configs/builtin_{backbone}.toml", sets)


def heldout_loss(cfg, model) -> float:
    """Diffusion loss on 4 eval-split clips at fixed noise (nothing here is from the training stream)."""
    x0, labels, speeds = make_batch("eval", range(4), frames=cfg.data.frames, size=cfg.data.size)
    g = torch.Generator().manual_seed(123)
    sigma = sample_sigma(cfg.diffusion, 4, g)
    eps = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        return diffusion_loss(Denoiser(model, cfg.diffusion.prediction), x0, make_cond(x0, labels, speeds),
                              sigma, eps).item()


@pytest.mark.parametrize("prediction,factor", [("edm", 0.8), ("flow", 0.95)])  # flow's v-target falls slower early
def test_tiny_run_reduces_heldout_loss(tmp_path, prediction, factor):
    cfg = tiny(tmp_path, **{"diffusion.prediction": f"'{prediction}'"})
    torch.manual_seed(cfg.train.seed)
    before = heldout_loss(cfg, build_model(cfg))  # the same initial weights train() starts from
    out = train(cfg, progress=False, log=lambda *a: None)
    after_model = build_model(cfg)
    after_model.load_state_dict({k: v.float() for k, v in load_file(f"{out['out_dir']}/model.safetensors").items()})
    after = heldout_loss(cfg, after_model)
    assert after < factor * before, (before, after)


def test_resume_continues_exactly(tmp_path):
    straight = train(tiny(tmp_path / "a", steps=6), progress=False, log=lambda *a: None)
    train(tiny(tmp_path / "b", steps=3), progress=False, log=lambda *a: None)
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny(tmp_path / "b", steps=6), progress=False, log=lambda *a: None)
    resumed = train(tiny(tmp_path / "b", steps=6), resume=True, progress=False, log=lambda *a: None)
    assert [s for s, _ in resumed["loss"]] == [4, 5, 6]
    assert [v for _, v in resumed["loss"]] == [v for _, v in straight["loss"][3:]]
    a = load_file(f"{straight['out_dir']}/checkpoint.safetensors")
    b = load_file(f"{resumed['out_dir']}/checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_is_type_checked(tmp_path):
    cfg = load_config("configs/builtin_dit.toml", ["train.lr=1e-3", "dit.depth=2", "train.max_minutes=1"])
    assert (cfg.backbone, cfg.train.lr, cfg.dit.depth, cfg.train.max_minutes) == ("dit", 1e-3, 2, 1.0)
    with pytest.raises(ConfigError, match="unknown key 'lrate'"):
        load_config("configs/builtin_dit.toml", ["train.lrate=1"])
    with pytest.raises(ConfigError, match="train.steps: expected int"):
        load_config("configs/builtin_dit.toml", ["train.steps=1.5"])
    with pytest.raises(ConfigError, match="backbone must be one of"):
        load_config(None, ["backbone=resnet"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_cli_train_then_animate(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", "--config", "configs/builtin_dit.toml", "--set", "train.steps=2", "--set", f"train.out_dir='{out}'",
                 "--set", "dit.dim=32", "--set", "dit.depth=1", "--set", "data.frames=3", "--set", "data.size=32"]) == 0
    weights = tmp_path / "w"
    weights.mkdir()
    (out / "model.safetensors").rename(weights / "builtin_dit.safetensors")
    monkeypatch.setenv("I2V_WEIGHTS", str(weights))
    import i2v.pipelines.builtin as builtin
    monkeypatch.setattr(builtin, "_CACHE", {})
    # the preset's diffusion.sigma_min travels with the weights and is where sampling stops
    preset = load_config("configs/builtin_dit.toml").diffusion.sigma_min
    assert preset != 0.002  # the presets recommend stopping early (docs/builtin-model.md)
    sigmas = builtin.BuiltinPipeline.load("dit").sigmas(5)
    assert sigmas[-2].item() == pytest.approx(preset) and sigmas[-1].item() == 0 and sigmas[0].item() == pytest.approx(80.0)
    video = tmp_path / "v.gif"
    assert main(["animate", "i2v/assets/example.png", "--backbone", "dit", "--steps", "2", "-o", str(video)]) == 0
    assert video.exists()
    assert main(["animate", "i2v/assets/example.png", "--backbone", "dit", "--steps", "2", "-o", str(video)]) == 1
    assert "exists" in capsys.readouterr().err


# --- stage "calibrate": the warp mask learns on the sampler's own trajectories ---------------------------------

def test_calibration_loss_is_the_loss_along_the_sampler_trajectory():
    """Recomputed independently: run DPM-Solver++(2M) with a callback that records every state x_i, then take
    ((D(x_i, sigma_i) - x0) / c_out)^2 over frames 1..T-1 at each step and average."""
    from i2v.diffusion.samplers import dpmpp_2m
    from i2v.diffusion.schedules import karras
    cfg = load_config("configs/builtin_unet.toml", ["data.frames=3", "data.size=32", "unet.channels=[16, 32]",
                                                     "unet.spatial_attention=[false, false]"])
    torch.manual_seed(0)
    model = build_model(cfg)
    for p in model.parameters():  # a non-trivial network (the zero-initialised branches would hide mistakes)
        p.data.add_(0.05 * torch.randn_like(p))
    den = Denoiser(model.requires_grad_(False), "edm")
    x0, labels, speeds = make_batch("train", range(2), frames=3, size=32)
    cond = make_cond(x0, labels, speeds)
    sigmas = karras(4, sigma_min=3.0, sigma_max=80.0)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    states = [eps * sigmas[0]]
    dpmpp_2m(den, states[0], sigmas, cond=cond, callback=lambda info: states.append(info["x"]))
    expected = []
    for x, s in zip(states[:-1], sigmas[:-1]):
        s = s.to(torch.float32).expand(2)
        c_out = (s * 0.5 / (s**2 + 0.25).sqrt())[:, None, None, None, None]  # EDM: sigma sigma_data / sqrt(...)
        expected.append(((den(x, s, cond) - x0) / c_out)[:, :, 1:].square().mean())
    got = calibration_loss(den, x0, cond, sigmas.to(torch.float32), eps)
    assert got.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    # "output": the last step only; temporal: plus the temporal loss of the returned video (frame 0 = the input)
    video = torch.cat([x0[:, :, :1], states[-1][:, :, 1:]], dim=2)  # the sampler's result is D at the last step
    got = calibration_loss(den, x0, cond, sigmas.to(torch.float32), eps, on="output", temporal=0.7)
    want = expected[-1] + 0.7 * temporal_loss(video, true_flows(x0))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_calibration_raises_the_mask_where_the_moved_frame_is_exact():
    """A still clip: the true frames are the first frame, which the warp head at initialisation (identity warp)
    reproduces exactly, so the optimum is mask = 1. A few steps on the mask parameters alone must raise the mask
    everywhere it was 0.5 and lower the loss."""
    cfg = load_config("configs/builtin_unet.toml", ["data.frames=3", "data.size=32", "unet.channels=[16, 32]",
                                                     "unet.spatial_attention=[false, false]"])
    torch.manual_seed(0)
    model = build_model(cfg)
    den = Denoiser(model, "edm")
    from i2v.data.procedural import make_clip
    first = torch.from_numpy(make_clip(3).frames[0]).permute(2, 0, 1) * 2 - 1  # (3, h, w) in [-1, 1]
    first = torch.nn.functional.interpolate(first[None], size=32, mode="area")
    x0 = first[:, :, None].expand(-1, -1, 3, -1, -1).contiguous()  # (1, 3, t, h, w): nothing moves
    cond = make_cond(x0, torch.tensor([0]), torch.tensor([1.0]))
    from i2v.diffusion.schedules import karras
    sigmas = karras(3, sigma_min=3.0, sigma_max=80.0).to(torch.float32)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))

    def mean_mask():
        with torch.no_grad():
            return model(x0 + 3.0 * eps, torch.tensor([0.25 * torch.log(torch.tensor(3.0))]), **cond).mask.mean().item()

    trainable = calibration_parameters(model)
    named = {id(p): n for n, p in model.named_parameters()}
    assert {named[id(p)] for p in trainable} == {
        "mask_out.weight", "mask_out.bias", "warp.mask.weight", "warp.mask.bias", "warp.inside"}
    model.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trainable, lr=0.05)
    before_mask, before_loss = mean_mask(), calibration_loss(den, x0, cond, sigmas, eps).item()
    assert before_mask == pytest.approx(0.5, abs=1e-3)  # MASK_INIT + INSIDE_INIT = 0 inside the frame
    for _ in range(20):
        loss = calibration_loss(den, x0, cond, sigmas, eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert mean_mask() > 0.8 and calibration_loss(den, x0, cond, sigmas, eps).item() < 0.3 * before_loss


def test_calibrate_stage_trains_only_the_mask(tmp_path):
    first = train(tiny(tmp_path / "a", steps=3), progress=False, log=lambda *a: None)
    init = f"{first['out_dir']}/model.safetensors"
    cfg = tiny(tmp_path / "b", steps=2, **{"train.stage": "calibrate", "train.calibrate_steps": 3,
                                           "train.init": f"'{init}'", "train.ema_decay": 0.0})
    train(cfg, progress=False, log=lambda *a: None)
    before, after = load_file(init), load_file(f"{cfg.train.out_dir}/model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(any(k == m or k.startswith(m + ".") for m in MASK_LAYERS) for k in changed), changed


def test_calibrate_stage_config_errors():
    with pytest.raises(ConfigError, match="train.stage must be one of denoise, calibrate, camera"):
        load_config("configs/builtin_unet.toml", ["train.stage=finetune"])
    with pytest.raises(ConfigError, match="unet.warp_mask = true"):
        load_config("configs/builtin_unet.toml", ["train.stage=calibrate", "unet.warp_mask=false"])
    with pytest.raises(ConfigError, match="train.temporal_loss is a loss weight, >= 0; got -1.0"):
        load_config("configs/builtin_unet.toml", ["train.stage=calibrate", "train.temporal_loss=-1"])
    model = build_model(load_config("configs/builtin_unet.toml", ["unet.channels=[16, 32]",
                                                                  "unet.spatial_attention=[false, false]"]))
    with pytest.raises(ConfigError, match="'conv_output' names no parameter of UNet3D; its modules are conv_in"):
        calibration_parameters(model, ("mask_out", "conv_output"))
    assert len(calibration_parameters(model, ("conv_out", "warp"))) == 2 + 9  # conv_out + the warp head's 9 tensors


def test_temporal_loss_analytic():
    """Frames of a texture shifted one pixel right per frame: with the true flow (k+1 -> k is (-1, 0)) nothing
    changes along the motion, loss 0; a still video plus independent Gaussian noise of std s in every frame:
    |n1 - n2| with n1 - n2 ~ N(0, 2 s^2) has mean 2 s / sqrt(pi)."""
    g = torch.Generator().manual_seed(0)
    texture = torch.rand(3, 32, 40, generator=g)
    video = torch.stack([texture.roll(k, dims=-1) for k in range(5)], dim=1)[None]  # (1, 3, 5, h, w)
    flow = torch.zeros(1, 4, 2, 32, 40)
    flow[:, :, 0] = -1.0
    assert temporal_loss(video, flow).item() == 0.0
    assert temporal_loss(video, torch.zeros_like(flow)).item() > 0.1  # the wrong flow is penalised
    s = 0.1
    noisy = texture[None, :, None].expand(-1, -1, 16, -1, -1) + s * torch.randn(1, 3, 16, 32, 40, generator=g)
    expected = 2 * s / torch.pi ** 0.5
    assert temporal_loss(noisy, torch.zeros(1, 15, 2, 32, 40)).item() == pytest.approx(expected, rel=0.02)


# --- stage "camera": the warp head's affine map regressed onto the true camera move --------------------------

@pytest.mark.parametrize("motion", ["pan-left", "pan-down", "zoom-in", "zoom-out", "rotate-cw", "rotate-ccw",
                                    "static"])
def test_camera_theta_is_the_background_flow_of_the_generator(motion):
    """The target, through affine_grid (the head's own convention), lands every pixel where the clip generator's
    exact backward flow to frame 0 says (a clip without sprites: its flow is the background's everywhere)."""
    import torch.nn.functional as F

    from i2v.data.procedural import make_clip

    clip = make_clip(5, motion=motion, speed=1.3, frames=6, size=32, sprites=0)
    theta = camera_theta(motion, 1.3, 6, 32)
    grid = F.affine_grid(theta, [6, 1, 32, 32], align_corners=False)  # (t, h, w, 2) normalised
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    flow = torch.from_numpy(clip.flow).double()  # (t, h, w, 2) pixels
    want = torch.stack([(2 * (xs + flow[..., 0]) + 1) / 32 - 1, (2 * (ys + flow[..., 1]) + 1) / 32 - 1], -1)
    assert (grid.double() - want).abs().max() < 1e-5


def test_camera_theta_of_the_object_classes_is_still():
    """slide and bounce move sprites only (their clips always have one): the camera map is the identity."""
    for motion in ("static", "slide", "bounce"):
        assert torch.equal(camera_theta(motion, 1.1, 5, 64), torch.eye(2, 3).expand(5, -1, -1))


def test_camera_error_is_a_distance_in_pixels():
    """A pure shift by (dx, dy) in normalised units moves every point by |(dx, dy)| size / 2 pixels; a zoom by s
    about the centre moves the point x by |s - 1| |x|, whose mean over the 9 x 9 grid is known."""
    eye = torch.eye(2, 3)[None]
    shift = eye.clone()
    shift[0, :, 2] = torch.tensor([0.03, -0.04])
    assert camera_error(shift, eye, 64).item() == pytest.approx(0.05 * 32, rel=1e-6)
    zoom = eye.clone() * 1.1
    s = torch.linspace(-1, 1, 9)
    radius = (s[None] ** 2 + s[:, None] ** 2).sqrt().mean()
    assert camera_error(zoom, eye, 64).item() == pytest.approx(0.1 * radius.item() * 32, rel=1e-5)


def test_camera_batch_is_a_function_of_seed_and_step():
    a, b = draw_camera_batch(64, 3, seed=1), draw_camera_batch(64, 3, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], draw_camera_batch(64, 4, seed=1)[0])
    labels, speeds, sigma = draw_camera_batch(4096, 0, sigma_min=5.0)
    assert 0.5 <= speeds.min() and speeds.max() <= 1.5 and 5.0 <= sigma.min() and sigma.max() <= 80.0
    assert set(labels.tolist()) == set(range(11))


def test_camera_stage_learns_the_move_and_changes_only_the_head(tmp_path):
    """Starting from a model whose warp head has never seen a camera move (identity maps), a short stage brings
    the maps' error on speeds it did not draw well down (a tiny model: 0.82 -> 0.48 px); only the head's
    per-frame layers change."""
    first = train(tiny(tmp_path / "a", steps=1), progress=False, log=lambda *a: None)
    init = f"{first['out_dir']}/model.safetensors"
    cfg = tiny(tmp_path / "b", steps=300, **{"train.stage": "camera", "train.init": f"'{init}'",
                                             "train.batch_size": 32, "train.lr": 1e-2, "train.warmup": 10})
    train(cfg, progress=False, log=lambda *a: None)
    before, after = load_file(init), load_file(f"{cfg.train.out_dir}/model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(any(k.startswith(m + ".") for m in CAMERA_LAYERS) for k in changed), changed

    def error(sd):
        model = build_model(cfg)
        model.load_state_dict({k: v.float() for k, v in sd.items()})
        labels = torch.tensor([1, 3, 5, 6, 7, 8])  # pans, zooms, rotations
        speeds = torch.tensor([0.55, 0.8, 1.05, 1.2, 1.35, 1.45])  # not a grid the stage saw
        with torch.no_grad():
            return camera_loss(model, labels, speeds, 0.25 * torch.full((6,), 10.0).log(), cfg.data.frames,
                               cfg.data.size).item()

    assert error(after) < 0.7 * error(before)


def test_camera_stage_config_errors():
    with pytest.raises(ConfigError, match="set train.init to a model.safetensors"):
        load_config("configs/builtin_unet.toml", ["train.stage=camera"])
    with pytest.raises(ConfigError, match="set unet.warp_head = true"):
        load_config("configs/builtin_unet.toml", ["train.stage=camera", "unet.warp_head=false", "unet.warp_mask=false",
                                                  "train.init=x.safetensors"])
