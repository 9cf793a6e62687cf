"""Prediction grids (the paper's Figures 4 and 5): for chosen target frames, the image, the ground truth and the
colourised predictions of several predictors side by side, each titled with its per-frame mIoU; optionally an error
map after each prediction (wrong pixels red over the darkened image, ignore pixels grey).

Predictions come from the evaluation package's predictors (``ftadapt.evaluation``: checkpoints, ensembles, exported
files through the runtime, prediction PNGs), decoded and scored exactly as ``ftadapt eval`` scores them, so a grid's
per-frame numbers are that frame's share of the evaluation.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ftadapt.errors import UsageError
from ftadapt.evaluation.evaluate import Predictor
from ftadapt.evaluation.frames import LabelledSplit, decode, listing
from ftadapt.evaluation.metrics import ConfusionMatrix
from ftadapt.evaluation.protocols import Protocol
from ftadapt.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, colorize

WRONG, IGNORED = (255, 40, 40), (128, 128, 128)
DIM = 0.4  # correct pixels of an error map: the image's luminance × DIM
DEFAULT_FRAMES, DEFAULT_TILE_WIDTH = 4, 480


@dataclass
class GridRow:
    """One frame of a grid: its id, the RGB image and trainId ground truth at the label resolution, and per predictor
    its prediction (None: it has none for this frame) and per-frame mIoU in percent (None without prediction or
    without any class present)."""

    name: str
    rgb: np.ndarray
    label: np.ndarray
    predictions: dict[str, np.ndarray | None] = field(default_factory=dict)
    miou: dict[str, float | None] = field(default_factory=dict)


def pick_frames(split: LabelledSplit, wanted: Sequence[str] = (), count: int = DEFAULT_FRAMES) -> LabelledSplit:
    """The frames to show: those named in ``wanted`` (frame ids, or any part of one that matches exactly one frame),
    in that order; else ``count`` frames spread evenly over the split (first and last included)."""
    frames = split.frames
    if not frames:
        raise UsageError(f"{split.where} has no frame to show")
    if wanted:
        chosen = []
        for item in wanted:
            hits = [f for f in frames if f.name == item] or [f for f in frames if item in f.name]
            if len(hits) != 1:
                what = "matches no frame" if not hits else f"matches {len(hits)} frames"
                raise UsageError(f"--frame {item!r} {what} of {split.where}; "
                                 + listing([f.name for f in (hits or frames)], "frame(s)"))
            chosen.append(hits[0])
    else:
        if count < 1:
            raise UsageError(f"--frames must be at least 1, got {count}")
        picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
        chosen = [frames[i] for i in dict.fromkeys(picks.tolist())]
    return LabelledSplit(tuple(chosen), split.where, split.split)


def frame_miou(label: np.ndarray, pred: np.ndarray) -> float | None:
    """mIoU of one frame in percent, over the classes present in its ground truth or prediction (the evaluation's
    rule applied to one frame); None when no class is present."""
    confusion = ConfusionMatrix()
    confusion.update(label, pred)
    value = confusion.miou()
    return None if np.isnan(value) else 100.0 * value


def predict_rows(predictors: Sequence[Predictor], split: LabelledSplit, protocol: Protocol, *,
                 progress: bool = True) -> list[GridRow]:
    """Decode every frame of ``split`` once and run every predictor on it, as ``evaluate`` does."""
    from tqdm import tqdm

    split.require_images()
    for p in predictors:
        p.check(split)
    rows = []
    for frame in tqdm(split.frames, desc="predict", unit="img", disable=not progress):
        sample = decode(frame, protocol, with_image=True)
        row = GridRow(sample.name, np.asarray(sample.rgb), sample.label)
        for p in predictors:
            pred = p.predict(sample, p.prepare(sample, protocol))
            if pred is not None and np.asarray(pred).shape != sample.label.shape:
                raise UsageError(f"{p.name}: prediction of {sample.name} is {np.asarray(pred).shape[::-1]} (W, H), "
                                 f"its ground truth {sample.label.shape[::-1]}")
            row.predictions[p.name] = None if pred is None else np.asarray(pred).astype(np.uint8)
            row.miou[p.name] = None if pred is None else frame_miou(sample.label, row.predictions[p.name])
        rows.append(row)
    return rows


def error_map(rgb: np.ndarray, label: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Wrong pixels red, ignore pixels grey, correct pixels the darkened grey image.

    Shape: rgb (H, W, 3) uint8, label and pred (H, W) trainIds → (H, W, 3) uint8.
    """
    if rgb.shape[:2] != label.shape:  # the image is shown at the label's resolution
        rgb = np.asarray(Image.fromarray(rgb).resize(label.shape[::-1], Image.BILINEAR))
    grey = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) * DIM
    out = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
    ignored = label >= NUM_CLASSES
    out[~ignored & (pred != label)] = WRONG
    out[ignored] = IGNORED
    return out


