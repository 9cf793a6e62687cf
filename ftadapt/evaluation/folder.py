"""A folder of trainId prediction PNGs as a predictor (numpy + Pillow; what ``ftadapt eval --pred-dir`` scores).

Predictions are matched to ground truth by Cityscapes frame id (``<city>_<seq>_<frame>`` anywhere in the file name),
so AdaptSegNet's ``<frame>_leftImg8bit.png`` outputs, city sub-folders and MaxSquare-style ``val_<frame>`` names all
work; ``*_color.png`` overlays are skipped. Each PNG is read and counted in the decoding threads.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ftadapt.errors import DatasetError
from ftadapt.evaluation.evaluate import Predictor, evaluate
from ftadapt.evaluation.frames import FRAME_ID, LabelledSplit, Sample, listing
from ftadapt.evaluation.metrics import EvalResult
from ftadapt.evaluation.protocols import Protocol
from ftadapt.fsutil import check_new_files
from ftadapt.imageio import read_label, write_png
from ftadapt.labels import palette_array


def index_predictions(pred_dir: str | os.PathLike) -> dict[str, Path]:
    """Frame id → prediction PNG for every ``*.png`` under ``pred_dir`` (recursive) except ``*_color.png``.

    Files without a frame id are ignored; two files for one frame id are an error.
    """
    pred_dir = Path(pred_dir)
    found: dict[str, Path] = {}
    n_png = 0
    for path in sorted(pred_dir.rglob("*.png")):
        if path.name.endswith("_color.png"):
            continue
        n_png += 1
        match = FRAME_ID.search(path.name)
        if match is None:
            continue
        frame = match.group(0)
        if frame in found:
            raise DatasetError(f"two predictions for frame {frame}: {found[frame]} and {path}; keep one of them")
        found[frame] = path
    if not found:
        raise DatasetError(f"{pred_dir}: no prediction PNGs named by a Cityscapes frame id (<city>_<seq>_<frame>, "
                           f"e.g. frankfurt_000000_000294_leftImg8bit.png) — {n_png} other PNG(s) seen")
    return found


class PredictionFolder(Predictor):
    """The trainId PNGs under ``folder``, one per frame id (see ``index_predictions``)."""

    needs_image = False
    in_worker = True
    reports_matching = True

    def __init__(self, folder: str | os.PathLike, *, name: str = "predictions") -> None:
        self.folder = Path(folder)
        self.name = name
        self.files = index_predictions(self.folder)

    def check(self, split: LabelledSplit) -> None:
        if not set(split.names) & self.files.keys():
            extra = listing(sorted(self.files), "prediction frame ids without ground truth")
            raise DatasetError(f"no prediction in {self.folder} matches a ground-truth frame in {split.where}: {extra}")

    def prepare(self, sample: Sample, protocol: Protocol) -> np.ndarray | None:
        path = self.files.get(sample.name)
        return None if path is None else read_label(path)

    def predict(self, sample: Sample, prepared: Any) -> np.ndarray | None:
        return prepared

    def unmatched(self, frame_names: Sequence[str]) -> list[str]:
        return sorted(self.files.keys() - set(frame_names))

    def describe(self) -> dict[str, Any]:
        return {"predictions": "trainId PNGs", "folder": str(self.folder), "heads": None, "flip": None}


class SavingPredictions(Predictor):
    """``inner`` unchanged, writing each prediction to ``folder`` as ``<frame>.png`` (trainIds) and
    ``<frame>_color.png`` (Cityscapes palette) on the way: a folder ``PredictionFolder`` reads back. Before the pass
    the files of the split's frames must not exist, unless ``overwrite``."""

    def __init__(self, inner: Predictor, folder: str | os.PathLike, *, overwrite: bool = False) -> None:
        self.inner, self.folder, self.overwrite = inner, Path(folder), overwrite
        self.name, self.needs_image, self.in_worker = inner.name, inner.needs_image, inner.in_worker
        self.reports_matching = inner.reports_matching

    def _files(self, frame: str) -> tuple[Path, Path]:
        return self.folder / f"{frame}.png", self.folder / f"{frame}_color.png"

    def check(self, split: LabelledSplit) -> None:
        self.inner.check(split)
        check_new_files([f for name in split.names for f in self._files(name)], overwrite=self.overwrite,
                        what="--save-pred")

    def prepare(self, sample: Sample, protocol: Protocol) -> Any:
        return self.inner.prepare(sample, protocol)

    def predict(self, sample: Sample, prepared: Any) -> np.ndarray | None:
        pred = self.inner.predict(sample, prepared)
        if pred is not None:
            pred = np.asarray(pred).astype(np.uint8)
            labels, colours = self._files(sample.name)
            write_png(labels, pred, overwrite=self.overwrite)
            write_png(colours, pred, palette=palette_array(), overwrite=self.overwrite)
        return pred

    def unmatched(self, frame_names: Sequence[str]) -> list[str]:
        return self.inner.unmatched(frame_names)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


def evaluate_pred_dir(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, **options: Any) -> EvalResult:
    """The result of the trainId PNGs in ``pred_dir`` against the ``gtFine/<split>`` folder ``gt_dir`` (AdaptSegNet
    protocol); ``options`` as ``evaluate`` takes them (``allow_missing``, ``workers``, ``synthia_subsets``, …)."""
    folder = PredictionFolder(pred_dir)
    return evaluate([folder], LabelledSplit.from_gt_dir(gt_dir), **options)[folder.name]


__all__ = ["PredictionFolder", "SavingPredictions", "evaluate_pred_dir", "index_predictions"]
