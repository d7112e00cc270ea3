"""The warp head moves pixels exactly like OpenCV's affine warp, learns a shift from data, and a model gains one
without changing what it computes (fine-tuning from weights that lack it)."""
import copy

import cv2
import numpy as np
import pytest
import torch

from i2v.errors import CheckpointError
from i2v.models.builtin.heads import INSIDE_INIT, MASK_INIT, WarpHead
from i2v.train import build_model, export_model, init_from, load_config

SIZE = 48


def smooth_image(seed=0, size=SIZE) -> np.ndarray:
    """(size, size, 3) float32 in [-1, 1]: random colours blurred so bilinear sampling is well conditioned."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(-1, 1, (size, size, 3)).astype(np.float32), (0, 0), 2.0)
    return img / np.abs(img).max()


def head_with(theta: np.ndarray, gain: float, emb_dim=8) -> WarpHead:
    """A head whose affine map and gain are fixed (weights zero, so the conditioning vector does not matter)."""
    head = WarpHead(emb_dim)
    with torch.no_grad():
        head.affine.bias.copy_(torch.from_numpy(theta - np.array([[1, 0, 0], [0, 1, 0]])).flatten())
        head.gain.bias.fill_(gain)
    return head


def run(head, img: np.ndarray, flow=None) -> np.ndarray:
    first = torch.from_numpy(img).permute(2, 0, 1)[None]
    with torch.no_grad():
        out = head(first, torch.zeros(1, head.hidden.in_features), flow)
    return out[0].permute(1, 2, 0).numpy()


def test_zero_initialised_head_adds_nothing():
    out = run(WarpHead(8), smooth_image())
    assert np.abs(out).max() == 0


def test_integer_translation_is_an_exact_shift():
    img, k = smooth_image(), 5
    theta = np.array([[1, 0, -2 * k / SIZE], [0, 1, 0]])  # normalised coordinates span 2 over SIZE pixels
    out = run(head_with(theta, 1.0), img)
    np.testing.assert_allclose(out[:, k:], img[:, :-k], atol=1e-5)  # content moved k px to the right
    np.testing.assert_allclose(out[:, :k], np.repeat(img[:, :1], k, axis=1), atol=1e-5)  # border repeats


def test_residual_flow_is_a_per_pixel_shift():
    img, k = smooth_image(1), 3
    flow = torch.zeros(1, 2, SIZE, SIZE)
    flow[:, 1] = -2 * k / SIZE / 0.1  # y component, in units of 0.1 normalised coordinates
    out = run(head_with(np.array([[1, 0, 0], [0, 1, 0.0]]), 1.0), img, flow)
    np.testing.assert_allclose(out[k:], img[:-k], atol=1e-5)  # content moved k px down


@pytest.mark.parametrize("angle,scale", [(12.0, 1.0), (0.0, 1.25), (-20.0, 0.8)])
def test_affine_map_matches_opencv(angle, scale):
    """theta in normalised coordinates == OpenCV's pixel-space inverse map about the image centre."""
    img = smooth_image(2)
    a = np.deg2rad(angle)
    A = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) / scale
    theta = np.concatenate([A, [[0.1], [-0.05]]], axis=1)
    c = (SIZE - 1) / 2
    M = np.concatenate([A, (np.array([c, c]) - A @ [c, c] + theta[:, 2] * SIZE / 2)[:, None]], axis=1)
    ref = cv2.warpAffine(img, M, (SIZE, SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    out = run(head_with(theta, 1.0), img)
    # OpenCV rounds sampling positions to 1/32 px; the image's gradient is < 0.1 per px
    np.testing.assert_allclose(out, ref, atol=5e-3)


def test_head_learns_a_subpixel_shift_from_examples():
    """Gradient descent through grid_sample recovers a 2.5 px pan and unit gain from (frame, shifted frame)."""
    torch.manual_seed(0)
    imgs = [smooth_image(s) for s in range(4)]
    M = np.array([[1, 0, -2.5], [0, 1, 0]], dtype=np.float64)  # dst(x) = src(x - 2.5): content moves right
    targets = [cv2.warpAffine(i, M, (SIZE, SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE) for i in imgs]
    first = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
    target = torch.from_numpy(np.stack(targets)).permute(0, 3, 1, 2)
    head = WarpHead(8)
    emb = torch.ones(4, 8)
    opt = torch.optim.Adam(head.parameters(), lr=2e-2)
    for _ in range(200):  # converged (loss ~1e-10) by then; Adam then jitters around the optimum
        loss = (head(first, emb)[:, :, 4:-4, 4:-4] - target[:, :, 4:-4, 4:-4]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        e = torch.nn.functional.silu(head.hidden(torch.nn.functional.silu(emb[:1])))
        theta = head.affine(e).view(2, 3)
        gain = head.gain(e).item()
    assert theta[0, 2].item() * SIZE / 2 == pytest.approx(-2.5, abs=0.05)
    assert theta[1, 2].item() * SIZE / 2 == pytest.approx(0.0, abs=0.05)
    assert gain == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("backbone", ["unet", "dit"])
def test_fine_tuning_adds_a_warp_head_without_changing_the_function(tmp_path, backbone):
    small = {"unet": ["unet.channels=[16, 32]", "unet.spatial_attention=[false, true]"],
             "dit": ["dit.dim=32", "dit.depth=1"]}[backbone]
    plain = load_config(None, [f"backbone=\"{backbone}\"", *small])
    torch.manual_seed(0)
    old = build_model(plain)
    with torch.no_grad():
        for p in old.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # non-zero everywhere, like a trained model
    export_model(tmp_path / "model.safetensors", old, plain, step=1, minutes=0.0)
    warp = load_config(None, [f"backbone=\"{backbone}\"", *small, f"{backbone}.warp_head=true"])
    new = build_model(warp)
    ema = copy.deepcopy(new)
    logs = []
    init_from(tmp_path / "model.safetensors", new, ema, log=logs.append)
    assert "8 new ones keep their initialisation" in logs[0] and "warp.gain.weight" in logs[0]
    x, first = torch.randn(1, 3, 3, 32, 32), torch.randn(1, 3, 32, 32)
    kw = dict(first_frame=first, motion=torch.tensor([2]), speed=torch.tensor([1.0]))
    with torch.no_grad():
        ref = old.half().float()(x, torch.tensor([0.1]), **kw)  # the file holds fp16 weights
        torch.testing.assert_close(new(x, torch.tensor([0.1]), **kw), ref)
        torch.testing.assert_close(ema(x, torch.tensor([0.1]), **kw), ref)
    # the other way round is refused: the file has tensors this model lacks
    export_model(tmp_path / "warp.safetensors", new, warp, step=1, minutes=0.0)
    with pytest.raises(CheckpointError, match="unexpected.*warp"):
        init_from(tmp_path / "warp.safetensors", build_model(plain), build_model(plain))


def test_warp_loss_at_initialisation_is_the_static_baseline_error():
    """An untrained head warps by the identity, so its auxiliary loss is frame 0 vs frames 1..T-1."""
    from i2v.data.procedural import make_batch
    from i2v.train import make_cond, warp_loss

    cfg = load_config("configs/builtin_dit.toml", ["dit.dim=32", "dit.depth=1"])
    model = build_model(cfg)
    x0, labels, speeds = make_batch("eval", range(2), frames=5, size=32)
    got = warp_loss(model, x0, make_cond(x0, labels, speeds), torch.zeros(2)).item()
    expect = (x0[:, :, 1:] - x0[:, :, :1]).square().mean().item()
    assert got == pytest.approx(expect, rel=1e-5) and expect > 1e-3


@pytest.mark.parametrize("backbone", ["unet", "dit"])
def test_warp_mask(tmp_path, backbone):
    """Adding the mask to a trained warp-head model moves D by m0 of the way to the moved frame (the initial
    logit: the backbone's bias, U-Net -4, DiT 0, plus the inside prior +4, as the identity warp reads every pixel
    from inside the first frame); a saturated mask makes D the moved first frame itself (here the first frame),
    whatever the noisy input."""
    from i2v.diffusion import Denoiser
    small = {"unet": ["unet.channels=[16, 32]", "unet.spatial_attention=[false, true]"],
             "dit": ["dit.dim=32", "dit.depth=1"]}[backbone]
    head = load_config(None, [f"backbone=\"{backbone}\"", *small, f"{backbone}.warp_head=true"])
    torch.manual_seed(0)
    old = build_model(head)
    with torch.no_grad():
        for name, p in old.named_parameters():
            if not name.startswith(("warp.affine", "flow_out")):  # keep the identity warp: W is the first frame
                p.add_(torch.randn_like(p) * 0.05)
    export_model(tmp_path / "model.safetensors", old, head, step=1, minutes=0.0)
    masked = load_config(None, [f"backbone=\"{backbone}\"", *small, f"{backbone}.warp_head=true",
                                f"{backbone}.warp_mask=true"])
    new = build_model(masked)
    logs = []
    init_from(tmp_path / "model.safetensors", new, copy.deepcopy(new), log=logs.append)
    assert ("5 new ones keep their initialisation (mask_out.bias, mask_out.weight, warp.inside, warp.mask.bias, "
            "warp.mask.weight)") in logs[0]
    x, first = torch.randn(1, 3, 3, 32, 32), torch.randn(1, 3, 32, 32).clamp(-1, 1)
    cond = dict(first_frame=first, motion=torch.tensor([2]), speed=torch.tensor([1.0]))
    sigma = torch.tensor([1.5])
    with torch.no_grad():
        d_old = Denoiser(old.half().float(), "edm")(x, sigma, cond)
        m0 = torch.sigmoid(torch.tensor((MASK_INIT if backbone == "unet" else 0.0) + INSIDE_INIT))
        want = m0 * first[:, :, None] + (1 - m0) * d_old
        torch.testing.assert_close(Denoiser(new, "edm")(x, sigma, cond), want, atol=1e-5, rtol=1e-4)
        new.mask_out.bias.fill_(40.0)  # m = 1 everywhere
        for noisy in (x, torch.randn_like(x) * 3):
            torch.testing.assert_close(Denoiser(new, "edm")(noisy, sigma, cond), first[:, :, None].expand_as(x),
                                       atol=1e-5, rtol=0)
    with pytest.raises(Exception, match="warp_mask needs .*warp_head"):
        build_model(load_config(None, [f"backbone=\"{backbone}\"", *small, f"{backbone}.warp_mask=true"]))


def test_warp_mask_inside_prior():
    """Shifting the first frame 4 px left: the last 4 columns have nothing to show (the grid reads beyond the
    right edge), so the prior lowers their mask logit by INSIDE_INIT while it raises every other pixel's."""
    head = WarpHead(8, mask=True)
    with torch.no_grad():
        head.affine.bias.copy_(torch.tensor([0, 0, 4 * 2 / SIZE, 0, 0, 0]))  # out(x) = first(x + 4 px)
    first = torch.from_numpy(smooth_image()).permute(2, 0, 1)[None]
    with torch.no_grad():
        out = head.output(torch.zeros(1, 3, SIZE, SIZE), first, torch.zeros(1, 8), None, torch.zeros(1, 1, SIZE, SIZE))
    mask = out.mask[0, 0, 0]
    inside, outside = torch.sigmoid(torch.tensor(INSIDE_INIT)), torch.sigmoid(torch.tensor(-INSIDE_INIT))
    torch.testing.assert_close(mask[:, :SIZE - 4], inside.expand(SIZE, SIZE - 4))
    torch.testing.assert_close(mask[:, SIZE - 4:], outside.expand(SIZE, 4))
    np.testing.assert_allclose(out.frames[0, :, 0, :, :SIZE - 4].numpy(), first[0, :, :, 4:].numpy(), atol=1e-5)
