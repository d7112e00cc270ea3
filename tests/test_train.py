"""The trainer: a tiny run reduces the diffusion loss on held-out clips; resume continues bit-for-bit;
configs are type-checked; `i2v train` runs end to end and its export loads in the pipeline."""

import pytest
import torch
from safetensors.torch import load_file

from i2v.cli import main
from i2v.data.procedural import make_batch
from i2v.diffusion.denoisers import Denoiser
from i2v.errors import ConfigError
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
                              sigma, eps, cfg.diffusion.prediction).item()


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
