"""Interpolating whole clips: timing, scene cuts, duplicate frames, seamless loops.

The clip is a timeline: input frame i sits at time i (in input-frame units). The output asks for frames at
times tau_k (``factor`` N: tau_k = k / N; a target ``fps``: tau_k = k * fps_in / fps_out). Each tau falls
between two *key* frames a <= tau <= b and becomes the frame at t = (tau - a) / (b - a) of that pair; the
pair's flow (or RIFE features) is computed once for all its times.

- **Duplicate frames** (a dropped frame that the encoder repeated, a stall): a frame whose mean absolute
  difference to the previous key frame is below ``duplicate_threshold`` is not a key frame; its time slot is
  filled by interpolating across it, so motion stays even instead of stuttering.
- **Scene cuts**: interpolating across a cut morphs two unrelated shots. A cut is declared when the colour
  content of two neighbouring key frames changes (per-channel histogram intersection below 0.85), or changes
  somewhat (below 0.95) *and* the layout changes too (normalised cross-correlation of 32x32 grey thumbnails
  below 0.3). Motion moves pixels but keeps the histogram (the 33 real frame pairs of Middlebury and UCF101:
  intersection >= 0.976); layout alone is no evidence, since a fast pan over fine texture decorrelates
  thumbnails. All 528 pairs of frames from different sequences there are cuts by this rule, none of the real
  pairs is (tests/test_interpolate.py). Across a cut the earlier frame is repeated instead.
- **Loops** (``loop=True``): the first frame is appended after the last, so the last -> first step is
  interpolated like any other and the clip repeats without a seam; that copy of the first frame is not output.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..errors import ConfigError, InputError
from ..video import to_uint8
from . import METHODS
from .flow_based import interpolate_pair as flow_pair


def as_frames(frames) -> np.ndarray:
    """(t, h, w, 3) uint8 array from a uint8 array, a list of (h, w, 3) arrays, or a (t, 3, h, w) float tensor."""
    if isinstance(frames, (list, tuple)):
        sizes = sorted({tuple(np.shape(f)) for f in frames})
        if len(sizes) > 1:
            raise InputError(f"frames have different sizes {sizes}; all frames must have the same size (resize them first)")
        frames = np.stack([np.asarray(f) for f in frames]) if frames else np.zeros((0, 1, 1, 3), np.uint8)
    return to_uint8(frames)


def _small_gray(f: np.ndarray, size: int = 64) -> np.ndarray:
    import cv2

    return cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def frame_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference (0..255) of two frames at 64x64 grey; used for duplicate detection."""
    return float(np.abs(_small_gray(a) - _small_gray(b)).mean())


