"""The feature-space figures: source-vs-target scatter plots of embedded layer4 features, one panel per model (the
paper's Figures 1 and 3: 'x' source, '.' target, classes in the Cityscapes palette), and the distribution of the
per-position feature norms per domain, one panel per model (the quantity the step-wise norm loss grows)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ftadapt.analysis.plotting import class_colour, class_handles, new_figure

MAX_COLUMNS = 4
SOURCE_MARKER, TARGET_MARKER = "x", "."


@dataclass(frozen=True)
class Embedded:
    """One model's embedded points: ``xy`` (N, 2), ``domain`` (N,) 0 = source / 1 = target, ``classes`` (N,)
    trainIds; ``note`` is a second title line (e.g. the mean domain gap)."""

    xy: np.ndarray
    domain: np.ndarray
    classes: np.ndarray
    note: str = ""


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, MAX_COLUMNS)
    return math.ceil(n / cols), cols


def view_limits(values: np.ndarray) -> tuple[float, float]:
    """The axis range of one coordinate: the central 98 % of the values widened by a quarter of their span on each
    side (and never past the extremes), plus a 5 % margin — so a few extreme points (PCA keeps the long,
    high-norm features far out) do not squeeze the rest into a corner; the figure says how many points lie outside.
    Shape: (N,) → (low, high)."""
    p1, p99 = np.percentile(values, [1, 99])
    spread = p99 - p1
    low, high = max(values.min(), p1 - spread / 4), min(values.max(), p99 + spread / 4)
    margin = 0.05 * (high - low) or 1.0
    return float(low - margin), float(high + margin)


def scatter_figure(panels: Mapping[str, Embedded], classes: Sequence[int], *, title: str,
                   domain_names: tuple[str, str] = ("source", "target")):
    """One scatter panel per model: each class in its palette colour, source points as 'x', target points as '.'.
    Returns the matplotlib Figure."""
    from matplotlib.lines import Line2D

    rows, cols = _grid(len(panels))
    fig, axes = new_figure(rows, cols, panel=(4.6, 4.2))
    for ax, (name, emb) in zip(axes.flat, panels.items()):
        for c in classes:
            for d, marker, size in ((0, SOURCE_MARKER, 14), (1, TARGET_MARKER, 22)):
                pick = (emb.classes == c) & (emb.domain == d)
                if pick.any():
                    ax.scatter(emb.xy[pick, 0], emb.xy[pick, 1], s=size, marker=marker, color=class_colour(c),
                               linewidths=0.8, alpha=0.75, rasterized=True)
        (x0, x1), (y0, y1) = view_limits(emb.xy[:, 0]), view_limits(emb.xy[:, 1])
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        outside = int(((emb.xy[:, 0] < x0) | (emb.xy[:, 0] > x1) | (emb.xy[:, 1] < y0) | (emb.xy[:, 1] > y1)).sum())
        notes = [emb.note] * bool(emb.note) + [f"{outside} of {len(emb.xy)} points outside the view"] * bool(outside)
        ax.set_title("\n".join([name, *notes]), fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    markers = [Line2D([], [], color="0.2", marker=SOURCE_MARKER, linestyle="", label=f"{domain_names[0]} (x)"),
               Line2D([], [], color="0.2", marker=TARGET_MARKER, markersize=9, linestyle="",
                      label=f"{domain_names[1]} (.)")]
    fig.legend(handles=markers + class_handles(classes), loc="outside lower center",
               ncols=min(len(classes) + 2, 7), fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


@dataclass(frozen=True)
class NormHistogram:
    """One model's norm distributions on shared log-spaced ``edges``: ``counts`` per domain (of the sampled
    positions), ``below`` per domain (sampled norms under the first edge: zero vectors, post-ReLU) and the exact mean
    norm per domain (over every position read)."""

    counts: tuple[np.ndarray, np.ndarray]
    below: tuple[int, int]
    means: tuple[float, float]


def norm_figure(panels: Mapping[str, NormHistogram], edges: np.ndarray, *, title: str,
                domain_names: tuple[str, str] = ("source", "target")):
    """One panel per model: the per-position L2 norm distribution of each domain as the share of positions per bin on
    the shared log-spaced ``edges`` (norms span decades), with the mean norms as dashed lines. Returns the Figure."""
    rows, cols = _grid(len(panels))
    fig, axes = new_figure(rows, cols, panel=(4.6, 3.2), sharex=True)
    for ax, (name, hist) in zip(axes.flat, panels.items()):
        for counts, below, mean, label, colour in zip(hist.counts, hist.below, hist.means, domain_names,
                                                      ("tab:orange", "tab:blue")):
            total = counts.sum() + below
            share = counts / total if total else np.zeros(len(counts))
            zero = f", {100 * below / total:.0f} % below {edges[0]:.2g}" if below else ""
            ax.stairs(share, edges, fill=True, alpha=0.35, color=colour, label=f"{label}: mean {mean:.3g}{zero}")
            ax.stairs(share, edges, color=colour, linewidth=1.0)
            if math.isfinite(mean):
                ax.axvline(mean, color=colour, linestyle="--", linewidth=1.2)
        ax.set_xscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("L2 norm of a layer4 feature vector (log scale)", fontsize=9)
        ax.set_yticks([])
        ax.legend(fontsize=8, frameon=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    return fig


__all__ = ["Embedded", "NormHistogram", "scatter_figure", "norm_figure"]
