"""Strict loading: every tensor of a checkpoint is used, or skipped by a documented rule.

:func:`load_into` is the one way a model in i2v receives weights::

    with torch.device("meta"):                       # no memory, no random init
        model = WanDiT(WanDiTConfig.from_state_dict(sd.shapes))
    load_into(model, sd, source=path, skip=SKIPS, dtype=torch.bfloat16, device="cuda")

:func:`load_model` is that pattern in one call: ``load_model(WanDiT, config, sd, source=path, ...)``.

1. :func:`check_keys` compares the model's own keys and shapes with the checkpoint's: a key the model needs and the
   file lacks (missing), a key the file has and the model does not use and no ``skip`` rule names (unexpected),
   and a shape that differs (misshaped) are all reported at once, in one :class:`~i2v.errors.CheckpointError`
   naming the file, the model, up to six keys of each kind with the expected and found shapes.
2. Tensors are then read one at a time, cast (floating tensors to ``dtype``, else to the dtype the model was
   built in; ``keep_dtype=True`` keeps what the file stores, e.g. fp8 weights that layers upcast at matmul time),
   moved to ``device`` and assigned to the module (``load_state_dict(assign=True)``: no copy into random init);
   a model that is not on the meta device is filled in place instead (an optimiser's references stay valid).

``skip`` maps a reason (the documentation) to a rule: a key prefix, a tuple of prefixes, or a predicate. Each
family keeps its skip table beside its model (e.g. the CLIP text tower a released Wan CLIP file carries).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..errors import CheckpointError

SkipRule = str | tuple[str, ...] | Callable[[str], bool]

SHOWN = 6  # keys shown per kind in an error message


def _matches(rule: SkipRule, key: str) -> bool:
    if callable(rule):
        return bool(rule(key))
    return key.startswith(rule)


def skipped_by(skip: Mapping[str, SkipRule] | None, key: str) -> str | None:
    """The reason of the first rule in ``skip`` that names ``key``, or None."""
    for reason, rule in (skip or {}).items():
        if _matches(rule, key):
            return reason
    return None


def _show(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + (f" ... ({len(items)} in all)" if len(items) > SHOWN else "")


def check_keys(expected: Mapping[str, tuple], found: Mapping[str, tuple], *, source: str, model: str = "the model",
               skip: Mapping[str, SkipRule] | None = None, allow_missing: bool = False, hint: str = "",
               prefix: str = "") -> dict[str, list[str]]:
    """Account for every key: ``expected`` (the model's key -> shape) against ``found`` (the file's key -> shape).
    Returns {skip reason: [file keys skipped]}; raises one CheckpointError listing every problem otherwise.
    ``allow_missing``: keys the file lacks keep the model's own values (fine-tuning from older weights).
    ``prefix``: what the file puts in front of these keys (shown in messages, so they name the file's real keys)."""
    missing = [k for k in expected if k not in found]
    skipped: dict[str, list[str]] = {}
    unexpected = []
    for k in found:
        if k in expected:
            continue
        reason = skipped_by(skip, k)
        if reason is None:
            unexpected.append(k)
        else:
            skipped.setdefault(reason, []).append(k)
    misshaped = [f"{k}: expected {list(expected[k])}, found {list(found[k])}"
                 for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    problems = []
    if missing and not allow_missing:
        problems.append(f"{len(missing)} missing ({_show([f'{prefix}{k} {list(expected[k])}' for k in missing])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected, not used by the model "
                        f"({_show([f'{prefix}{k} {list(found[k])}' for k in unexpected])})")
    if misshaped:
        problems.append(f"{len(misshaped)} with the wrong shape ({_show([prefix + m for m in misshaped])})")
    if problems:
        raise CheckpointError(f"{source}: does not match {model} (built from the file's own shapes, "
                              f"{len(expected)} tensors): " + "; ".join(problems)
                              + (f". {hint}" if hint else ". Is it a file of another model, or incomplete?"))
    return skipped


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str | None = None,
              skip: Mapping[str, SkipRule] | None = None, dtype: torch.dtype | None = None, device=None,
              keep_dtype: bool = False, allow_missing: bool = False, hint: str = "", prefix: str | None = None) -> nn.Module:
    """Fill ``model`` (built on the meta device, or a real one) from ``state_dict`` strictly; see the module
    docstring. ``state_dict`` may be a lazy :class:`~i2v.checkpoints.StateDict` or a plain dict. Returns ``model``."""
    source = str(source or getattr(state_dict, "source", "the state dict"))
    own = model.state_dict(keep_vars=True)
    shapes = state_dict.shapes if hasattr(state_dict, "shapes") else {k: tuple(v.shape) for k, v in state_dict.items()}
    prefix = getattr(state_dict, "prefix", "") if prefix is None else prefix
    check_keys({k: tuple(v.shape) for k, v in own.items()}, shapes, source=source, model=type(model).__name__,
               skip=skip, allow_missing=allow_missing, hint=hint, prefix=prefix)
    tensors = {}
    for key, target in own.items():
        if key not in shapes:  # allow_missing: keep the model's own tensor
            continue
        t = state_dict[key]
        if t.is_floating_point() and not keep_dtype:
            t = t.to(dtype if dtype is not None else target.dtype)
        elif not t.is_floating_point() and target.dtype != t.dtype and not target.is_floating_point():
            t = t.to(target.dtype)  # e.g. an int32 counter stored where the model keeps int64
        if device is not None or target.device.type != "meta":
            t = t.to(device if device is not None else target.device)
        tensors[key] = t
    # a meta-built model receives the tensors themselves (no copy); a real one copies them in place, so that
    # references to its parameters (an optimiser's) stay valid
    on_meta = any(t.is_meta for t in own.values())
    model.load_state_dict(tensors, strict=not allow_missing, assign=on_meta)
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta and n not in tensors]
    if still_meta:
        raise RuntimeError(f"{type(model).__name__}: {_show(still_meta)} stayed on the meta device (not in the "
                           "checkpoint): a non-persistent buffer cannot be loaded; compute it in forward() instead")
    return model


def load_model(cls, config, state_dict: Mapping[str, torch.Tensor], **kwargs) -> nn.Module:
    """``cls(config)`` built on the meta device (no memory, no random initialisation) and filled strictly by
    :func:`load_into` (keyword arguments as there); returned in eval mode."""
    with torch.device("meta"):
        model = cls(config)
    return load_into(model, state_dict, **kwargs).eval()
