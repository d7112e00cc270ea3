"""Training the built-in image-to-video model on procedural clips: ``i2v train --config configs/builtin_unet.toml``.

The loop, top to bottom (Karras et al. 2022, EDM, Sec. 5 and Algorithm "training"):

1. batch ``i`` is procedural clips ``i*B .. i*B+B-1`` of the train split (:mod:`i2v.data.procedural`), frames in
   [-1, 1]; the first frame is the condition, the label (dropped to NULL_MOTION with prob. ``p_uncond``) and
   speed too;
2. draw a noise level per clip: EDM ``ln sigma ~ N(p_mean, p_std^2)``, flow ``sigma = logistic(N(0, 1))``;
   noise the clip: EDM ``x = x0 + sigma eps``, flow ``x = (1 - sigma) x0 + sigma eps``;
3. loss = ``|| (D(x, sigma) - x0) / c_out(sigma) ||^2`` over frames 1..T-1, i.e. the EDM weighting
   ``lambda = 1 / c_out^2`` — the network's own target, F vs (x0 - c_skip x) / c_out;
4. AdamW with linear warm-up and gradient clipping, an EMA of the weights (the one that is shipped).

With ``train.stage = "calibrate"`` (backbones with a warp mask, started from trained weights) step 3 changes:
the sampler the pipeline uses runs from pure noise with the current weights, and the same loss is taken at each
of its steps against the true clip (:func:`calibration_loss`), optionally plus a temporal loss on the returned
video (:func:`temporal_loss`); only the mask's parameters learn (``train.calibrate_layers``, by default
:data:`MASK_LAYERS`). This corrects the mask for *exposure bias*: it was fitted on noised true clips, but
sampling shows the network its own estimates.

With ``train.stage = "camera"`` (backbones with a warp head, started from trained weights) no clip is rendered:
each step draws conditioning only (label, speed, noise level; :func:`i2v.calibrate.draw_camera_batch`) and the
warp head's affine maps are regressed onto the true camera move of those classes (:func:`i2v.calibrate.camera_loss`);
only the head's per-frame layers learn (:data:`i2v.calibrate.CAMERA_LAYERS`), its gain and mask logit held to
those of ``train.init``, and the exported weights are the trained ones themselves (no EMA: the fit is a plain
regression).

Everything random is a function of (seed, step), so a resumed run continues exactly where it stopped.
Checkpoints are safetensors: ``<out_dir>/checkpoint.safetensors`` (model, EMA, optimiser, step; for resume)
and ``<out_dir>/model.safetensors`` (the EMA weights in fp16 with the config in the metadata; what
:mod:`i2v.pipelines.builtin` loads).

Data parallel (``torchrun --nproc-per-node N -m i2v train ...``, docs/distributed.md): ``train.batch_size`` stays
the clips per step; each of the N processes takes its contiguous share B/N of them (:func:`draw_batch`: the
shares are disjoint and together are exactly the batch one process draws, noise included), DDP averages the
gradients, so every process makes the same update. Rank 0 alone logs and writes; a checkpoint resumes with any
N that divides B.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import configs
from .checkpoints import load_into, open_state_dict
from .outputs import atomic
from .calibrate import CAMERA_LAYERS, calibration_loss, calibration_parameters, camera_loss, draw_camera_batch
from .data.procedural import MOTIONS, make_batch
from .diffusion.denoisers import EDM_SIGMA_MAX, Denoiser
from .errors import CheckpointError, ConfigError
from .models.builtin.heads import NULL_MOTION
from .models.builtin.dit import DiT, DiTConfig
from .models.builtin.unet3d import UNet3D, UNet3DConfig

BACKBONES = {"unet": (UNet3D, UNet3DConfig), "dit": (DiT, DiTConfig)}
PREDICTIONS = ("edm", "flow")
STAGES = ("denoise", "calibrate", "camera")


@dataclass
class DiffusionConfig:
    prediction: str = "edm"  # "edm" (Karras preconditioning, sigma_data 0.5) or "flow" (rectified flow)
    p_mean: float = -0.4  # EDM: mean of ln sigma; above EDM's -1.2 because motion is decided at high noise
    p_std: float = 1.4  # EDM: std of ln sigma
    sigma_min: float = 0.002  # EDM: where sampling stops, written into model.safetensors as the recommendation


@dataclass
class DataConfig:
    seed: int = 0  # data seed: clip i of the train split is make_clip(clip_seed("train", i, seed))
    frames: int = 16
    size: int = 64


@dataclass
class LoopConfig:
    steps: int = 10000  # optimiser steps (the run also stops after max_minutes, if set)
    batch_size: int = 2  # clips per step
    lr: float = 3e-4
    warmup: int = 200  # linear learning-rate warm-up steps
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # EMA of weights, with the usual (1 + n) / (10 + n) ramp early on
    p_uncond: float = 0.1  # label dropout, enables classifier-free guidance
    warp_loss: float = 1.0  # weight of the warp head's auxiliary loss (warp_head = true; stage "denoise")
    stage: str = "denoise"  # "denoise": the diffusion loss on noised true clips; "calibrate": only the warp
    #   mask's parameters, on the sampler's own trajectories (calibration_loss; needs warp_mask = true);
    #   "camera": only the warp head's per-frame layers, against the true camera move (camera_loss)
    calibrate_steps: int = 20  # stage "calibrate": sampling steps per trajectory (the pipeline's default)
    calibrate_layers: tuple[str, ...] = ("mask_out", "warp.mask", "warp.inside")  # stage "calibrate": the
    #   parameters that learn (names or module prefixes, e.g. "conv_out"); everything else is frozen
    calibrate_on: str = "trajectory"  # stage "calibrate": the loss at every sampler step ("trajectory") or only
    #   at the last, whose estimate is the returned video ("output")
    temporal_loss: float = 0.0  # stage "calibrate": weight of the short-term temporal loss on the returned video
    seed: int = 0  # noise / dropout seed
    checkpoint_every: int = 250  # steps between checkpoints
    log_every: int = 10
    max_minutes: float = 0.0  # wall-clock budget; 0 = none
    init: str = ""  # start from these weights (a model.safetensors): fine-tuning; tensors the file lacks keep their init
    out_dir: str = "runs/builtin"
    device: str = "auto"  # "auto" (CUDA if present), "cpu", "cuda"
    threads: int = 0  # CPU threads for torch and OpenCV; 0 = i2v's default (i2v.runtime.default_threads)
    bf16: bool = True  # bfloat16 autocast for the forward pass (about 1.4x faster on AVX512-BF16 CPUs)


@dataclass
class TrainConfig:
    backbone: str = "unet"  # "unet" (factorised 3D U-Net) or "dit" (spatio-temporal DiT)
    unet: UNet3DConfig = field(default_factory=UNet3DConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: LoopConfig = field(default_factory=LoopConfig)

    def backbone_config(self):
        return self.unet if self.backbone == "unet" else self.dit


def load_config(path=None, overrides: list[str] = ()) -> TrainConfig:
    """Read a TOML preset (sections [unet], [dit], [diffusion], [data], [train] plus top-level ``backbone``) and
    apply ``section.key=value`` overrides, all type-checked against the dataclasses above (:mod:`i2v.configs`)."""
    cfg = configs.load(TrainConfig(), path, overrides)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    if cfg.backbone not in BACKBONES:
        raise ConfigError(f"backbone must be one of {', '.join(BACKBONES)}, got {cfg.backbone!r}")
    if cfg.diffusion.prediction not in PREDICTIONS:
        raise ConfigError(f"diffusion.prediction must be one of {', '.join(PREDICTIONS)}, got {cfg.diffusion.prediction!r}")
    if not 0 < cfg.diffusion.sigma_min < 80:
        raise ConfigError(f"diffusion.sigma_min must be in (0, 80) (EDM's sigma_max), got {cfg.diffusion.sigma_min}")
    if cfg.train.batch_size < 1 or cfg.train.steps < 1:
        raise ConfigError(f"train.batch_size and train.steps must be >= 1, got {cfg.train.batch_size}, {cfg.train.steps}")
    if cfg.train.stage not in STAGES:
        raise ConfigError(f"train.stage must be one of {', '.join(STAGES)}, got {cfg.train.stage!r}")
    if cfg.train.stage == "calibrate":
        if not getattr(cfg.backbone_config(), "warp_mask", False):
            raise ConfigError(f"train.stage = 'calibrate' trains the warp mask; set {cfg.backbone}.warp_mask = true "
                              "(and start from trained weights with train.init)")
        if cfg.diffusion.prediction != "edm":
            raise ConfigError("train.stage = 'calibrate' samples with the EDM sampler; set diffusion.prediction = 'edm'")
        if cfg.train.calibrate_on not in ("trajectory", "output"):
            raise ConfigError(f"train.calibrate_on must be trajectory or output, got {cfg.train.calibrate_on!r}")
        if cfg.train.temporal_loss < 0:
            raise ConfigError(f"train.temporal_loss is a loss weight, >= 0; got {cfg.train.temporal_loss}")
        if cfg.train.calibrate_steps < 2:
            raise ConfigError(f"train.calibrate_steps must be >= 2, got {cfg.train.calibrate_steps}")
    if cfg.train.stage == "camera":
        if not getattr(cfg.backbone_config(), "warp_head", False):
            raise ConfigError(f"train.stage = 'camera' fits the warp head's move; set {cfg.backbone}.warp_head = true")
        if not cfg.train.init:
            raise ConfigError("train.stage = 'camera' refines trained weights: set train.init to a model.safetensors "
                              "(e.g. weights/builtin_unet.safetensors)")
    if cfg.data.frames < 2:
        raise ConfigError(f"data.frames must be >= 2, got {cfg.data.frames}")


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    cls, _ = BACKBONES[cfg.backbone]
    return cls(cfg.backbone_config())


# --- the diffusion training objective --------------------------------------------------------------------

def sample_sigma(cfg: DiffusionConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """Training noise levels: EDM log-normal, or flow-matching logit-normal (SD3's default)."""
    z = torch.randn(n, generator=generator)
    if cfg.prediction == "flow":
        return torch.sigmoid(z).clamp(1e-4, 1 - 1e-4)
    return (cfg.p_mean + cfg.p_std * z).exp()


def diffusion_loss(denoiser: Denoiser, x0, cond: dict, sigma, eps) -> torch.Tensor:
    """Mean over clips and frames 1..T-1 (frame 0 is the condition) of the preconditioning's own loss
    ``((D(x_sigma) - x0) / c_out)^2`` (:meth:`i2v.diffusion.Denoiser.loss`), x0 (b, c, t, h, w)."""
    return denoiser.loss(x0, sigma, eps, cond)[:, :, 1:].mean()


def warp_loss(model, x0, cond: dict, c_noise) -> torch.Tensor:
    """Auxiliary loss of a backbone's warp head (:class:`i2v.models.builtin.heads.WarpHead`): the first frame moved by
    the affine map the head predicts from the conditioning alone, against the true frames 1..T-1 (mean squared
    error in [-1, 1]). It trains the affine map directly, which the diffusion loss reaches only through the
    head's gain (zero at initialisation)."""
    b, _, t, h, w = x0.shape
    emb = model.embed(c_noise, cond["motion"], cond["speed"], t)  # the conditioning vectors the backbone sees
    theta, _ = model.warp.motion(emb)
    moved = model.warp.warp(cond["first_frame"], theta).unflatten(0, (b, t)).transpose(1, 2)  # (b, 3, t, h, w)
    return (moved - x0)[:, :, 1:].square().mean()


def make_cond(x0, labels, speeds) -> dict:
    return {"first_frame": x0[:, :, 0], "motion": labels, "speed": speeds}


def draw_batch(cfg: TrainConfig, step: int, rank: int = 0, world: int = 1):
    """Step ``step``'s clips and randomness: clips ``step*B .. step*B+B-1`` of the train split with their label
    dropout, noise levels and noise, all drawn from (seed, step) for the whole batch B; process ``rank`` of
    ``world`` keeps its contiguous share of B/world clips. Returns x0 (b, 3, T, H, W), labels, speeds, sigma, eps."""
    B = cfg.train.batch_size
    b = B // world
    mine = slice(rank * b, (rank + 1) * b)
    g = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + step)  # all randomness of this step
    idx = range(step * B + rank * b, step * B + (rank + 1) * b)
    x0, labels, speeds = make_batch("train", idx, cfg.data.seed, cfg.data.frames, cfg.data.size)
    drop = (torch.rand(B, generator=g) < cfg.train.p_uncond)[mine]
    labels = torch.where(drop, torch.full_like(labels, NULL_MOTION), labels)
    sigma = sample_sigma(cfg.diffusion, B, g)[mine]
    eps = torch.randn((B, *x0.shape[1:]), generator=g)[mine]
    return x0, labels, speeds, sigma, eps


