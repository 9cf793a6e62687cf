"""What every figure shares: a matplotlib Figure without pyplot (no global state, no GUI backend), class colours
from the Cityscapes palette, a class legend, and PNGs written atomically."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftadapt.fsutil import atomic_path
from ftadapt.labels import CLASS_NAMES, PALETTE

DPI = 100


def new_figure(nrows: int, ncols: int, *, panel: tuple[float, float], **options: Any):
    """A Figure of ``nrows`` × ``ncols`` panels, each ``panel`` = (width, height) inches; ``options`` go to
    ``Figure.subplots`` (sharex, …). Returns (figure, 2-D array of axes)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), dpi=DPI, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **options)


def class_colour(c: int) -> tuple[float, float, float]:
    """Class ``c``'s Cityscapes palette colour as matplotlib RGB in 0–1."""
    return tuple(v / 255 for v in PALETTE[c])


def class_handles(classes: Sequence[int]) -> list:
    """Legend handles: one palette-coloured patch per class, labelled with its name."""
    from matplotlib.patches import Patch

    return [Patch(facecolor=class_colour(c), edgecolor="0.3", label=CLASS_NAMES[c]) for c in classes]


def save_png(fig, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``fig`` to ``path`` as PNG, atomically (a whole file or none; an existing file only with
    ``overwrite``)."""
    path = Path(path)
    with atomic_path(path, suffix=".png", overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


__all__ = ["new_figure", "class_colour", "class_handles", "save_png", "DPI"]
