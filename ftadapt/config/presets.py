"""Named training presets: the paper's text (the defaults) and the reference code each Table 1 row was trained with.

A preset is a set of config keys applied after the defaults and before a config file and ``--set`` (so an explicit key
always wins). ``paper`` is empty: the defaults of ``ftadapt.config.schema`` are the paper's text (methods.md §4, "FTA
paper" column). The others reproduce a reference implementation's choices where they differ from the text:

- ``paper-code``: the paper's own code (FTA ``train.py``, a CLAN fork);
- ``clan-code``: CLAN's code (the "CLAN" baseline row and the CLAN member of "CLAN + Norm*");
- ``maxsquare-code``: MaxSquare's code (the MaxSquare rows): only the stem BN affine frozen, flip + Gaussian-blur
  augmentation without random scale.

``preset_table()`` lists every key a preset changes against the paper's text; ``docs/reproduce.md`` shows it and a
test keeps the two in step.
"""
from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # FTA's train.py fixes its horizons as module constants, whatever --num-steps (only the poly lr follows it):
    # NUM_STEPS = 150,000 damps the norm and adversarial terms, PREHEAT_STEPS = 150,000 / 20 = 7,500 warms up both
    # optimizers and the D target term; G's adversarial term is weighted from the first step.
    "paper-code": {
        "loss.seg": "focal", "optim.d_lr": 1e-4, "optim.d_weight_decay": 0.0, "loss.lambda_weight": 0.009,
        "optim.warmup_steps": 7500, "loss.norm_damping": 1.5, "loss.damping_steps": 150_000,
        "loss.adv_preheat_steps": 0, "loss.d_preheat_steps": 7500,
    },
    # CLAN's CLAN_train.py: PREHEAT_STEPS = 5,000 for both the G and the D term.
    "clan-code": {
        "loss.seg": "focal", "optim.d_lr": 1e-4, "optim.d_weight_decay": 0.0, "optim.warmup_steps": 5000,
        "loss.adv_preheat_steps": 5000, "loss.d_preheat_steps": 5000,
    },
    # MaxSquare's tools/solve_gta5.py and graphs/models/deeplab_multi.py.
    "maxsquare-code": {
        "freeze_bn_affine": "stem", "data.augment": "maxsquare",
    },
}


def preset_table(defaults: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, paper text value, "preset: value; …") for every key some preset changes, in key order.

    ``defaults`` is the flat default config (``flatten(TrainConfig())``).
    """
    keys = sorted({k for values in PRESETS.values() for k in values})
    rows = []
    for key in keys:
        changed = [f"{name}: {values[key]!r}" for name, values in PRESETS.items() if key in values]
        rows.append((key, repr(defaults[key]), "; ".join(changed)))
    return rows


__all__ = ["PRESETS", "preset_table"]
