"""The figures of a bench's ``--out`` folder (matplotlib, imported only while drawing; the ``train`` extra has it).

- ``per_class_iou.png`` (accuracy): the 19 per-class IoUs of every backend side by side, and below, each backend's
  difference to the reference class by class — where a deployment loses accuracy, if anywhere.
- ``latency.png`` (accuracy: the per-frame times of the pass; latency: batch 1 of every backend): the distribution of
  the per-call latency per backend (box plots over every timed call, p50 marked), and for the latency bench the
  frames per second against the batch size.

Every figure records the titles of its panels in the PNG's ``Description`` text chunk, so a reader (or a test) can
tell what a file shows without looking.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftadapt.labels import CLASS_NAMES

PER_CLASS_FILE, LATENCY_FILE = "per_class_iou.png", "latency.png"


def _save(fig: Any, axes: Sequence[Any], path: Path, title: str) -> list[str]:
    """Save ``fig`` with its panel titles in the PNG metadata; return the titles."""
    panels = [ax.get_title() for ax in axes]
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Title": title, "Description": "panels: " + "; ".join(panels)})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return panels


def _bars(ax: Any, series: dict[str, Sequence[float | None]], *, ylabel: str) -> None:
    """Grouped bars: one group per class, one bar per series (None drawn as nothing)."""
    import numpy as np

    x = np.arange(len(CLASS_NAMES))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        heights = [np.nan if v is None else v for v in values]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=name)
    ax.set_xticks(x, CLASS_NAMES, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, ncol=min(len(series), 4))
    ax.grid(axis="y", alpha=0.3)


def per_class_figure(results: dict[str, Any], path: Path) -> list[str]:
    """Per-class IoU bars of every backend that ran, and their differences to the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = {n: r for n, r in results["backends"].items() if r["status"] == "ran"}
    ref = results["reference"]
    others = {n: r["delta_per_class_iou"] for n, r in ran.items() if n != ref and "delta_per_class_iou" in r}
    fig, axes = plt.subplots(2 if others else 1, 1, figsize=(13, 8 if others else 4.5), squeeze=False)
    axes = list(axes[:, 0])
    _bars(axes[0], {n if r["miou"] is None else f"{n} ({r['miou']:.2f})": r["per_class_iou"] for n, r in ran.items()},
          ylabel="IoU (%)")
    axes[0].set_title("Per-class IoU by backend (mIoU in the legend)")
    if others:
        _bars(axes[1], others, ylabel="IoU points")
        axes[1].axhline(0.0, color="black", linewidth=0.8)
        axes[1].set_title(f"Per-class IoU difference to {ref}")
    return _save(fig, axes, path, f"Accuracy parity of {Path(results['model']['path']).name}")


def row_label(row: dict[str, Any], sep: str = " ") -> str:
    """What a latency row measured: file or model, backend, precision, flip fusion, variant."""
    extra = (" flip" if row.get("flip") else "") + (f" {row['variant']}" if row.get("variant") != "eager" else "")
    return f"{row['model']}{sep}{row['backend']} {row['precision']}{extra}"


def latency_samples(results: dict[str, Any]) -> dict[str, list[float]]:
    """Per-call latencies (ms) to plot: the accuracy pass's per backend, or the latency bench's at batch 1."""
    if results["benchmark"] == "accuracy":
        return {n: r["latency_during_pass"]["samples_ms"] for n, r in results["backends"].items()
                if r["status"] == "ran" and r.get("latency_during_pass")}
    return {row_label(r, "\n"): r["samples_ms"] for r in results["results"]
            if r.get("batch") == 1 and "samples_ms" in r}


def latency_figure(results: dict[str, Any], path: Path) -> list[str]:
    """Box plots of the per-call latency per backend; for the latency bench also frames/s against batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = latency_samples(results)
    sweep = results["benchmark"] == "latency" and any(r.get("batch", 1) > 1 for r in results["results"])
    fig, axes = plt.subplots(1, 2 if sweep else 1, figsize=(13 if sweep else 8, 4.8), squeeze=False)
    axes = list(axes[0])
    ax = axes[0]
    ax.boxplot(list(samples.values()), orientation="horizontal", whis=(1, 99), showfliers=True)
    ax.set_yticks(range(1, len(samples) + 1), list(samples), fontsize=8)
    ax.set_xlabel("ms per frame" if results["benchmark"] == "accuracy" else "ms per call (batch 1)")
    ax.grid(axis="x", alpha=0.3)
    what = "during the accuracy pass" if results["benchmark"] == "accuracy" else "batch 1, after warm-up"
    ax.set_title(f"Latency distribution per backend ({what}; whiskers p1–p99)")
    if sweep:
        lines: dict[str, list[tuple[int, float]]] = {}
        for r in results["results"]:
            if "fps" in r:
                lines.setdefault(row_label(r), []).append((r["batch"], r["fps"]))
        for label, points in lines.items():
            axes[1].plot(*zip(*sorted(points)), marker="o", label=label)
        batches = sorted({r["batch"] for r in results["results"] if "fps" in r})
        axes[1].set_xscale("log", base=2)
        axes[1].set_xticks(batches, [str(b) for b in batches])
        axes[1].set_xlabel("batch size")
        axes[1].set_ylabel("frames/s")
        axes[1].legend(fontsize=7)
        axes[1].grid(alpha=0.3)
        axes[1].set_title("Throughput by batch size")
    return _save(fig, axes, path, "Latency")


def draw_figures(results: dict[str, Any], folder: Path) -> dict[str, list[str] | str]:
    """Every figure that fits ``results`` into ``folder``: file name → its panel titles (or why it was not drawn)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return {"figures": f"not drawn: matplotlib is not installed ({exc}); pip install 'ftadapt[train]'"}
    drawn: dict[str, list[str] | str] = {}
    if results["benchmark"] == "accuracy" and any(r["status"] == "ran" for r in results["backends"].values()):
        drawn[PER_CLASS_FILE] = per_class_figure(results, folder / PER_CLASS_FILE)
    if latency_samples(results):
        drawn[LATENCY_FILE] = latency_figure(results, folder / LATENCY_FILE)
    return drawn


__all__ = ["draw_figures", "per_class_figure", "latency_figure", "latency_samples", "PER_CLASS_FILE", "LATENCY_FILE"]