def histogram_similarity(a: np.ndarray, b: np.ndarray, bins: int = 16) -> float:
    """Histogram intersection in [0, 1] of the per-channel colour histograms (1 = same colour content)."""
    sims = []
    for c in range(3):
        ha = np.bincount(a[..., c].ravel().astype(np.int64) * bins // 256, minlength=bins) / a[..., c].size
        hb = np.bincount(b[..., c].ravel().astype(np.int64) * bins // 256, minlength=bins) / b[..., c].size
        sims.append(np.minimum(ha, hb).sum())
    return float(np.mean(sims))


def thumbnail_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation in [-1, 1] of 32x32 grey thumbnails (1 = same layout)."""
    x, y = _small_gray(a, 32).astype(np.float64), _small_gray(b, 32).astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum() + 1e-9))


CUT_HISTOGRAM = 0.85  # below: different colour content, a cut
CUT_HISTOGRAM_WEAK = 0.95  # below, and the layout differs too: a cut
CUT_CORRELATION = 0.3


def is_scene_cut(a: np.ndarray, b: np.ndarray) -> bool:
    """True if a and b look like different shots (see the module docstring)."""
    hist = histogram_similarity(a, b)
    return hist < CUT_HISTOGRAM or (hist < CUT_HISTOGRAM_WEAK and thumbnail_correlation(a, b) < CUT_CORRELATION)


def output_times(n: int, factor: float | None = None, fps_in: float | None = None, fps_out: float | None = None,
                 loop: bool = False) -> np.ndarray:
    """Times (in input-frame units) of the output frames for ``n`` input frames. The timeline spans [0, n-1],
    or [0, n) with ``loop`` (time n is the first frame again, not output)."""
    if factor is None:
        if not fps_in or not fps_out or fps_in <= 0 or fps_out <= 0:
            raise ConfigError(f"a target fps needs the input's fps: got input {fps_in}, output {fps_out} "
                              f"(a folder of frames has no fps: pass --input-fps, or use --factor)")
        step = fps_in / fps_out
    else:
        if factor < 2 or int(factor) != factor:
            raise ConfigError(f"factor must be an integer >= 2 (2 doubles the frame rate), got {factor}")
        step = 1.0 / factor
    end = n if loop else n - 1
    times = np.arange(math.floor(end / step + 1e-9) + 1) * step  # 0, step, ... up to end
    return times[times < end - 1e-9] if loop else times  # loop: time n is frame 0 again, already output


def key_frames(frames: np.ndarray, duplicate_threshold: float) -> list[int]:
    """Indices of the frames that carry new content: the first, then each frame differing from the last key."""
    keys = [0]
    for i in range(1, len(frames)):
        if duplicate_threshold <= 0 or frame_difference(frames[keys[-1]], frames[i]) >= duplicate_threshold:
            keys.append(i)
    return keys


def interpolate_frames(frames, factor: int | None = 2, method: str = "flow", *, fps_in: float | None = None,
                       fps_out: float | None = None, loop: bool = False, checkpoint: str | os.PathLike | None = None,
                       rife=None, scale: float = 1.0, device="cpu", flow: str = "dis-fine",
                       flow_checkpoint=None, flow_iters: int = 12, scene_cuts: bool = True,
                       duplicate_threshold: float = 0.5, progress: bool = True, return_info: bool = False):
    """Interpolate a clip. ``frames``: (t, h, w, 3) uint8 (or a list, or a (t, 3, h, w) float tensor).

    ``factor`` N (>= 2): N times the frames ((t-1) N + 1, or t N with ``loop``); or ``factor=None`` with
    ``fps_in``/``fps_out`` for a target frame rate. ``method``: "flow" (bidirectional optical flow: ``flow`` is a
    method of :data:`i2v.motion.flow.FLOW_METHODS`, DIS refined by default; "raft" with ``flow_checkpoint`` =
    raft-things.pth and ``flow_iters``) or "rife" (``checkpoint`` = RIFE 4.25 flownet.pkl, or a ready ``rife``
    :class:`~i2v.interpolate.rife.RIFEInterpolator`).
    ``scene_cuts``: detect cuts and hold the frame across them instead of interpolating;
    ``duplicate_threshold``: mean abs difference (0..255, 64x64 grey) below which a frame repeats the previous
    one (0 disables). Returns (t', h, w, 3) uint8, and with ``return_info`` a dict (times, cuts, duplicates)."""
    frames = as_frames(frames)
    if len(frames) < 2:
        raise InputError(f"interpolation needs at least 2 frames, got {len(frames)}")
    if method not in METHODS:
        raise ConfigError(f"unknown interpolation method {method!r}; valid: {', '.join(METHODS)}")
    times = output_times(len(frames), factor, fps_in, fps_out, loop)
    if method == "rife" and rife is None:
        from .rife import RIFEInterpolator

        rife = RIFEInterpolator(checkpoint, device=device, scale=scale)
    flow_options = {}
    if method == "flow" and flow == "raft":
        from ..motion.flow import load_raft

        flow_options = {"model": load_raft(flow_checkpoint, device), "iters": flow_iters}
    pair_fn = rife if method == "rife" else (lambda a, b, ts: flow_pair(a, b, ts, flow=flow, flow_options=flow_options))

    seq = np.concatenate([frames, frames[:1]]) if loop else frames  # loop: time n is frame 0 again
    keys = key_frames(seq[:-1], duplicate_threshold) + [len(seq) - 1] if loop else key_frames(seq, duplicate_threshold)
    if not loop and keys[-1] != len(seq) - 1:
        keys.append(len(seq) - 1)  # trailing duplicates: end the timeline on the last frame (a still end)
    duplicates = sorted(set(range(len(seq))) - set(keys))
    cuts = []

    from tqdm.auto import tqdm

    out = np.empty((len(times),) + frames.shape[1:], np.uint8)
    bar = tqdm(total=len(times), desc=f"interpolate ({method})", unit="frame", disable=not progress)
    for a, b in zip(keys[:-1], keys[1:]):
        # the output times in [a, b) -- and b itself for the last pair
        hi = len(times) if b == keys[-1] else int(np.searchsorted(times, b - 1e-9))
        sel = range(int(np.searchsorted(times, a - 1e-9)), hi)
        if not sel:
            continue
        ts = [(times[j] - a) / (b - a) for j in sel]
        exact = [abs(t) < 1e-6 or abs(t - 1) < 1e-6 for t in ts]
        cut = scene_cuts and is_scene_cut(seq[a], seq[b])
        if cut:
            cuts.append((a, b))
        need = [t for t, e in zip(ts, exact) if not e and not cut]
        made = iter(pair_fn(seq[a], seq[b], need) if need else [])
        for j, t, e in zip(sel, ts, exact):
            if e:
                out[j] = seq[a] if abs(t) < 1e-6 else seq[b]
            elif cut:
                out[j] = seq[a]  # never morph across a cut: hold the last frame of the shot
            else:
                out[j] = (next(made)[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            bar.update(1)
    bar.close()
    if return_info:
        return out, {"times": times, "cuts": cuts, "duplicates": duplicates, "keys": keys}
    return out