def wrong_share(label: np.ndarray, pred: np.ndarray) -> float | None:
    """Percent of the valid ground-truth pixels predicted wrong (None without valid pixels)."""
    valid = label < NUM_CLASSES
    return 100.0 * float((pred[valid] != label[valid]).mean()) if valid.any() else None


def _tile(array: np.ndarray, width: int, *, labels: bool) -> np.ndarray:
    """``array`` resized to ``width`` pixels wide: label colours by nearest neighbour, pictures by area average."""
    h, w = array.shape[:2]
    size = (width, max(1, round(h * width / w)))
    return np.asarray(Image.fromarray(array).resize(size, Image.NEAREST if labels else Image.BOX))


def columns_of(predictors: Sequence[str], errors: bool) -> list[tuple[str, str | None]]:
    """The grid's columns as (kind, predictor): image, ground truth, then each prediction (and its error map)."""
    cols: list[tuple[str, str | None]] = [("image", None), ("ground truth", None)]
    for name in predictors:
        cols += [("prediction", name)] + ([("errors", name)] if errors else [])
    return cols


def _tile_for(row: GridRow, kind: str, name: str | None, width: int) -> tuple[np.ndarray | None, str]:
    """One cell's picture (None: no prediction) and its corner note."""
    if kind == "image":
        return _tile(row.rgb, width, labels=False), row.name
    if kind == "ground truth":
        return _tile(colorize(row.label), width, labels=True), ""
    pred = row.predictions[name]
    if pred is None:
        return None, "no prediction"
    if kind == "prediction":
        miou = row.miou[name]
        return _tile(colorize(pred), width, labels=True), "mIoU -" if miou is None else f"mIoU {miou:.1f}"
    share = wrong_share(row.label, pred)
    note = "" if share is None else f"{share:.1f} % wrong"
    return _tile(error_map(row.rgb, row.label, pred), width, labels=False), note


def _panel(tile_width: int, picture: tuple[int, int]) -> tuple[float, float]:
    """One cell's (width, height) in inches: the (W, H) ``picture`` at ``tile_width`` pixels, and room for a title."""
    from ftadapt.analysis.plotting import DPI

    return tile_width / DPI, tile_width * picture[1] / picture[0] / DPI + 0.35


def check_grid_size(split: LabelledSplit, columns: int, tile_width: int) -> tuple[int, int]:
    """The (W, H) in pixels of the grid of ``split``'s frames in ``columns`` columns (from the first label's size,
    read from its header), refused before any prediction when it is larger than the image readers here accept
    (``ftadapt.imageio.pixel_limit``): a grid of all 500 Cityscapes val frames is a 264-Mpx PNG nobody can open."""
    from ftadapt.analysis.plotting import DPI
    from ftadapt.imageio import pixel_limit, verify_image

    panel = _panel(tile_width, verify_image(split.frames[0].label))
    size = round(panel[0] * columns * DPI), round(panel[1] * len(split.frames) * DPI)
    limit = pixel_limit()
    if size[0] * size[1] > limit:
        rows = max(1, int(limit / (size[0] * panel[1] * DPI)))
        raise UsageError(f"a grid of {len(split.frames)} frames × {columns} columns at --tile-width {tile_width} "
                         f"would be {size[0]}×{size[1]} pixels ({size[0] * size[1] / 1e6:.0f} Mpx), more than image "
                         f"readers open ({limit / 1e6:.0f} Mpx); show at most {rows} frames (--frames, --frame) or "
                         "use narrower tiles (--tile-width)")
    return size


