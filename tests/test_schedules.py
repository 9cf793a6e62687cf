"""Learning-rate and damping schedules against hand-computed values."""
from __future__ import annotations

import pytest

from ftadapt.errors import UsageError
from ftadapt.training.schedules import linear_damping, norm_damping, poly_lr, warmup_poly_lr


def test_poly_lr():
    assert poly_lr(2.5e-4, 0, 100_000) == 2.5e-4
    assert poly_lr(2.5e-4, 50_000, 100_000) == pytest.approx(2.5e-4 * 0.5 ** 0.9)
    assert poly_lr(1.0, 75, 100, power=2.0) == pytest.approx(0.0625)
    assert poly_lr(1.0, 100, 100) == 0.0
    assert poly_lr(1.0, 150, 100) == 0.0  # past the horizon: held at 0, not complex


def test_warmup_poly_lr_is_linear_from_zero_then_poly():
    assert warmup_poly_lr(1e-4, 0, 100_000, 5000) == 0.0
    assert warmup_poly_lr(1e-4, 2500, 100_000, 5000) == pytest.approx(0.5e-4)
    assert warmup_poly_lr(1e-4, 4999, 100_000, 5000) == pytest.approx(1e-4 * 4999 / 5000)
    # CLAN's poly part is not shifted by the warm-up: at i = W it is (1 − W/N)^0.9, not 1.
    assert warmup_poly_lr(1e-4, 5000, 100_000, 5000) == pytest.approx(1e-4 * 0.95 ** 0.9)
    assert warmup_poly_lr(1e-4, 0, 100_000, 0) == 1e-4


def test_linear_damping():
    assert linear_damping(0, 100_000) == 1.0
    assert linear_damping(25_000, 100_000) == pytest.approx(0.75)
    assert linear_damping(100_000, 100_000) == 0.0


def test_norm_damping_goes_negative_unless_clamped():
    assert norm_damping(0, 150_000) == 1.0
    assert norm_damping(50_000, 150_000) == pytest.approx(0.5)
    assert norm_damping(100_000, 150_000) == pytest.approx(0.0, abs=1e-12)
    assert norm_damping(120_000, 150_000) == pytest.approx(-0.2)
    assert norm_damping(120_000, 150_000, clamp=True) == 0.0
    assert norm_damping(50_000, 100_000, factor=1.0) == pytest.approx(0.5)


@pytest.mark.parametrize("call, message", [
    (lambda: poly_lr(1.0, 0, 0), "max_steps"),
    (lambda: linear_damping(-1, 10), "step"),
    (lambda: warmup_poly_lr(1.0, 0, 10, -5), "warmup_steps"),
])
def test_bad_arguments(call, message):
    with pytest.raises(UsageError, match=message):
        call()
