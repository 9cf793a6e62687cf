"""Two-dimensional embeddings of sampled feature vectors with scikit-learn: PCA and t-SNE (the paper's Figure 3).

Source and target points of one model are embedded together, so their relative positions mean something; each model
gets its own embedding (its feature space is its own). PCA is linear and keeps large distances (the paper prefers it
for judging norms, Figure 1); t-SNE keeps neighbourhoods. Before t-SNE the points are reduced to at most 50
dimensions by PCA, the usual practice that removes noise and makes t-SNE's distance computations cheap.
"""
from __future__ import annotations

import numpy as np

from ftadapt.errors import UsageError

METHODS = ("pca", "tsne")
TSNE_PCA_DIMS = 50
MAX_PERPLEXITY = 30.0


def embed(points: np.ndarray, method: str, *, seed: int = 0, threads: int | None = None) -> np.ndarray:
    """``points`` in two dimensions with ``method`` ("pca" or "tsne"), deterministic for a seed. ``threads`` caps the
    BLAS/OpenMP threads (None: the libraries' default, every core): on a busy machine t-SNE's OpenMP threads spin
    against other processes, and one thread was 7× faster there than two.

    Shape: (N, C) → (N, 2) float32; N ≥ 3 for PCA, N ≥ 5 for t-SNE (its perplexity is min(30, (N − 1) / 3)).
    """
    points = np.asarray(points, np.float64)
    if method not in METHODS:
        raise UsageError(f"embedding {method!r}: expected one of {', '.join(METHODS)}")
    least = 3 if method == "pca" else 5
    if points.ndim != 2 or points.shape[0] < least:
        raise UsageError(f"{method} needs at least {least} sampled points, got {points.shape[0]}: read more images "
                         "or choose classes that occur in them")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        return _embed(points, method, seed)


def _embed(points: np.ndarray, method: str, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(points).astype(np.float32)
    from sklearn.manifold import TSNE

    dims = min(TSNE_PCA_DIMS, *points.shape)
    reduced = PCA(n_components=dims, random_state=seed).fit_transform(points) if dims < points.shape[1] else points
    perplexity = min(MAX_PERPLEXITY, (points.shape[0] - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return tsne.fit_transform(reduced).astype(np.float32)


__all__ = ["embed", "METHODS"]
