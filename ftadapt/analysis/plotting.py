"""What every figure shares: a matplotlib Figure without pyplot (no global state, no GUI backend), class colours
from the Cityscapes palette, a class legend, and figures written atomically in the format their suffix names."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftadapt.errors import UsageError
from ftadapt.fsutil import atomic_path
from ftadapt.labels import CLASS_NAMES, PALETTE

DPI = 100
# The suffixes a figure may have → the format written. Raster formats without a small size limit (WebP stops at
# 16383 pixels a side, GIF keeps 256 colours) and matplotlib's own vector formats.
FIGURE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".pdf": "pdf",
                  ".svg": "svg"}
JPEG_QUALITY = 92  # Pillow's default, 75, smears the thin class boundaries of a prediction grid


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


def figure_format(path: str | os.PathLike, *, what: str = "figure") -> str:
    """The format a figure at ``path`` is written in, named by its suffix (case aside); a UsageError listing the
    supported suffixes for any other, so a command refuses it before any work rather than write PNG bytes into a
    ``.jpg``."""
    suffix = Path(path).suffix.lower()
    if suffix not in FIGURE_FORMATS:
        named = f"suffix {suffix!r}" if suffix else "no suffix"
        raise UsageError(f"{what} {path}: {named}; a figure is written in the format its suffix names, one of "
                         f"{', '.join(FIGURE_FORMATS)}")
    return FIGURE_FORMATS[suffix]


def save_figure(fig, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``fig`` to ``path`` in the format its suffix names (:func:`figure_format`), atomically (a whole file or
    none; an existing file only with ``overwrite``)."""
    path = Path(path)
    fmt = figure_format(path)
    options = {"pil_kwargs": {"quality": JPEG_QUALITY}} if fmt == "jpeg" else {}
    with atomic_path(path, suffix=path.suffix, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format=fmt, dpi=DPI, **options)
    return path


# The figures of fixed ``.png`` names (feature plots, training curves) call it by this name.
save_png = save_figure


__all__ = ["new_figure", "class_colour", "class_handles", "figure_format", "save_figure", "save_png", "DPI",
           "FIGURE_FORMATS"]
