"""Named model configurations: ``create_model("deeplabv2-r101", freeze_bn_stats=True)``.

A name maps to a :class:`ModelConfig`; every model is a :class:`DeepLabV2`, so the tiny test/demo model shares the
structure and key pattern of the real ones and only differs in widths and block counts.
"""
from __future__ import annotations

from typing import Any

from ftadapt.errors import UsageError
from ftadapt.models.deeplab import DEPTH_BLOCKS, DeepLabV2, ModelConfig

_REGISTRY: dict[str, ModelConfig] = {}


def register_model(name: str, config: ModelConfig, *, overwrite: bool = False) -> None:
    """Register ``config`` under ``name``; re-registering a name needs ``overwrite=True``."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"model {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = config


def list_models() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The registered config of ``name`` with ``overrides`` (ModelConfig fields) applied."""
    if name not in _REGISTRY:
        raise UsageError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name].replace(**overrides)


def create_model(name: str, **overrides: Any) -> DeepLabV2:
    """Build the registered model ``name`` (freshly initialised: convs N(0, 0.01), BN 1/0)."""
    return DeepLabV2(model_config(name, **overrides))


# The paper's model (CLAN / Feature-To-Adapt layout): two heads on layer4, all four ASPP branches summed.
register_model("deeplabv2-r101", ModelConfig(blocks=DEPTH_BLOCKS[101]))
register_model("deeplabv2-r50", ModelConfig(blocks=DEPTH_BLOCKS[50]))
# AdaptSegNet / MaxSquare layout: aux head on layer3, main head on layer4, only two ASPP branches summed.
register_model("deeplabv2-r101-multi-reduced", ModelConfig(blocks=DEPTH_BLOCKS[101], aspp="reduced", heads="multi"))
# Tests and the CPU demo: one block per layer, base width 8 (layer4: 256 channels), same keys and geometry.
register_model("tiny", ModelConfig(blocks=(1, 1, 1, 1), width=8))
register_model("tiny-multi", ModelConfig(blocks=(1, 1, 1, 1), width=8, aspp="reduced", heads="multi"))
