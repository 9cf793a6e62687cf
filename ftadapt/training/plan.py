"""``ftadapt train --plan``: a run's schedule before it starts — the learning rates and the coefficient of every loss
at chosen steps, computed by the very functions the training step calls (``scheduled_lr`` and each term's
``coefficients``), so a researcher can check a multi-day run's horizons, warm-ups and zero crossings first.

A coefficient is λ × damping, the factor the loss is multiplied by; a loss still in its plain-BCE preheat form (the
weight map not applied yet) is listed under ``plain_bce`` at that step, since the preheat changes its form, not its
factor.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ftadapt.config import TrainConfig, flatten
from ftadapt.errors import UsageError
from ftadapt.methods import Method, create_method
from ftadapt.training.schedules import damping_horizon
from ftadapt.training.step import scheduled_lr

QUARTERS = (0.25, 0.5, 0.75, 1.0)


def parse_plan_steps(text: str, steps: int) -> list[int]:
    """``"0,3750,80000"`` → sorted unique steps, each a whole number from 0 to ``steps``; else a UsageError."""
    fix = f"expected whole steps from 0 to {steps} (the run's steps) separated by commas, e.g. 0,3750,80000"
    try:
        chosen = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--plan-steps {text!r}: {fix}") from None
    outside = [i for i in chosen if not 0 <= i <= steps]
    if outside:
        raise UsageError(f"--plan-steps {text!r}: step {outside[0]} is outside the run; {fix}")
    return sorted(set(chosen))


def _first(test: Callable[[int], bool], steps: int) -> int | None:
    """The first step in [0, steps] at which ``test`` holds, for a test that holds from some step on (the damped
    coefficients are linear in the step and a preheat ends once); None when it never does."""
    if not test(steps):
        return None
    low, high = -1, steps  # test(low) is false (or low is before the run), test(high) true
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if test(middle) else (middle, high)
    return high


def default_plan_steps(cfg: TrainConfig, method: Method) -> list[int]:
    """0; the end of the learning-rate warm-up and of each preheat; 25/50/75/100 % of the run; its ``stop_at``; and
    every step where a coefficient reaches 0 (e.g. the paper code's norm term at 2/3 of its damping horizon)."""
    steps = cfg.steps
    chosen = {0, *(round(steps * q) for q in QUARTERS), cfg.stop_at, cfg.optim.warmup_steps}
    for name in method.coefficients(0, steps):
        chosen.add(_first(lambda i, name=name: method.coefficients(i, steps)[name] <= 0, steps))
    for name in method.plain(0):
        chosen.add(_first(lambda i, name=name: name not in method.plain(i), steps))
    return sorted(i for i in chosen if i is not None and i <= steps)


def plan(cfg: TrainConfig, at: Sequence[int] | None = None) -> dict[str, Any]:
    """The plan of ``cfg``: ``{"config": {flat keys}, "schedule": [{"step", "lr_g", "lr_d", "terms", "plain_bce"}]}``
    at the steps ``at`` (default: :func:`default_plan_steps`). ``lr_g`` is the backbone's rate (the heads get 10×);
    ``lr_d`` is None for a method without a discriminator."""
    method = create_method(cfg.method, cfg.loss)
    rows = []
    for step in at if at is not None else default_plan_steps(cfg, method):
        rows.append({"step": step, "lr_g": scheduled_lr(cfg.optim.lr, step, cfg),
                     "lr_d": scheduled_lr(cfg.optim.d_lr, step, cfg) if method.uses_discriminator else None,
                     "terms": method.coefficients(step, cfg.steps), "plain_bce": sorted(method.plain(step))})
    config = {key: list(value) if isinstance(value, tuple) else value for key, value in flatten(cfg).items()}
    return {"config": config, "schedule": rows}


def horizons(cfg: TrainConfig) -> str:
    """One line for people: the run's horizons (and a warm-up that outlasts the run)."""
    warmup = cfg.optim.warmup_steps
    return (f"horizons: poly learning rate over {cfg.steps:,} steps after {warmup:,} warm-up steps"
            + (" (the warm-up outlasts the run: the rate never reaches its base)" if warmup >= cfg.steps else "")
            + f"; damping over {damping_horizon(cfg.loss.damping_steps, cfg.steps):,} steps"
            + (f"; the run stops at step {cfg.stop_at:,}" if cfg.stop_at else ""))


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return "0" if value == 0 else f"{value:.4g}" if math.isfinite(value) else str(value)


def plan_table(result: dict[str, Any]) -> list[str]:
    """The schedule as aligned text lines: step, lr_g, lr_d, then one column per loss; a loss in its plain-BCE
    preheat form is marked †."""
    names = list(dict.fromkeys(name for row in result["schedule"] for name in row["terms"]))
    header = ["step", "lr_g", "lr_d", *names]
    body = [[f"{row['step']:,}", _number(row["lr_g"]), _number(row["lr_d"]),
             *(_number(row["terms"][n]) + ("†" if n in row["plain_bce"] else "") for n in names)]
            for row in result["schedule"]]
    widths = [max(len(line[k]) for line in (header, *body)) for k in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in (header, *body)]
    if any(row["plain_bce"] for row in result["schedule"]):
        lines.append("† plain BCE: the preheat has not applied the weight map yet")
    return lines


__all__ = ["plan", "plan_table", "parse_plan_steps", "default_plan_steps", "horizons"]
