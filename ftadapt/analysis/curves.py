"""Training curves from run logs (``RUN/metrics.jsonl``): every loss term a run logged and the mean layer4 feature
norm per domain over the steps, one panel per quantity, one colour per run.

A quantity's source and target terms share a panel (``loss/norm_src`` solid, ``loss/norm_tgt`` dashed, likewise
``loss/d_src``/``loss/d_tgt`` and ``feat_norm/src``/``feat_norm/tgt``); every other ``loss/*`` key gets its own. The
feature-norm loss is tiny (λ_norm = 1.5e-4) and spans decades, so its panel is drawn on a log scale.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ftadapt.analysis.plotting import new_figure

TITLES = {"loss/seg": "segmentation loss", "loss/norm": "feature-norm loss (λ-weighted)",
          "loss/adv": "adversarial loss (G)", "loss/d": "discriminator loss", "loss/weight": "weight discrepancy",
          "feat_norm": "mean L2 norm of the layer4 features"}
LOG_SCALE = {"loss/norm"}
SUFFIXES = {"_src": "source", "_tgt": "target", "/src": "source", "/tgt": "target"}
MAX_COLUMNS = 3


def read_curves(run_dir: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """key → (steps, values) of every finite number a run logged under ``loss/*`` and ``feat_norm/*``."""
    from ftadapt.run_folder import read_metrics

    curves: dict[str, tuple[list[int], list[float]]] = {}
    for record in read_metrics(run_dir):
        for key, value in record.items():
            if key.startswith(("loss/", "feat_norm/")) and isinstance(value, (int, float)) and math.isfinite(value):
                steps, values = curves.setdefault(key, ([], []))
                steps.append(int(record["step"]))
                values.append(float(value))
    return curves


def panel_of(key: str) -> tuple[str, str | None]:
    """(panel, domain or None) of a logged key: ``loss/norm_src`` → ("loss/norm", "source")."""
    for suffix, domain in SUFFIXES.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], domain
    return key, None


def panels_of(runs: Mapping[str, Mapping[str, tuple[Sequence[int], Sequence[float]]]]) -> list[str]:
    """The panels the runs' keys fill, in a fixed order: the known ones first, then the rest by name."""
    found = {panel_of(key)[0] for curves in runs.values() for key in curves}
    return [p for p in TITLES if p in found] + sorted(found - TITLES.keys())


def curves_figure(runs: Mapping[str, Mapping[str, tuple[Sequence[int], Sequence[float]]]], *, title: str = ""):
    """One panel per quantity the runs logged (``panels_of``), each run in its own colour, target terms dashed.
    Returns the matplotlib Figure (None when no run logged anything)."""
    panels = panels_of(runs)
    if not panels:
        return None
    cols = min(len(panels), MAX_COLUMNS)
    fig, axes = new_figure(math.ceil(len(panels) / cols), cols, panel=(4.4, 3.0))
    colours = {name: f"C{i}" for i, name in enumerate(runs)}
    for ax, panel in zip(axes.flat, panels):
        for name, curves in runs.items():
            for key, (steps, values) in curves.items():
                where, domain = panel_of(key)
                if where != panel:
                    continue
                label = name if domain in (None, "source") else None
                ax.plot(steps, values, color=colours[name], linestyle="--" if domain == "target" else "-",
                        linewidth=1.3, label=label)
        ax.set_title(TITLES.get(panel, panel) + _domain_note(runs, panel), fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        if panel in LOG_SCALE:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _domain_note(runs: Mapping[str, Mapping[str, object]], panel: str) -> str:
    domains = {panel_of(k)[1] for curves in runs.values() for k in curves if panel_of(k)[0] == panel}
    return "\n(solid source, dashed target)" if "target" in domains else ""


__all__ = ["read_curves", "curves_figure", "panels_of", "panel_of", "TITLES"]
