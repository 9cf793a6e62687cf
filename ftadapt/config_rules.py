"""The allowed values of the training config's keys, checked when a config is built (``TrainConfig.__post_init__``):
each rule takes the value (and the whole config, for limits that depend on another key) and says what is expected.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ftadapt.presets import PRESETS

COMPILE_MODES = ("off", "default", "reduce-overhead")
METHODS = ("source-only", "norm-only", "clan", "clan-norm", "maxsquare", "maxsquare-norm")
AUGMENTATIONS = ("clan", "maxsquare", "none")


def _rule(test: Callable[[Any], bool], expected: str) -> tuple[Callable[[Any, Any], bool], str]:
    return (lambda value, cfg: test(value)), expected


_POSITIVE, _NON_NEGATIVE = _rule(lambda v: v > 0, "a positive number"), _rule(lambda v: v >= 0, "≥ 0")
_FRACTION = _rule(lambda v: 0 <= v < 1, "a number in [0, 1)")
_SIZE = _rule(lambda v: min(v) >= 1, "W×H with both at least 1, e.g. 1024x512")
# The allowed values of every key with a limit (besides the finiteness of every float), checked when a config is built.
VALUE_RULES: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "method": _rule(lambda v: v in METHODS, f"one of {', '.join(METHODS)}"),
    "preset": _rule(lambda v: v in PRESETS, f"one of {', '.join(PRESETS)}"),
    "speed.amp": _rule(lambda v: v in ("off", "bf16"), "'off' or 'bf16'"),
    "speed.compile": _rule(lambda v: v in COMPILE_MODES, f"one of {', '.join(COMPILE_MODES)}"),
    "loss.seg": _rule(lambda v: v in ("ce", "focal"), "'ce' or 'focal'"),
    "data.augment": _rule(lambda v: v in AUGMENTATIONS, f"one of {', '.join(AUGMENTATIONS)}"),
    "freeze_bn_affine": _rule(lambda v: v in ("all", "stem"), "'all' or 'stem'"),
    "steps": _rule(lambda v: v > 0, "a positive number of steps"),
    "stop_at": ((lambda v, cfg: 0 <= v <= cfg.steps), "between 0 (off) and steps ({cfg.steps})"),
    "checkpoint_every": _rule(lambda v: v >= 0, "≥ 0 (0: only at the end)"),
    "keep_checkpoints": _rule(lambda v: v >= 0, "≥ 0 (0: keep every checkpoint)"),
    "log_every": _POSITIVE, "eval_every": _NON_NEGATIVE,
    "speed.channel_multiple": _rule(lambda v: v >= 0, "≥ 0 (0: off; 8 aligns bf16 rows to 16 bytes)"),
    "data.batch_size": _POSITIVE, "data.num_workers": _rule(lambda v: v >= 0, "≥ 0 (0: load in the training process)"),
    "data.source_size": _SIZE, "data.target_size": _SIZE, "eval.size": _SIZE,
    "optim.lr": _POSITIVE, "optim.d_lr": _POSITIVE, "optim.momentum": _FRACTION, "optim.power": _NON_NEGATIVE,
    "optim.weight_decay": _NON_NEGATIVE, "optim.d_weight_decay": _NON_NEGATIVE, "optim.warmup_steps": _NON_NEGATIVE,
    "optim.d_betas": _rule(lambda v: all(0 <= b < 1 for b in v), "two numbers in [0, 1), e.g. 0.9,0.99"),
    **{f"loss.{k}": _NON_NEGATIVE for k in ("focal_gamma", "aux_weight", "lambda_norm", "delta_r", "norm_damping",
                                            "lambda_adv", "lambda_weight", "lambda_local", "epsilon",
                                            "adv_preheat_steps", "d_preheat_steps", "lambda_target")},
    "loss.iw_ratio": _rule(lambda v: 0 <= v <= 1, "a number in [0, 1] (0: off)"),
    "loss.guidance_threshold": _rule(lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
}


__all__ = ["VALUE_RULES", "METHODS", "COMPILE_MODES", "AUGMENTATIONS"]
