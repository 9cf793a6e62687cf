"""How far apart a class's source and target features lie: per-class running moments and the domain gap (numpy).

The paper's claim (its Figures 1 and 3) is that the step-wise feature norm makes target features larger and better
aligned with the source ones, class by class. Two numbers per class c and model say whether that happened:

- the **mean feature norm** per domain, mean over the feature-grid positions of class c of ‖f‖₂ (the quantity the
  loss grows);
- the **domain gap** of class c::

      gap_c = ‖μ_S − μ_T‖ / sqrt((σ²_S + σ²_T) / 2)

  where μ_D is the centroid of the class's features in domain D and σ²_D = E‖f − μ_D‖² their mean squared distance
  to it (the trace of the covariance: the within-domain spread, all channels together). It is the distance between
  the two domains' class centroids in units of the pooled within-domain RMS spread — a multivariate Cohen's d. 0: the
  centroids coincide (identical clouds give exactly 0); 1: they are one RMS spread apart; large: the clouds are
  separated. It does not change when every feature is scaled by the same factor, so a model does not look better
  aligned merely because the norm loss made its features longer. Lower is better aligned.

Both are computed exactly from running sums over every position seen (count, Σf, Σ‖f‖², Σ‖f‖ per class), so the
footprint is classes × channels however many images are read.
"""
from __future__ import annotations

import math

import numpy as np

from ftadapt.errors import UsageError


class ClassMoments:
    """Running per-class sums of feature vectors with ``channels`` entries: ``count`` (positions), ``total`` (Σf),
    ``sq`` (Σ‖f‖²) and ``norm_sum`` (Σ‖f‖), all in float64."""

    def __init__(self, num_classes: int, channels: int) -> None:
        self.count = np.zeros(num_classes, np.int64)
        self.total = np.zeros((num_classes, channels), np.float64)
        self.sq = np.zeros(num_classes, np.float64)
        self.norm_sum = np.zeros(num_classes, np.float64)

    def add(self, class_ids: np.ndarray, features: np.ndarray) -> None:
        """Add feature vectors with their classes (values outside 0…num_classes−1 are skipped).

        Shape: class_ids (P,) integers, features (P, channels).
        """
        class_ids, features = np.asarray(class_ids), np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape != (class_ids.shape[0], self.total.shape[1]):
            raise UsageError(f"features must be (P, {self.total.shape[1]}) for {class_ids.shape[0]} class ids, got "
                             f"{features.shape}")
        keep = (class_ids >= 0) & (class_ids < self.count.shape[0])
        ids, feats = class_ids[keep].astype(np.intp), features[keep]
        norms = np.linalg.norm(feats, axis=1)
        self.add_sums(np.bincount(ids, minlength=self.count.shape[0]), _sum_by(ids, feats, self.total.shape),
                      np.bincount(ids, norms**2, self.count.shape[0]), np.bincount(ids, norms, self.count.shape[0]))

    def add_sums(self, count: np.ndarray, total: np.ndarray, sq: np.ndarray, norm_sum: np.ndarray) -> None:
        """Add sums computed elsewhere (e.g. on the GPU): the four arrays of the attributes' shapes."""
        self.count += np.asarray(count, np.int64)
        self.total += np.asarray(total, np.float64)
        self.sq += np.asarray(sq, np.float64)
        self.norm_sum += np.asarray(norm_sum, np.float64)

    def mean_norm(self, c: int) -> float:
        """Mean ‖f‖₂ over the positions of class ``c`` (NaN without any)."""
        return float(self.norm_sum[c] / self.count[c]) if self.count[c] else math.nan

    def centroid(self, c: int) -> np.ndarray:
        """μ_c, the mean feature vector of class ``c``. Shape: → (channels,); NaN without positions."""
        return self.total[c] / self.count[c] if self.count[c] else np.full(self.total.shape[1], np.nan)

    def spread2(self, c: int) -> float:
        """σ²_c = E‖f − μ_c‖² = E‖f‖² − ‖μ_c‖² (clipped at 0 against rounding); NaN with fewer than 2 positions."""
        if self.count[c] < 2:
            return math.nan
        mu = self.centroid(c)
        return max(float(self.sq[c] / self.count[c] - mu @ mu), 0.0)


def _sum_by(ids: np.ndarray, features: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    total = np.zeros(shape, np.float64)
    np.add.at(total, ids, features)
    return total


def domain_gap(source: ClassMoments, target: ClassMoments, c: int) -> float:
    """The domain gap of class ``c`` (module docstring): ‖μ_S − μ_T‖ / sqrt((σ²_S + σ²_T) / 2).

    NaN when either domain has fewer than 2 positions of the class, or when both spreads are 0 (every feature of
    the class the same vector in each domain: no scale to measure the distance in).
    """
    s2, t2 = source.spread2(c), target.spread2(c)
    pooled = (s2 + t2) / 2
    if math.isnan(pooled) or pooled <= 0.0:
        return math.nan
    return float(np.linalg.norm(source.centroid(c) - target.centroid(c)) / math.sqrt(pooled))


__all__ = ["ClassMoments", "domain_gap"]