# --- checkpoints -------------------------------------------------------------------------------------------

def config_to_json(cfg: TrainConfig) -> str:
    return configs.to_json(cfg)


def export_metadata(cfg: TrainConfig, step: int, minutes: float) -> dict[str, str]:
    """String metadata stored in model.safetensors: what the pipeline needs besides tensor shapes."""
    return {"format": "i2v.builtin", "backbone": cfg.backbone, "prediction": cfg.diffusion.prediction,
            "frames": str(cfg.data.frames), "size": str(cfg.data.size), "data_seed": str(cfg.data.seed),
            "motions": ",".join(MOTIONS), "step": str(step), "train_minutes": f"{minutes:.1f}",
            "config": config_to_json(cfg),
            **({"sigma_min": repr(float(cfg.diffusion.sigma_min))} if cfg.diffusion.prediction == "edm" else {})}


def save_checkpoint(path: Path, model, ema, opt, step: int, cfg: TrainConfig, minutes: float) -> None:
    """Full training state (model, EMA, AdamW moments, step) in one safetensors file, written atomically."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().contiguous() for k, v in ema.state_dict().items()})
    for i, p in enumerate(model.parameters()):
        st = opt.state.get(p)
        if st:
            tensors[f"opt.{i}.exp_avg"] = st["exp_avg"].contiguous()
            tensors[f"opt.{i}.exp_avg_sq"] = st["exp_avg_sq"].contiguous()
            tensors[f"opt.{i}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    with atomic(path, overwrite=True) as tmp:
        save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={"step": str(step), "config": config_to_json(cfg), "minutes": f"{minutes:.3f}"})


def export_model(path: Path, ema, cfg: TrainConfig, step: int, minutes: float) -> None:
    """The EMA weights in fp16 plus metadata: the file `i2v animate` loads."""
    tensors = {k: v.detach().to(torch.float16).cpu().contiguous() for k, v in ema.state_dict().items()}
    with atomic(path, overwrite=True) as tmp:
        save_file(tensors, str(tmp), metadata=export_metadata(cfg, step, minutes))


def load_checkpoint(path: Path, model, ema, opt, device) -> tuple[int, float]:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns (step, minutes trained so far). Model and
    EMA load strictly (:func:`i2v.checkpoints.load_into`); an unreadable or foreign file is a CheckpointError."""
    sd = open_state_dict(path)
    meta = sd.metadata
    if "step" not in meta or not any(k.startswith("model.") for k in sd):
        raise CheckpointError(f"{path}: not an i2v training checkpoint (no 'step' in its metadata, no model.* tensors)")
    hint = "resume with the config it was trained with"
    for prefix, module in (("model.", model), ("ema.", ema)):
        load_into(module, sd.strip(prefix), hint=hint)
    for i, p in enumerate(model.parameters()):
        if f"opt.{i}.exp_avg" in sd:
            opt.state[p] = {"exp_avg": sd[f"opt.{i}.exp_avg"].to(device), "exp_avg_sq": sd[f"opt.{i}.exp_avg_sq"].to(device),
                            "step": sd[f"opt.{i}.step"][0].clone()}
    return int(meta["step"]), float(meta.get("minutes", 0))


