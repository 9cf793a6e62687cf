"""Config files of every layout ftadapt has written, upgraded here and only here to the current one; and what the
config hash must leave out so that older runs keep the hash their checkpoints record.

Every ``config.json`` records the layout it was written in as ``"version"`` (:data:`CONFIG_VERSION`). A file without
one is read as the layouts written before versions existed, which differ from version 1 in four ways:

- the ``speed`` keys stood at the top level (``amp``, ``channels_last`` …): they move into ``speed``;
- three speed switches that computed the same values as the plain step (``cuda_graphs``, ``channel_multiple``,
  ``space_to_batch``) were removed, never having paid off in a measurement: whatever their value, they are dropped;
- ``data.augment`` was true / false before augmentation styles: "clan" / "none";
- keys added since are absent and take their defaults, except ``loss.d_preheat_steps``: one ``adv_preheat_steps``
  warmed up both the generator's and the discriminator's term, so the D term keeps the G term's value.

A hand-written ``--config`` file without a version is read the same way (a layout that only names current keys reads
as it is, but ``loss.adv_preheat_steps`` alone then sets both warm-ups, as it did before they were split).

A new layout raises :data:`CONFIG_VERSION` and adds its step to :data:`_STEPS`; a key it adds to what a run learns
goes into :data:`ADDED_KEYS` at the value older runs had, so that their hash does not change.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ftadapt.config.keys import flatten_mapping
from ftadapt.errors import UsageError

CONFIG_VERSION = 1

# Unversioned layouts: top-level speed keys → their place in the ``speed`` section.
MOVED_KEYS = {name: f"speed.{name}" for name in ("amp", "channels_last", "cudnn_benchmark", "compile", "cuda_graphs",
                                                 "channel_multiple", "space_to_batch")}
REMOVED_KEYS = frozenset({"speed.cuda_graphs", "speed.channel_multiple", "speed.space_to_batch"})
# Values of keys whose type changed: old value → current value.
CHANGED_VALUES: dict[str, dict[Any, Any]] = {"data.augment": {True: "clan", False: "none"}}
# Keys split from another: absent in an older file, they had that key's value.
SPLIT_KEYS = {"loss.d_preheat_steps": "loss.adv_preheat_steps"}
# Keys a run learns by that were added after runs were first hashed, at the value those runs had.
ADDED_KEYS: dict[str, Any] = {"sync_bn": False, "freeze_bn_affine": "all", "data.source_list": "",
                              "data.target_list": "", "loss.damping_steps": 0}


def _from_unversioned(flat: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (no ``"version"``) → version 1."""
    flat = {MOVED_KEYS.get(name, name): value for name, value in flat.items()}
    for name, values in CHANGED_VALUES.items():
        if isinstance(flat.get(name), bool):
            flat[name] = values[flat[name]]
    for name, source in SPLIT_KEYS.items():
        if name not in flat and source in flat:
            flat[name] = flat[source]
    return {name: value for name, value in flat.items() if name not in REMOVED_KEYS}


_STEPS = {0: _from_unversioned}  # version → the upgrade to the next one


def upgrade(data: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a config mapping of any version (nested or dotted, with or without ``"version"``) as the current
    layout names them, flat and without the version. A version newer than this ftadapt's is a UsageError."""
    flat = flatten_mapping(data)
    version = flat.pop("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= CONFIG_VERSION:
        raise UsageError(f"config version {version!r} is not one this ftadapt reads (0 … {CONFIG_VERSION}); a newer "
                         "ftadapt wrote it: upgrade ftadapt to use it")
    for step in range(version, CONFIG_VERSION):
        flat = _STEPS[step](flat)
    return flat


def hashed_form(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The keys ``flat`` (a current config's keys that the hash covers) as the runs hashed first held them: keys added
    since are left out at the value those runs had (a split key: when it equals its source), and changed values are
    spelled as they were. A run thus keeps its hash through every upgrade."""
    old_values = {name: {new: old for old, new in values.items()} for name, values in CHANGED_VALUES.items()}
    first_values = {**ADDED_KEYS, **{name: flat[source] for name, source in SPLIT_KEYS.items()}}
    return {name: old_values[name].get(value, value) if name in old_values else value
            for name, value in flat.items() if not (name in first_values and value == first_values[name])}


__all__ = ["CONFIG_VERSION", "upgrade", "hashed_form", "MOVED_KEYS", "REMOVED_KEYS", "CHANGED_VALUES", "SPLIT_KEYS",
           "ADDED_KEYS"]
