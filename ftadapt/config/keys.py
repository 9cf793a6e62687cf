"""Dotted config keys (``loss.lambda_norm``): the flat view of a config, the type of every key, and values from
``--set`` strings, JSON and TOML typed as their field."""
from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any

from ftadapt.config.schema import TrainConfig
from ftadapt.errors import UsageError


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys → values of a (nested) dataclass, e.g. ``{"loss.lambda_norm": 0.00015, ...}``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = value
    return out


def flatten_mapping(data: Mapping, prefix: str = "") -> dict[str, Any]:
    """Dotted keys → values of nested mappings (a JSON object, TOML tables or already dotted keys)."""
    out: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, Mapping):
            out.update(flatten_mapping(value, f"{prefix}{name}."))
        else:
            out[prefix + name] = value
    return out


def _fields(cls: type, prefix: str = "") -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[dataclasses.Field, Any]] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_fields(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f, hints[f.name]
    return out


_FIELDS = _fields(TrainConfig)
KEY_TYPES: dict[str, Any] = {name: hint for name, (_, hint) in _FIELDS.items()}
# Keys a resume may change: they decide where and how fast a run goes, not what it learns. The dataset roots and the
# init weights are among them: a moved dataset must not block a resume, and a resume never reads init.
RESUMABLE_KEYS = frozenset(name for name, (f, _) in _FIELDS.items() if f.metadata["resumable"])


def check_key(name: str) -> str:
    """``name`` when it is a config key, else a UsageError suggesting close matches."""
    if name not in KEY_TYPES:
        close = difflib.get_close_matches(name, list(KEY_TYPES), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else f"; valid keys: {', '.join(KEY_TYPES)}"
        raise UsageError(f"unknown config key {name!r}{hint}")
    return name


def _convert(name: str, value: Any, hint: Any) -> Any:
    """Coerce a command-line string or a JSON/TOML value to the field's type, or raise a UsageError."""
    def bad(expected: str) -> UsageError:
        return UsageError(f"config {name}={value!r}: expected {expected}")

    if typing.get_origin(hint) is tuple:
        n, elem = len(typing.get_args(hint)), typing.get_args(hint)[0]
        if isinstance(value, str):
            value = value.replace("x", ",").strip("()[] ").split(",")
        if not isinstance(value, (list, tuple)) or len(value) != n:
            raise bad(f"{n} numbers, e.g. {'512x256' if elem is int else '0.9,0.99'}")
        return tuple(_convert(name, v, elem) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        lowered = str(value).lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise bad("true or false")
    if hint in (int, float):
        if isinstance(value, bool) or (hint is int and isinstance(value, float) and not value.is_integer()):
            raise bad(hint.__name__)
        try:
            return hint(value)
        except ValueError:
            raise bad(f"a number ({hint.__name__})") from None
    if hint is str:
        return str(value)
    raise AssertionError(f"unsupported config type {hint} for {name}")


def typed_value(name: str, value: Any) -> Any:
    """``value`` of the key ``name`` typed as the config holds it, from a ``--set`` string or an option's value."""
    return _convert(check_key(name), value, KEY_TYPES[name])


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["loss.lambda_norm=2e-4", "speed.amp=bf16"]`` → ``{"loss.lambda_norm": "2e-4", "speed.amp": "bf16"}`` (the
    values are typed later)."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set loss.lambda_norm=0.0002")
        out[check_key(name.strip())] = value.strip()
    return out


__all__ = ["flatten", "flatten_mapping", "KEY_TYPES", "RESUMABLE_KEYS", "check_key", "typed_value", "parse_set"]
