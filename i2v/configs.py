"""Configs are data: TOML presets in ``configs/`` read into dataclasses, every value type-checked.

``load(cfg, path, overrides)`` fills a dataclass instance (nested dataclasses are TOML tables) from a TOML file
and ``section.key=value`` overrides (TOML syntax: ``1e-4``, ``true``, ``[96, 128]``, ``"unet"``; a bare word is a
string). Unknown keys and wrong types are a :class:`~i2v.errors.ConfigError` naming the key and the valid ones.
Any preset can use it: the built-in model's training config (:class:`i2v.train.TrainConfig`) is the first.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path

from .errors import ConfigError


def _coerce(value, typ, where: str):
    """Check ``value`` against the dataclass field type ``typ`` (int, float, str, bool, tuple[...])."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (elem, *_rest) = typing.get_args(typ)
        return tuple(_coerce(v, elem, where) for v in value)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ in (int, float, str) and (not isinstance(value, typ) or isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {typ.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _fill(obj, table: dict, where: str):
    hints = typing.get_type_hints(type(obj))
    for key, value in table.items():
        if key not in hints:
            valid = ", ".join(f.name for f in dataclasses.fields(obj))
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {valid}")
        sub = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"{sub}: expected a [{sub}] table, got {value!r}")
            _fill(getattr(obj, key), value, sub)
        else:
            setattr(obj, key, _coerce(value, hints[key], sub))
    return obj


def _parse_value(text: str):
    """A --set value: TOML syntax (1e-4, true, [96, 128], "unet"); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load(cfg, path=None, overrides=(), where: str = "config"):
    """Fill the dataclass instance ``cfg`` from the TOML file ``path`` (if given), then from ``overrides``
    (``section.key=value`` strings); returns ``cfg``."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; presets live in configs/ (e.g. configs/builtin_unet.toml)")
        try:
            table = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
        _fill(cfg, table, "")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value, e.g. train.steps=100")
        key, text = item.split("=", 1)
        nested: dict = {}
        node = nested
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _parse_value(text.strip())
        _fill(cfg, nested, "")
    return cfg


def to_json(cfg) -> str:
    import json

    return json.dumps(dataclasses.asdict(cfg))
