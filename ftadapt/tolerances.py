"""The parity tolerances of an exported file (DESIGN.md §7), in one place: what the export's verification and
``ftadapt bench accuracy`` accept, per precision of the file.

Two checks use them, against the PyTorch FP32 module the file was exported from:

- the export's verification (``ftadapt.export.verify``), on a few synthetic frames: the largest difference of a fused
  probability (``max_abs_prob``; None: reported, not gated) and the share of agreeing labels, where a differing pixel
  on which the reference's two best classes tie counts as agreeing (``min_label_agreement``);
- the accuracy gate (``ftadapt.bench.accuracy``), over a labelled split: |ΔmIoU| in mIoU points (``miou_points``) and
  the share of labels identical to the reference's (``min_identical``; None: reported, not gated).

Shares are fractions (0.9999 = 99.99 %). A larger FP16 drop is a bug (overflow, cast placement, pre-processing),
not "FP16 noise". Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass

from ftadapt.errors import UsageError


@dataclass(frozen=True)
class Tolerance:
    """What a file of one precision must meet against PyTorch FP32 (module docstring)."""

    precision: str
    miou_points: float
    min_identical: float | None
    max_abs_prob: float | None
    min_label_agreement: float


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance("fp32", miou_points=0.01, min_identical=0.9999, max_abs_prob=1e-4, min_label_agreement=0.9999),
    "fp16": Tolerance("fp16", miou_points=0.1, min_identical=None, max_abs_prob=None, min_label_agreement=0.995),
}


def tolerance_for(precision: str) -> Tolerance:
    """The tolerance of a file of ``precision``; a UsageError for a precision without one."""
    if precision not in TOLERANCES:
        raise UsageError(f"no parity tolerance for precision {precision!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES[precision]


__all__ = ["Tolerance", "TOLERANCES", "tolerance_for"]
