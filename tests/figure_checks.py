"""Shared by the figure tests: what a saved figure shows, panel by panel."""
from __future__ import annotations

import numpy as np
from PIL import Image


def panels(fig, png) -> list[tuple[str, float]]:
    """(first title line, pixel standard deviation inside the panel) of every axes of ``fig`` that holds data, read
    from the PNG it was saved to: a blank panel has a deviation near 0."""
    image = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    out = []
    for ax in fig.axes:
        if not ax.has_data():
            continue
        box = ax.get_window_extent()
        top, bottom = image.shape[0] - int(box.y1), image.shape[0] - int(box.y0)
        crop = image[top + 2: bottom - 2, int(box.x0) + 2: int(box.x1) - 2]
        out.append((ax.get_title().splitlines()[0] if ax.get_title() else "", float(crop.std())))
    return out
