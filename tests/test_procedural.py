"""Procedural clips: deterministic by seed, splits disjoint, and the labelled motion is the motion — checked
against independent computations (exact slicing, scikit-image phase correlation, OpenCV's own rotation)."""

import cv2
import numpy as np
import pytest

from i2v.data.procedural import MOTIONS, PAN_PX, ROT_DEG, ZOOM_RATE, clip_seed, make_batch, make_clip
from i2v.errors import ConfigError


def test_same_seed_same_clip_and_splits_disjoint():
    a, b = make_clip(123), make_clip(123)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.flow, b.flow)
    assert (a.motion, a.speed) == (b.motion, b.speed)
    assert not np.array_equal(make_clip(124).frames, a.frames)
    train = {clip_seed("train", i) for i in range(2000)}
    held = {clip_seed("eval", 1000 * c + j) for c in range(len(MOTIONS)) for j in range(10)}
    assert not train & held
    with pytest.raises(ConfigError, match="split"):
        clip_seed("test", 0)
    with pytest.raises(ConfigError, match="zoom-in"):
        make_clip(0, motion="zoom")


def test_labels_cover_all_classes_and_batch_layout():
    labels = {make_clip(clip_seed("train", i), frames=2, with_flow=False).motion for i in range(120)}
    assert labels == set(MOTIONS)
    x, lab, spd = make_batch("train", [0, 1], frames=3, size=32)
    assert x.shape == (2, 3, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert lab.shape == (2,) and ((spd >= 0.5) & (spd <= 1.5)).all()


@pytest.mark.parametrize("motion,direction", [("pan-left", (1, 0)), ("pan-right", (-1, 0)),
                                              ("pan-up", (0, 1)), ("pan-down", (0, -1))])
def test_pan_frames_are_shifted_copies(motion, direction):
    # speed 1/PAN_PX: exactly one pixel per frame, so frame k is frame 0 shifted by k pixels (no sprites)
    clip = make_clip(7, motion=motion, speed=1 / PAN_PX, frames=6, size=32, sprites=0)
    f0 = clip.frames[0]
    dx, dy = direction
    for k in range(1, 6):
        shifted = np.roll(f0, (k * dy, k * dx), axis=(0, 1))
        inner = (slice(k, 32 - k), slice(k, 32 - k))  # away from the content that enters at the edge
        np.testing.assert_allclose(clip.frames[k][inner], shifted[inner], atol=1e-5)
    assert np.abs(clip.frames[5] - f0).mean() > 0.01  # it does move


def test_pan_speed_matches_phase_correlation():
    from skimage.registration import phase_cross_correlation
    clip = make_clip(11, motion="pan-up", speed=1.3, frames=9, size=64, sprites=0)
    gray = clip.frames.mean(axis=-1)
    for k in (4, 8):
        shift, _, _ = phase_cross_correlation(gray[k], gray[0], upsample_factor=20)
        # shift (dy, dx) registers frame 0 onto frame k: content moved down by PAN_PX * speed * k
        np.testing.assert_allclose(shift, [PAN_PX * 1.3 * k, 0], atol=0.15)


@pytest.mark.parametrize("motion", ["zoom-in", "zoom-out", "rotate-cw", "rotate-ccw"])
def test_zoom_and_rotation_match_opencv(motion):
    size, k, speed = 64, 6, 1.0
    clip = make_clip(3, motion=motion, speed=speed, frames=k + 1, size=size, sprites=0)
    c = ((size - 1) / 2, (size - 1) / 2)
    if motion.startswith("zoom"):
        s = (1 + ZOOM_RATE * speed) ** (k if motion == "zoom-in" else -k)
        m = cv2.getRotationMatrix2D(c, 0, s)
    else:  # OpenCV's positive angle is counter-clockwise on screen
        m = cv2.getRotationMatrix2D(c, ROT_DEG * speed * k * (-1 if motion == "rotate-cw" else 1), 1)
    expect = cv2.warpAffine(clip.frames[0], m, (size, size), flags=cv2.INTER_LINEAR)
    inner = (slice(16, 48), slice(16, 48))
    err = np.abs(clip.frames[k][inner] - expect[inner]).mean()
    wrong = np.abs(clip.frames[k][inner] - clip.frames[0][inner]).mean()
    assert err < 0.25 * wrong, (err, wrong)


def test_slide_moves_sprites_right_over_a_still_background():
    clip = make_clip(5, motion="slide", speed=1.0, frames=8, size=64, sprites=1)
    moving = np.abs(clip.frames[7] - clip.frames[0]).sum(-1) > 0.05
    assert 0 < moving.mean() < 0.3  # only the sprite's surroundings change
    # the brightest-difference columns move right: centroid of |f_k - f_{k-1}| grows with k
    cols = [np.nonzero(np.abs(clip.frames[k] - clip.frames[0]).sum(-1).sum(0) > 0.5)[0].max() for k in (2, 7)]
    assert cols[1] > cols[0]