def grid_figure(rows: Sequence[GridRow], predictors: Sequence[str], *, errors: bool = False,
                tile_width: int = DEFAULT_TILE_WIDTH, title: str = ""):
    """The grid: one row per frame (its id in the image's corner), the columns of ``columns_of``; a legend of the
    classes in the shown ground truth below. Returns the matplotlib Figure."""
    from matplotlib.patches import Patch

    from ftadapt.analysis.plotting import class_handles, new_figure

    cols = columns_of(predictors, errors)
    h, w = rows[0].label.shape
    fig, axes = new_figure(len(rows), len(cols), panel=_panel(tile_width, (w, h)))
    for r, row in enumerate(rows):
        for c, (kind, name) in enumerate(cols):
            ax = axes[r, c]
            picture, note = _tile_for(row, kind, name, tile_width)
            if picture is not None:
                ax.imshow(picture, interpolation="nearest")
            if note:
                ax.text(0.02, 0.96, note, transform=ax.transAxes, va="top", fontsize=9, color="white",
                        bbox={"facecolor": "black", "alpha": 0.6, "pad": 2, "edgecolor": "none"})
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(kind if name is None else (name if kind == "prediction" else f"errors: {name}"),
                             fontsize=10)
    present = sorted({int(v) for row in rows for v in np.unique(row.label) if v != IGNORE_INDEX and v < NUM_CLASSES})
    handles = [*class_handles(present), Patch(facecolor="black", label="ignored")]
    if errors:
        handles += [Patch(facecolor=np.array(WRONG) / 255, label="wrong (error map)"),
                    Patch(facecolor=np.array(IGNORED) / 255, label="ignored (error map)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 10), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def grid_payload(rows: Sequence[GridRow], predictors: Sequence[str]) -> dict:
    """The numbers a grid shows: per frame and predictor the mIoU and the share of wrong pixels (percent)."""
    return {"frames": [row.name for row in rows], "predictors": list(predictors), "classes": list(CLASS_NAMES),
            "per_frame": {row.name: {p: {"miou": row.miou[p],
                                         "wrong_percent": None if row.predictions[p] is None
                                         else wrong_share(row.label, row.predictions[p])}
                                     for p in predictors} for row in rows}}


def write_grid(predictors: Sequence[Predictor], split: LabelledSplit, protocol: Protocol, path: str | os.PathLike, *,
               errors: bool = False, tile_width: int = DEFAULT_TILE_WIDTH, title: str = "",
               progress: bool = True, overwrite: bool = False) -> dict:
    """Predict every frame of ``split`` with every predictor, draw the grid to ``path`` in the format its suffix names
    (``ftadapt.analysis.plotting.FIGURE_FORMATS``, refused before any prediction; written atomically, an existing file
    only with ``overwrite``) and return its numbers (``grid_payload`` plus the figure's path)."""
    from ftadapt.analysis.plotting import figure_format, save_figure

    figure_format(path)
    names = [p.name for p in predictors]
    check_grid_size(split, len(columns_of(names, errors)), tile_width)
    rows = predict_rows(predictors, split, protocol, progress=progress)
    save_figure(grid_figure(rows, names, errors=errors, tile_width=tile_width, title=title), path, overwrite=overwrite)
    return {**grid_payload(rows, names), "figure": str(path), "errors": errors}


__all__ = ["GridRow", "write_grid", "pick_frames", "check_grid_size", "predict_rows", "frame_miou", "error_map",
           "wrong_share", "columns_of", "grid_figure", "grid_payload", "DEFAULT_FRAMES", "DEFAULT_TILE_WIDTH"]
