"""Segmentation metrics on numpy (no torch): the dataset-level confusion matrix, IoU / mIoU and the result record.

The protocol is AdaptSegNet's (``reference/methods.md`` §6.1, DESIGN §5): one 19×19 confusion matrix (rows = ground
truth, columns = prediction) accumulated over the whole set, only pixels with 0 ≤ gt < 19 counted, IoU_c =
TP/(TP+FP+FN), classes absent from both ground truth and prediction are NaN and dropped by ``nanmean``. Numbers stay
at full precision; only the formatters round.

A prediction of 255 ("no prediction") on a valid ground-truth pixel is counted as wrong: it adds to that class's FN
and to no class's FP. AdaptSegNet's code cannot take 255 at all (its bincount then no longer reshapes to 19×19); the
Cityscapes evaluation scripts count a prediction of any non-evaluated id this way, so the choice matches theirs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ftadapt.errors import UsageError
from ftadapt.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, SYNTHIA_13, SYNTHIA_16

# Counting the uint16 keys gt * 256 + pred gives every (gt, pred) pair of uint8 values in one pass: rows 0–18 are
# the counted ground-truth classes, every other row is ignored; prediction columns 19–254 are invalid values.
_KEYS = 256 * 256


def _count_keys(keys: np.ndarray) -> np.ndarray:
    """Occurrences of each uint16 key (65536 int64 bins).

    Label maps come in long runs (≈2 % of neighbours differ in a 2048×1024 pair), and ``np.bincount`` slows down on
    runs (each increment waits for the previous one to the same bin). Counting run lengths per key is then ~3× faster;
    speckled maps, with many runs, take the plain bincount.
    """
    changed = keys[1:] != keys[:-1]
    if keys.size == 0 or np.count_nonzero(changed) > keys.size // 8:
        return np.bincount(keys, minlength=_KEYS)
    ends = np.append(np.flatnonzero(changed), keys.size - 1)  # last index of every run
    lengths = np.diff(ends, prepend=-1)
    return np.bincount(keys[ends], weights=lengths, minlength=_KEYS).astype(np.int64)  # exact below 2**53


def _integer(values: np.ndarray, name: str, what: str) -> None:
    if not np.issubdtype(values.dtype, np.integer):
        raise UsageError(f"{name}: {what} must be integer trainIds, got dtype {values.dtype}")


def _gt_uint8(gt: np.ndarray, name: str) -> np.ndarray:
    """Ground-truth trainIds as uint8; every value outside 0–18 (negative ones included) becomes 255 (ignored)."""
    if gt.dtype == np.uint8:
        return gt
    _integer(gt, name, "ground truth")
    return np.where((gt >= 0) & (gt < NUM_CLASSES), gt, IGNORE_INDEX).astype(np.uint8)


def _pred_uint8(pred: np.ndarray, name: str) -> np.ndarray:
    """Predicted trainIds as uint8; values that do not fit are an error (values 19–254 are caught by ``update``)."""
    if pred.dtype == np.uint8:
        return pred
    _integer(pred, name, "prediction")
    if pred.size and (pred.min() < 0 or pred.max() > IGNORE_INDEX):
        bad = np.unique(pred[(pred < 0) | (pred > IGNORE_INDEX)])[:8].tolist()
        raise UsageError(f"{name}: prediction holds values {bad} outside trainIds 0–{NUM_CLASSES - 1} "
                         f"({IGNORE_INDEX} = no prediction)")
    return pred.astype(np.uint8)


class ConfusionMatrix:
    """A 19×19 int64 confusion matrix (rows = ground-truth trainId, columns = predicted trainId).

    ``missed[c]`` counts ground-truth pixels of class c predicted as 255: they are errors (FN of c) that have no
    column in the matrix.
    """

    def __init__(self) -> None:
        self.matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
        self.missed = np.zeros(NUM_CLASSES, dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray, *, name: str = "prediction") -> None:
        """Count one image (or a batch) of ground-truth and predicted trainIds.

        Ground-truth values outside 0–18 are ignored. Predictions must be 0–18 or 255; any other value raises a
        ``UsageError`` naming ``name`` (the file) — often label ids saved instead of trainIds.

        Shape: gt (..., H, W) and pred of the same shape, any integer dtype (uint8 is the fast path).
        """
        gt, pred = np.asarray(gt), np.asarray(pred)
        if gt.shape != pred.shape:
            raise UsageError(f"{name}: prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
        key = _gt_uint8(gt, name).astype(np.uint16)
        key <<= 8
        key |= _pred_uint8(pred, name)
        counts = _count_keys(key.ravel()).reshape(256, 256)
        invalid = np.flatnonzero(counts[:, NUM_CLASSES:IGNORE_INDEX].any(axis=0)) + NUM_CLASSES
        if invalid.size:
            hint = " — Cityscapes label ids instead of trainIds?" if invalid.max() <= 33 else ""
            raise UsageError(f"{name}: prediction holds values {invalid[:8].tolist()} outside trainIds "
                             f"0–{NUM_CLASSES - 1} ({IGNORE_INDEX} = no prediction){hint}")
        self.matrix += counts[:NUM_CLASSES, :NUM_CLASSES]
        self.missed += counts[:NUM_CLASSES, IGNORE_INDEX]

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts to this matrix (in place) and return it."""
        self.matrix += other.matrix
        self.missed += other.missed
        return self

    @property
    def n_pixels(self) -> int:
        """Number of counted (valid ground-truth) pixels."""
        return int(self.matrix.sum() + self.missed.sum())

    def iou(self) -> np.ndarray:
        """Per-class IoU = TP / (TP + FP + FN) as fractions; NaN for classes absent from both GT and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        fp = self.matrix.sum(axis=0) - tp
        fn = self.matrix.sum(axis=1) + self.missed - tp
        denom = tp + fp + fn
        out = np.full(NUM_CLASSES, np.nan)
        np.divide(tp, denom, out=out, where=denom > 0)
        return out

    def miou(self) -> float:
        """Mean IoU over the classes that are not NaN (a fraction; NaN when no class is present)."""
        return nanmean(self.iou())

    def miou_subset(self, class_ids: Sequence[int]) -> float:
        """Mean IoU over a subset of trainIds, e.g. ``labels.SYNTHIA_16`` / ``labels.SYNTHIA_13`` (a fraction)."""
        return nanmean(self.iou()[list(class_ids)])


def nanmean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else math.nan


@dataclass
class EvalResult:
    """The outcome of one evaluation. ``iou`` holds fractions at full precision; ``to_dict`` gives percent.
    ``agreement`` (evaluations with a reference predictor) is the pixel agreement with it (``Agreement.to_dict``)."""

    iou: np.ndarray
    n_images: int
    protocol: dict
    synthia_subsets: bool = False
    missing: dict[str, list[str]] | None = None
    confusion: ConfusionMatrix | None = field(default=None, repr=False, compare=False)
    agreement: dict | None = None

    @classmethod
    def from_confusion(cls, confusion: ConfusionMatrix, *, n_images: int, protocol: dict,
                       synthia_subsets: bool = False, missing: dict[str, list[str]] | None = None,
                       agreement: dict | None = None) -> EvalResult:
        return cls(confusion.iou(), n_images, protocol, synthia_subsets, missing, confusion, agreement)

    @property
    def miou(self) -> float:
        return nanmean(self.iou)

    @property
    def miou16(self) -> float:
        return nanmean(self.iou[list(SYNTHIA_16)])

    @property
    def miou13(self) -> float:
        return nanmean(self.iou[list(SYNTHIA_13)])

    def to_dict(self) -> dict:
        """JSON-ready dict: percentages at full precision, ``None`` (null) for NaN, 19 classes in trainId order."""
        out = {"miou": percent(self.miou)}
        if self.synthia_subsets:
            out["miou16"] = percent(self.miou16)
            out["miou13"] = percent(self.miou13)
        out["per_class_iou"] = [percent(v) for v in self.iou]
        out["classes"] = list(CLASS_NAMES)
        out["n_images"] = self.n_images
        out["protocol"] = dict(self.protocol)
        if self.missing is not None:
            out["missing"] = {k: list(v) for k, v in self.missing.items()}
        if self.agreement is not None:
            out["agreement"] = dict(self.agreement)
        return out


def percent(value: float) -> float | None:
    return None if math.isnan(value) else 100.0 * float(value)
