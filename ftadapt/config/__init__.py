"""The training configuration: typed dataclasses with the paper's defaults (DESIGN.md §5), named presets for the
reference code, and the resolution order defaults → preset → config file → ``--set key=value`` → command-line options.
Keys are dotted (``loss.lambda_norm``); every run saves the resolved config. Torch-free.

Map of the package (each file one job):

- ``schema.py`` — the sections (``TrainConfig``, ``DataConfig`` …): every key with its default, the values it allows
  (checked when a section is built) and whether a resume may change it.
- ``methods.py`` — the methods and the loss terms each is made of (``METHODS``); ``presets.py`` — the presets.
- ``keys.py`` — dotted keys: ``flatten``, their types, ``--set`` parsing.
- ``resolve.py`` — ``build_config``, config files, ``config.json`` round trips, ``config_hash``, ``config_diff``.
- ``upgrade.py`` — config files of older layouts, upgraded in this one place (and what the hash leaves out for them).
"""
from __future__ import annotations

from ftadapt.config.keys import RESUMABLE_KEYS, flatten, parse_set, typed_value
from ftadapt.config.methods import METHODS
from ftadapt.config.presets import PRESETS
from ftadapt.config.resolve import (
    build_config,
    config_diff,
    config_from_dict,
    config_hash,
    config_to_dict,
    read_config_file,
)
from ftadapt.config.schema import (
    DATASET_KINDS,
    SEED_MAX,
    DataConfig,
    EvalConfig,
    LossConfig,
    OptimConfig,
    SpeedConfig,
    TrainConfig,
    parse_dataset_spec,
)

__all__ = ["TrainConfig", "DataConfig", "OptimConfig", "LossConfig", "EvalConfig", "SpeedConfig", "METHODS",
           "DATASET_KINDS", "PRESETS", "RESUMABLE_KEYS", "build_config", "config_from_dict", "config_to_dict",
           "config_hash", "config_diff", "parse_set", "read_config_file", "parse_dataset_spec", "flatten",
           "typed_value", "SEED_MAX"]
