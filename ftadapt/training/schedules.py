"""Learning-rate and loss-damping schedules of the methods (``reference/methods.md`` §3.6, §4), as pure functions of the
step. Torch-free, so configs and reports can evaluate them too. ``step`` is the 0-based iteration i, ``max_steps`` the
schedule horizon N.

A run has two horizons. The poly learning rate decays over the run's ``steps``; the damping factors of the loss terms
run over ``loss.damping_steps`` (:func:`damping_horizon`), which is ``steps`` in the paper's text but a constant in
its code: FTA's train.py damps over NUM_STEPS = 150,000 whatever ``--num-steps`` says, so at the paper's 100,000 steps
its norm damping reaches 0 exactly at the end and its adversarial damping ends at 1/3."""
from __future__ import annotations

from ftadapt.errors import UsageError

__all__ = ["poly_lr", "warmup_poly_lr", "linear_damping", "norm_damping", "damping_horizon"]


def _check(step: int, max_steps: int) -> None:
    if max_steps <= 0:
        raise UsageError(f"max_steps must be positive, got {max_steps}")
    if step < 0:
        raise UsageError(f"step must be >= 0, got {step}")


def poly_lr(base: float, step: int, max_steps: int, power: float = 0.9) -> float:
    """Poly decay: base · (1 − i/N)^power. Steps past N give 0 (the formula itself would be complex there)."""
    _check(step, max_steps)
    return base * max(0.0, 1.0 - step / max_steps) ** power


def warmup_poly_lr(base: float, step: int, max_steps: int, warmup_steps: int, power: float = 0.9) -> float:
    """CLAN's schedule: base · i/W for i < W (linear from 0), then ``poly_lr`` over the full horizon N.

    As in CLAN the poly part is not shifted by the warm-up, so the rate drops slightly at i = W (from ≈base to
    base·(1 − W/N)^power). ``warmup_steps`` 0 gives plain poly; CLAN uses W = N/20 = 5000, FTA's code 7500.
    """
    _check(step, max_steps)
    if warmup_steps < 0:
        raise UsageError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if step < warmup_steps:
        return base * step / warmup_steps
    return poly_lr(base, step, max_steps, power)


def linear_damping(step: int, max_steps: int) -> float:
    """CLAN/FTA damping of the adversarial and weight-discrepancy terms: 1 − i/N."""
    _check(step, max_steps)
    return 1.0 - step / max_steps


def norm_damping(step: int, max_steps: int, factor: float = 1.5, clamp: bool = False) -> float:
    """FTA code's damping of the norm loss: 1 − factor · i/N.

    With factor 1.5 it reaches 0 at i = N/1.5 and is negative afterwards, which turns the norm loss around (it then
    shrinks feature norms). That is what FTA's code does (methods.md §3.6), so it is the default; ``clamp=True`` holds
    the value at 0 instead.
    """
    _check(step, max_steps)
    value = 1.0 - factor * step / max_steps
    return max(0.0, value) if clamp else value


def damping_horizon(damping_steps: int, steps: int) -> int:
    """The horizon N of the damping factors: ``loss.damping_steps``, or the run's ``steps`` when that is 0 (the
    paper's text: everything over the run's length)."""
    return damping_steps or steps
