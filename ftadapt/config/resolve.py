"""Resolving a training config — defaults → preset → config file → ``--set key=value`` → command-line options — and
writing it, reading it back, hashing it and comparing two of them.

Every run saves its resolved config (``config_to_dict``, with the layout version); files of any version read back
through ``ftadapt.config.upgrade``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from pathlib import Path
from typing import Any

from ftadapt.config.keys import RESUMABLE_KEYS, check_key, flatten, typed_value
from ftadapt.config.methods import DEFAULT_MODELS
from ftadapt.config.presets import PRESETS
from ftadapt.config.schema import TrainConfig
from ftadapt.config.upgrade import CONFIG_VERSION, hashed_form, upgrade
from ftadapt.errors import UsageError
from ftadapt.textfile import read_text_file


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file (nested tables or dotted keys, any version: a run's config.json works) into
    flat dotted keys of the current layout."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist")
    text = read_text_file(path, what="config file", fix="give a JSON or TOML file of config keys, such as the "
                          "config.json that `ftadapt train` writes into its run folder")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise UsageError(f"config file {path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a table/object of keys")
    return {check_key(name): value for name, value in upgrade(data).items()}


def build_config(overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Resolve a TrainConfig: defaults, then the preset named in ``overrides`` (if any), then the other overrides.
    Without a ``model`` key the method's reference architecture is used (``DEFAULT_MODELS``).

    ``overrides`` maps dotted keys to values (strings from ``--set`` or typed values from a file), applied in order.
    Explicit keys always beat the preset, wherever they appear.
    """
    overrides = dict(overrides or {})
    preset = str(overrides.get("preset", "paper"))
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    values = flatten(TrainConfig())
    for name, value in {**PRESETS[preset], **overrides}.items():
        values[name] = typed_value(name, value)
    if "model" not in overrides:
        values["model"] = DEFAULT_MODELS.get(values["method"], values["model"])
    return _from_flat(values)


def _from_flat(values: dict[str, Any]) -> TrainConfig:
    nested: dict[str, Any] = {}
    for name, value in values.items():
        head, _, tail = name.partition(".")
        if tail:
            nested.setdefault(head, {})[tail] = value
        else:
            nested[head] = value
    hints = typing.get_type_hints(TrainConfig)
    return TrainConfig(**{k: hints[k](**v) if isinstance(v, dict) else v for k, v in nested.items()})


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) with the layout version: what ``config.json`` holds and ``--config``
    reads back."""
    return {"version": CONFIG_VERSION, **json.loads(json.dumps(dataclasses.asdict(cfg)))}


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of ``config_to_dict`` for a config of any version (``ftadapt.config.upgrade``); unknown keys are an
    error."""
    return build_config(upgrade(data))


def config_hash(cfg: TrainConfig) -> str:
    """sha256 of everything that defines what a run learns (every key but ``RESUMABLE_KEYS``), in the form the first
    runs were hashed in (``ftadapt.config.upgrade.hashed_form``), so a run keeps its hash as the layout grows."""
    flat = {name: value for name, value in flatten(cfg).items() if name not in RESUMABLE_KEYS}
    return hashlib.sha256(json.dumps(hashed_form(flat), sort_keys=True, default=list).encode()).hexdigest()[:16]


def config_diff(old: TrainConfig, new: TrainConfig) -> list[str]:
    """Human-readable differences ``key: old → new`` in the keys that make two runs incompatible."""
    a, b = flatten(old), flatten(new)
    return [f"{k}: {a[k]!r} → {b[k]!r}" for k in a if k not in RESUMABLE_KEYS and a[k] != b[k]]


__all__ = ["build_config", "read_config_file", "config_to_dict", "config_from_dict", "config_hash", "config_diff"]