def init_from(path: Path, model, ema, log=print) -> None:
    """Fine-tuning: copy the weights of a ``model.safetensors`` (or the EMA of a ``checkpoint.safetensors``) into
    ``model`` and ``ema``. Every tensor of the file must exist in the model with the same shape; tensors the
    model has and the file lacks (e.g. a newly added zero-initialised branch) keep their initialisation and are
    listed in the log (:func:`i2v.checkpoints.load_into` with ``allow_missing``)."""
    if not path.exists():
        raise ConfigError(f"train.init = {str(path)!r} does not exist; give a model.safetensors written by `i2v train`")
    sd = open_state_dict(path)
    if any(k.startswith("ema.") for k in sd):
        sd = sd.strip("ema.")
    fresh = sorted(set(model.state_dict()) - set(sd))
    for module in (model, ema):
        load_into(module, sd, allow_missing=True, hint="is it the same backbone preset?")
    log(f"initialised from {path}: {len(sd)} tensors loaded"
        + (f", {len(fresh)} new ones keep their initialisation ({', '.join(fresh)})" if fresh else ""))


# --- the loop ----------------------------------------------------------------------------------------------

def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"train.device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def lr_at(step: int, cfg: LoopConfig) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))


@torch.no_grad()
def ema_update(ema, model, step: int, decay: float) -> None:
    """theta_ema <- d theta_ema + (1 - d) theta, with d = min(decay, (1 + n) / (10 + n))."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1 - d)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, log=print) -> dict:
    """Run (or resume) training. Returns {'step', 'loss' (list of (step, loss)), 'times' (perf_counter after each
    step), 'minutes', 'out_dir'}."""
    import copy

    from tqdm import tqdm

    from .nn import parallel

    tc = cfg.train
    rank, world = parallel.rank(), parallel.world_size()  # 0, 1 unless launched by torchrun
    if tc.batch_size % world:
        raise ConfigError(f"train.batch_size = {tc.batch_size} clips per step do not split over {world} processes; "
                          f"use a multiple of {world} (it is the batch of all processes together)")
    main = rank == 0  # the one process that logs and writes
    if not main:
        log, progress = (lambda *a, **k: None), False
    device = pick_device(tc.device)
    if world > 1 and device.type == "cuda":  # this process's own GPU (torchrun's LOCAL_RANK, i2v.nn.parallel)
        device = torch.device("cuda", torch.cuda.current_device())
    if tc.threads:
        from .runtime import set_threads

        set_threads(tc.threads)
    torch.manual_seed(tc.seed)  # deterministic initialisation
    model = build_model(cfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    calibrate, camera = tc.stage == "calibrate", tc.stage == "camera"
    if camera and world > 1:
        raise ConfigError("train.stage = 'camera' runs in one process (it takes minutes on a CPU); drop torchrun")
    if calibrate or camera:  # calibrate: only the mask learns, the sampler's trajectories come from the frozen rest
        model.requires_grad_(False)
        for p in calibration_parameters(model, tc.calibrate_layers if calibrate else CAMERA_LAYERS):
            p.requires_grad_(True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tc.lr, weight_decay=tc.weight_decay)
    if calibrate:
        from .diffusion.schedules import karras
        calib_sigmas = karras(tc.calibrate_steps, sigma_min=cfg.diffusion.sigma_min, sigma_max=EDM_SIGMA_MAX).to(device)
    net = model
    if world > 1:  # data parallel: backward averages the gradients over the processes
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    denoiser = Denoiser(net, cfg.diffusion.prediction)

    out = Path(tc.out_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.safetensors"
    step, minutes_before = 0, 0.0
    exists = ckpt.exists()
    if world > 1 and all(parallel.any_rank(exists, not exists)):
        raise ConfigError(f"{ckpt} is seen by some processes and not others: put train.out_dir on a file system "
                          "every machine shares")
    if exists:
        if not resume:
            raise ConfigError(f"{ckpt} exists; pass --resume to continue that run, or set train.out_dir elsewhere")
        step, minutes_before = load_checkpoint(ckpt, model, ema, opt, device)
        log(f"resumed from {ckpt} at step {step}")
    elif resume:
        raise ConfigError(f"--resume: there is no {ckpt} to continue from (train.out_dir = {tc.out_dir!r}); drop --resume "
                          "to start a new run, or set train.out_dir to the run's folder")
    elif tc.init:
        init_from(Path(tc.init), model, ema, log)
    reference = None
    if camera:  # what the head's gain and mask logit were before the stage (train.init, also after --resume)
        reference = build_model(cfg).to(device).requires_grad_(False)
        init_from(Path(tc.init), reference, reference, log=lambda *a, **k: None)
    if main:
        (out / "config.json").write_text(config_to_json(cfg))

    n_params = sum(p.numel() for p in model.parameters())
    log(f"training {cfg.backbone} ({n_params / 1e6:.2f} M parameters) on {device}, "
        f"{cfg.diffusion.prediction} preconditioning, batch {tc.batch_size} x {cfg.data.frames} frames at {cfg.data.size}px"
        + (f", {world} processes of {tc.batch_size // world} clips" if world > 1 else ""))
    if calibrate:
        log(f"stage calibrate: {sum(p.numel() for p in opt.param_groups[0]['params'])} parameters "
            f"({', '.join(tc.calibrate_layers)}) learn on "
            f"{tc.calibrate_steps}-step sampler trajectories down to sigma_min = {cfg.diffusion.sigma_min}")
    if camera:
        log(f"stage camera: {sum(p.numel() for p in opt.param_groups[0]['params'])} parameters "
            f"({', '.join(CAMERA_LAYERS)}) learn the true camera move at noise levels {cfg.diffusion.sigma_min:g} .. "
            f"{EDM_SIGMA_MAX:g}")
    start = time.time()
    history, times = [], []
    logfile = open(out / "log.txt", "a") if main else None
    bar = tqdm(total=tc.steps, initial=step, desc=f"train {cfg.backbone}", disable=not progress, dynamic_ncols=True)

    def minutes() -> float:
        return minutes_before + (time.time() - start) / 60

    def checkpoint():
        if main:
            save_checkpoint(ckpt, model, ema, opt, step, cfg, minutes())
            export_model(out / "model.safetensors", ema, cfg, step, minutes())

    model.train()
    running = None
    # Ctrl-C / SIGTERM: finish the step under way, write a checkpoint, then stop (resume continues exactly there)
    stop = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, lambda signum, frame: stop.append(signum))
    try:
        while step < tc.steps:
            halt, out_of_time = bool(stop), bool(tc.max_minutes and minutes() >= tc.max_minutes)
            if world > 1:  # every process stops at the same step
                halt, out_of_time = parallel.any_rank(halt, out_of_time)
                if halt and not stop:
                    stop.append("another process was stopped")
            if halt:
                break
            if out_of_time:
                log(f"stopping at step {step}: train.max_minutes = {tc.max_minutes} reached")
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step, tc)
            if camera:  # conditioning only: no clip is rendered
                labels, speeds, sigma = (v.to(device) for v in draw_camera_batch(
                    tc.batch_size, step, tc.seed, cfg.diffusion.sigma_min, EDM_SIGMA_MAX))
                loss = camera_loss(model, labels, speeds, denoiser.scalings(sigma)[3], cfg.data.frames,
                                   cfg.data.size, reference)
            else:
                batch = draw_batch(cfg, step, rank, world)
                x0, labels, speeds, sigma, eps = (v.to(device) for v in batch)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.bf16):
                    cond = make_cond(x0, labels, speeds)
                    if calibrate:
                        loss = calibration_loss(denoiser, x0, cond, calib_sigmas, eps, tc.calibrate_on,
                                                tc.temporal_loss)
                    else:
                        loss = diffusion_loss(denoiser, x0, cond, sigma, eps)
                    if not calibrate and getattr(model, "warp", None) is not None and tc.warp_loss:
                        loss = loss.float() + tc.warp_loss * warp_loss(model, x0, cond, denoiser.scalings(sigma)[3])
            loss = loss.float()
            if not torch.isfinite(loss):
                from .errors import NumericalError
                raise NumericalError(f"training loss became {loss.item()} at step {step}; lower train.lr or raise warmup")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(opt.param_groups[0]["params"], tc.grad_clip)
            opt.step()
            ema_update(ema, model, step, 0.0 if camera else tc.ema_decay)  # camera: a regression, no EMA
            step += 1

            value = parallel.mean_over_ranks(loss.item())  # the loss of the whole batch
            history.append((step, value))
            times.append(time.perf_counter())
            running = value if running is None else 0.95 * running + 0.05 * value
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
            if step % tc.log_every == 0 and main:
                logfile.write(f"step {step} loss {value:.5f} avg {running:.5f} minutes {minutes():.2f}\n")
                logfile.flush()
            if step % tc.checkpoint_every == 0:
                checkpoint()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    bar.close()
    checkpoint()
    if main:
        logfile.close()
    if stop:
        log(f"interrupted at step {step}: wrote {ckpt} (continue with --resume) and {out / 'model.safetensors'}")
        raise KeyboardInterrupt
    log(f"done: step {step}, {minutes():.1f} min; wrote {ckpt} and {out / 'model.safetensors'}")
    return {"step": step, "loss": history, "times": times, "minutes": minutes(), "out_dir": str(out)}
