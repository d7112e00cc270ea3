"""Both backbones pass the same interface tests: shapes at any frame count, temporal layers that are the only
path between frames and start as the identity, and strict from_state_dict round trips with clear errors."""

import pytest
import torch

from i2v.diffusion import Proposal
from i2v.errors import CheckpointError
from i2v.models.builtin.dit import DiT, DiTConfig
from i2v.models.builtin.unet3d import UNet3D, UNet3DConfig

TINY = {
    "unet": lambda: UNet3D(UNet3DConfig(channels=(16, 32), spatial_attention=(False, True), emb_dim=32)),
    "dit": lambda: DiT(DiTConfig(dim=32, depth=2, emb_dim=32)),
    # the same with the output branch that warps the first frame (backbone.WarpHead)
    "unet-warp": lambda: UNet3D(UNet3DConfig(channels=(16, 32), spatial_attention=(False, True), emb_dim=32,
                                             warp_head=True)),
    "dit-warp": lambda: DiT(DiTConfig(dim=32, depth=2, emb_dim=32, warp_head=True)),
    # ... and with its mask: these return a Proposal (F, moved first frame, mask) for the Denoiser to blend
    "unet-mask": lambda: UNet3D(UNet3DConfig(channels=(16, 32), spatial_attention=(False, True), emb_dim=32,
                                             warp_head=True, warp_mask=True)),
    "dit-mask": lambda: DiT(DiTConfig(dim=32, depth=2, emb_dim=32, warp_head=True, warp_mask=True)),
}


def run(model, x, c, kw):
    """The network's raw output F, and with a warp mask also the per-pixel mask (concatenated on channels)."""
    out = model(x, c, **kw)
    if isinstance(out, Proposal):
        assert out.frames.shape == x.shape and out.mask.shape == (x.shape[0], 1, *x.shape[2:])
        assert 0 <= out.mask.min() and out.mask.max() <= 1
        return torch.cat([out.F, out.mask], dim=1)
    return out


def temporal_params(name, model):
    """The parameters that mix frames (zero at init by construction)."""
    if name.startswith("unet"):
        return [p for n, p in model.named_parameters() if "time_conv" in n or "temporal.proj" in n]
    # DiT: the temporal-attention gate g2 is chunk 5 of each block's 9-way adaLN output
    d = model.config.dim
    return [(b.ada.weight, slice(5 * d, 6 * d)) for b in model.blocks] + [(b.ada.bias, slice(5 * d, 6 * d)) for b in model.blocks]


def zero_temporal(name, model):
    with torch.no_grad():
        for item in temporal_params(name, model):
            if isinstance(item, tuple):
                item[0][item[1]] = 0
            else:
                item.zero_()


def inputs(t=5, b=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, t, size, size, generator=g), torch.randn(b, generator=g),
            dict(first_frame=torch.randn(b, 3, size, size, generator=g), motion=torch.tensor([1, 11])[:b],
                 speed=torch.tensor([0.5, 1.5])[:b]))


def randomize(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("t", [1, 5])
def test_shapes_any_frame_count(name, t):
    model = TINY[name]()
    x, c, kw = inputs(t=t)
    out = model(x, c, **kw)
    assert (out.F if isinstance(out, Proposal) else out).shape == x.shape
    run(model, x, c, kw)  # checks the proposal's shapes


@pytest.mark.parametrize("name", list(TINY))
def test_temporal_layers_start_at_identity_and_are_the_only_path_between_frames(name):
    model = TINY[name]()
    for item in temporal_params(name, model):  # zero at initialisation
        w = item[0][item[1]] if isinstance(item, tuple) else item
        assert w.abs().max() == 0
    randomize(model)
    x, c, kw = inputs()
    x2 = x.clone()
    x2[:, :, 2] += 1.0  # perturb frame 2 only
    with torch.no_grad():
        mixed = (run(model, x2, c, kw) - run(model, x, c, kw)).abs().amax(dim=(0, 1, 3, 4))
        zero_temporal(name, model)
        alone = (run(model, x2, c, kw) - run(model, x, c, kw)).abs().amax(dim=(0, 1, 3, 4))
    others = [0, 1, 3, 4]
    assert mixed[others].min() > 1e-4  # with temporal layers, frame 2 reaches the other frames
    assert alone[others].max() < 1e-5  # without them, frames are processed independently
    assert alone[2] > 1e-4


@pytest.mark.parametrize("name", list(TINY))
def test_from_state_dict_round_trip(name):
    model = TINY[name]()
    randomize(model)
    sd = model.state_dict()
    again = type(model).from_state_dict({k: v.clone() for k, v in sd.items()})
    assert again.config == model.config
    x, c, kw = inputs()
    with torch.no_grad():
        torch.testing.assert_close(run(again, x, c, kw), run(model, x, c, kw))


@pytest.mark.parametrize("name", list(TINY))
def test_from_state_dict_errors_name_the_tensor(name):
    cls = type(TINY[name]())
    sd = TINY[name]().state_dict()
    key = next(k for k in sd if "temporal" in k or "time_conv" in k)
    missing = {k: v for k, v in sd.items() if k != key}
    with pytest.raises(CheckpointError, match=rf"1 missing \({key} "):
        cls.from_state_dict(missing)
    bad = dict(sd)
    bad["embed.noise_mlp.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"wrong shape \(embed.noise_mlp.0.weight: expected \[32, 128\], found \[3, 3\]"):
        cls.from_state_dict(bad)
    with pytest.raises(CheckpointError, match=r"unexpected, not used by the model \(extra.weight"):
        cls.from_state_dict(dict(sd, **{"extra.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=f"not a {'UNet3D' if name.startswith('unet') else 'DiT'} checkpoint"):
        cls.from_state_dict({"foo": torch.zeros(1)})


def test_dit_full_attention_is_inferred_and_runs():
    model = DiT(DiTConfig(dim=32, depth=1, emb_dim=32, attention="full"))
    again = DiT.from_state_dict(model.state_dict())
    assert again.config.attention == "full"
    x, c, kw = inputs(t=3)
    assert again(x, c, **kw).shape == x.shape
