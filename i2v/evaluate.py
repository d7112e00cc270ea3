"""Evaluating the built-in model on held-out procedural clips: ``i2v eval``.

For every motion class, ``clips_per_class`` clips of the *eval* split (seeds that training never draws, see
:func:`i2v.data.procedural.clip_seed`) are rendered; each method predicts frames 1..T-1 from frame 0, the
label and the speed, and is scored against the true frames:

- **PSNR** ``10 log10(1 / MSE)`` per frame (pixels in [0, 1]), averaged over frames 1..T-1 and clips;
- **SSIM** (Wang et al. 2004; scikit-image's ``structural_similarity``, 7x7 window, per frame);
- **warping error**: mean |f_{k+1} - warp(f_k, F)| over pixels whose flow lands inside the frame, with F the
  DIS optical flow from f_{k+1} to f_k estimated *on the clip itself* (so the same measurement applies to
  real and generated clips);
- **flicker**: mean |f_{k+1} - f_k| over consecutive frames.

Methods: each model; **static** (frame 0 repeated: the baseline to beat); **oracle** (frame 0 backward-warped
with the true flow, which ignores disocclusions and new content: the ceiling of a model that only moves
pixels); and for the temporal metrics **ground truth** (the true clips).

:func:`evaluate_fullres` scores the built-in model's default, full-resolution path on the same held-out clips
rendered at ``scale`` times the pixels (``make_clip(..., scale=4)``: 256x256, the same scenes and motions),
against the old path (the 64x64 output, bicubic-upscaled): PSNR of frames 1..T-1 and the sharpness of the last
frame relative to the first (:func:`i2v.metrics.laplacian_variance`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data.procedural import MOTIONS, clip_seed, make_clip
from .errors import ConfigError
from .metrics import flicker, laplacian_variance, psnr, ssim, warping_error
from .motion.warp import backward_warp

MOVING = tuple(m for m in MOTIONS if m != "static")


def static_prediction(clip) -> np.ndarray:
    """The baseline: frame 0 repeated."""
    return np.repeat(clip.frames[:1], len(clip.frames), axis=0)


def oracle_prediction(clip) -> np.ndarray:
    """Frame 0 backward-warped with the true flow to frame 0 (frame k pixel p <- frame 0 at p + flow_k(p))."""
    f0 = torch.from_numpy(clip.frames[0]).permute(2, 0, 1)[None].expand(len(clip.frames), -1, -1, -1)
    flow = torch.from_numpy(clip.flow).permute(0, 3, 1, 2)  # (t, h, w, 2) -> (t, 2, h, w)
    return backward_warp(f0.contiguous(), flow).permute(0, 2, 3, 1).clamp(0, 1).numpy()


@dataclass
class Report:
    """scores[method][motion] = (psnr, ssim); temporal[method] = (warping error, flicker)."""
    clips_per_class: int
    steps: int
    scores: dict = field(default_factory=dict)
    temporal: dict = field(default_factory=dict)

    def mean_moving_psnr(self, method: str) -> float:
        return float(np.mean([self.scores[method][m][0] for m in MOVING if m in self.scores[method]]))

    def to_json(self) -> str:
        return json.dumps({"clips_per_class": self.clips_per_class, "steps": self.steps,
                           "scores": self.scores, "temporal": self.temporal}, indent=1)

    @classmethod
    def read(cls, path) -> "Report":
        """A report written by ``i2v eval --json``; a missing or foreign file is a one-line InputError."""
        from .errors import InputError

        path = Path(path)
        if not path.is_file():
            raise InputError(f"--merge {path}: no such file (write it with `i2v eval --json {path}`)")
        try:
            return cls.from_json(path.read_text())
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise InputError(f"--merge {path}: not a report written by `i2v eval --json` ({type(e).__name__}: "
                             f"{str(e)[:80]})") from None

    @classmethod
    def from_json(cls, text: str) -> "Report":
        d = json.loads(text)
        return cls(d["clips_per_class"], d["steps"], d["scores"], d["temporal"])

    def merge(self, other: "Report") -> "Report":
        """This report plus the methods of ``other`` (same clips: e.g. two backbones evaluated in parallel)."""
        if (other.clips_per_class, other.steps) != (self.clips_per_class, self.steps):
            raise ConfigError("cannot merge reports made with different clips_per_class or steps")
        return Report(self.clips_per_class, self.steps, {**self.scores, **other.scores}, {**self.temporal, **other.temporal})


def eval_clips(clips_per_class: int = 3, data_seed: int = 0, frames: int = 16, size: int = 64,
               motions=MOTIONS, split: str = "eval"):
    """The held-out clips: class c, clip j is make_clip(clip_seed("eval", 1000 c + j)) with that motion."""
    for m in motions:
        c = MOTIONS.index(m)
        for j in range(clips_per_class):
            yield make_clip(clip_seed(split, 1000 * c + j, data_seed), motion=m, frames=frames, size=size)


def evaluate(pipelines: dict, clips_per_class: int = 3, steps: int = 20, sampler=None, data_seed: int = 0,
             motions=MOTIONS, progress: bool = True, split: str = "eval", keep: dict | None = None,
             **sample_kw) -> Report:
    """Score ``pipelines`` ({name: BuiltinPipeline}) plus the static and oracle baselines; see the module doc.
    ``split="train"`` scores training clips instead (for choosing sampling options without touching the
    held-out set); ``sample_kw`` (e.g. guidance, start_sigma) go to every pipeline call. If ``keep`` is a
    dict, it receives ``{motion: {"truth": frames, method: frames, ...}}`` for the first clip of each class
    (frames (t, h, w, 3) in [0, 1]), e.g. for :func:`samples_figure`."""
    from tqdm import tqdm

    any_pipe = next(iter(pipelines.values()), None)
    frames = any_pipe.frames if any_pipe else 16
    size = any_pipe.size if any_pipe else 64
    methods = ["static", "oracle", *pipelines]
    per = {k: {m: [] for m in motions} for k in methods}
    temporal = {k: [] for k in ["ground truth", *methods]}
    clips = list(eval_clips(clips_per_class, data_seed, frames, size, motions, split))
    for i, clip in enumerate(tqdm(clips, desc="eval", disable=not progress)):
        preds = {"static": static_prediction(clip), "oracle": oracle_prediction(clip)}
        for name, pipe in pipelines.items():
            out = pipe(clip.frames[0], motion=clip.motion, speed=clip.speed, steps=steps, sampler=sampler,
                       seed=i, frames=frames, size=size, progress=False, **sample_kw)  # the model's own output
            preds[name] = out.permute(0, 2, 3, 1).numpy()  # (t, c, h, w) -> (t, h, w, c)
        true = clip.frames
        if keep is not None and clip.motion not in keep:
            keep[clip.motion] = {"truth": true, **preds}
        for name, pred in preds.items():
            per[name][clip.motion].append((psnr(pred[1:], true[1:]), ssim(pred[1:], true[1:])))
        moving = clip.motion != "static"
        if moving:  # temporal metrics on moving clips (on static ones every method scores ~0)
            temporal["ground truth"].append((warping_error(true), flicker(true)))
            for name in ["oracle", *pipelines]:
                temporal[name].append((warping_error(preds[name]), flicker(preds[name])))
    report = Report(clips_per_class, steps)
    for name in methods:
        report.scores[name] = {m: tuple(float(v) for v in np.mean(per[name][m], axis=0)) for m in motions}
    for name, vals in temporal.items():
        if vals:
            report.temporal[name] = tuple(float(v) for v in np.mean(vals, axis=0))
    return report


def format_table(report: Report) -> str:
    """Markdown tables: PSNR / SSIM per class and method, the moving-class mean, and temporal quality."""
    methods = list(report.scores)
    motions = list(next(iter(report.scores.values())))
    lines = [f"PSNR (dB) / SSIM on held-out clips, frames 1..T-1 ({report.clips_per_class} clips per class, "
             f"{report.steps} sampling steps)", "",
             "| motion | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for m in motions:
        cells = [f"{report.scores[k][m][0]:.2f} / {report.scores[k][m][1]:.3f}" for k in methods]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    means = [f"**{report.mean_moving_psnr(k):.2f}**" for k in methods]
    lines.append("| mean of moving classes (PSNR) | " + " | ".join(means) + " |")
    base = report.mean_moving_psnr("static")
    gains = [f"{report.mean_moving_psnr(k) - base:+.2f}" for k in methods]
    lines.append("| gain over static (dB) | " + " | ".join(gains) + " |")
    if report.temporal:
        gt_w, gt_f = report.temporal["ground truth"]
        lines += ["", "Temporal quality on the moving clips (lower is smoother; ratio = method / ground truth)", "",
                  "| method | warping error | ratio | flicker | ratio |", "|---|---|---|---|---|"]
        for k, (w, f) in report.temporal.items():
            lines.append(f"| {k} | {w:.4f} | {w / gt_w:.2f} | {f:.4f} | {f / gt_f:.2f} |")
    return "\n".join(lines)


def samples_figure(kept: dict, path, motions=("pan-left", "zoom-in", "rotate-cw", "bounce"), every: int = 3,
                   scale: int = 2) -> Path:
    """A PNG grid of :func:`evaluate`'s kept clips: for each motion a block of rows (the truth, then each
    method), columns frames 0, every, 2 every, ...; written atomically."""
    from PIL import Image, ImageDraw

    from .video import to_uint8

    motions = [m for m in motions if m in kept] or list(kept)
    if not motions:
        raise ConfigError("no kept clips to draw; pass keep={} to evaluate()")
    first = kept[motions[0]]
    t, h, w, _ = first["truth"].shape
    cols = list(range(0, t, every))
    label_w, gap = 150, 6
    rows = [(m, name, frames) for m in motions for name, frames in kept[m].items() if name != "static"]
    fig = Image.new("RGB", (label_w + len(cols) * (w * scale + 2), len(rows) * (h * scale + 2) + gap * len(motions)),
                    "white")
    draw = ImageDraw.Draw(fig)
    y, last = 0, None
    for m, name, frames in rows:
        if m != last and last is not None:
            y += gap
        last = m
        draw.text((4, y + h * scale // 2 - 6), f"{m}: {name}", fill="black")
        for j, k in enumerate(cols):
            tile = Image.fromarray(to_uint8(frames[k:k + 1])[0]).resize((w * scale, h * scale), Image.NEAREST)
            fig.paste(tile, (label_w + j * (w * scale + 2), y))
        y += h * scale + 2
    from .outputs import atomic

    path = Path(path)
    with atomic(path, overwrite=True) as tmp:
        fig.save(tmp, format="PNG", optimize=True)
    return path


@dataclass
class FullresReport:
    """rows[motion][method] = (PSNR of frames 1..T-1, sharpness ratio lap(frame T-1) / lap(frame 0)), methods
    "truth" (PSNR nan), "oracle" (frame 0 at full resolution warped by the true flow: the ceiling of moving
    pixels, with nothing for content entering the picture), "old" (64x64, bicubic-upscaled) and "full" (the
    default); per backbone."""
    backbone: str
    clips_per_class: int
    steps: int
    scale: int
    rows: dict = field(default_factory=dict)

    def mean(self, method: str, column: int, motions=None) -> float:
        motions = [m for m in (motions or MOVING) if m in self.rows]
        return float(np.mean([self.rows[m][method][column] for m in motions]))


def evaluate_fullres(pipe, clips_per_class: int = 2, steps: int = 20, scale: int = 4, motions=MOTIONS,
                     data_seed: int = 0, progress: bool = True, **sample_kw) -> FullresReport:
    """The full-resolution default against the old path on held-out clips rendered at ``scale`` x 64 pixels.

    Clip j of class c is ``make_clip(clip_seed("eval", 1000 c + j), motion, size=64, scale=scale)`` (the scene
    of ``i2v eval``'s clip, with ``scale`` times the pixels), sampled with seed = clip number. Both paths see the
    same 64x64 input and noise, so they share the generated motion and differ only in how it reaches the full
    resolution: "old" is ``pipe(frame0, size=64, upscale=scale)``, "full" is ``pipe(frame0)``."""
    from tqdm import tqdm

    per = {m: {"truth": [], "oracle": [], "old": [], "full": []} for m in motions}
    clips = [(m, clip_seed("eval", 1000 * MOTIONS.index(m) + j, data_seed)) for m in motions
             for j in range(clips_per_class)]

    def sharpness(frames):  # lap(last) / lap(first)
        return laplacian_variance(frames[-1]) / max(laplacian_variance(frames[0]), 1e-12)

    for i, (m, seed) in enumerate(tqdm(clips, desc="eval fullres", disable=not progress)):
        clip = make_clip(seed, motion=m, frames=pipe.frames, size=pipe.size, scale=scale)
        true = clip.frames
        per[m]["truth"].append((float("nan"), sharpness(true)))
        oracle = oracle_prediction(clip)
        per[m]["oracle"].append((psnr(oracle[1:], true[1:]), sharpness(oracle)))
        kw = dict(motion=m, speed=clip.speed, steps=steps, seed=i, progress=False, **sample_kw)
        for name, extra in (("old", dict(size=pipe.size, upscale=scale)), ("full", {})):
            pred = pipe(true[0], **kw, **extra).permute(0, 2, 3, 1).numpy()  # (t, c, h, w) -> (t, h, w, c)
            per[m][name].append((psnr(pred[1:], true[1:]), sharpness(pred)))
    report = FullresReport(pipe.backbone, clips_per_class, steps, scale)
    for m in motions:
        report.rows[m] = {k: tuple(float(v) for v in np.mean(vals, axis=0)) for k, vals in per[m].items()}
    return report


def format_fullres_table(reports: list) -> str:
    """Markdown: per motion and backbone, PSNR oracle / old / full / gain and the sharpness ratios truth / old /
    full (the same clips for every report: one report per backbone)."""
    r0 = reports[0]
    size = 64 * r0.scale
    lines = [f"Full resolution ({size}x{size}) on held-out clips, frames 1..T-1 ({r0.clips_per_class} clips per "
             f"class, {r0.steps} sampling steps). PSNR (dB): oracle = frame 0 warped by the true flow, old = 64x64 "
             "output bicubic-upscaled, full = the default; sharpness = Laplacian variance of the last frame / the "
             "first", "",
             "| motion | PSNR oracle | " + " | ".join(f"{r.backbone} old | full | gain" for r in reports)
             + " | sharpness truth | " + " | ".join(f"{r.backbone} old | full" for r in reports) + " |",
             "|---" * (2 + 3 * len(reports) + 1 + 2 * len(reports)) + "|"]
    for m in r0.rows:
        cells = [f"{r0.rows[m]['oracle'][0]:.2f}"]
        for r in reports:
            old, full = r.rows[m]["old"][0], r.rows[m]["full"][0]
            cells += [f"{old:.2f}", f"{full:.2f}", f"{full - old:+.2f}"]
        cells.append(f"{r0.rows[m]['truth'][1]:.2f}")
        for r in reports:
            cells += [f"{r.rows[m]['old'][1]:.2f}", f"{r.rows[m]['full'][1]:.2f}"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    cells = [f"{r0.mean('oracle', 0):.2f}"]
    for r in reports:
        old, full = r.mean("old", 0), r.mean("full", 0)
        cells += [f"**{old:.2f}**", f"**{full:.2f}**", f"**{full - old:+.2f}**"]
    cells.append(f"{r0.mean('truth', 1):.2f}")
    for r in reports:
        cells += [f"{r.mean('old', 1):.2f}", f"{r.mean('full', 1):.2f}"]
    lines.append("| mean of moving classes | " + " | ".join(cells) + " |")
    return "\n".join(lines)
