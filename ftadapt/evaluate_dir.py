"""Evaluate a folder of trainId prediction PNGs against the Cityscapes gtFine labelIds of one split.

Predictions are matched to ground truth by Cityscapes frame id (``<city>_<seq>_<frame>`` anywhere in the file name),
so AdaptSegNet's ``<frame>_leftImg8bit.png`` outputs, city sub-folders and MaxSquare-style ``val_<frame>`` names all
work. Pairs are decoded and counted in a thread pool (Pillow's PNG inflate and numpy's large-array loops release the
GIL); each worker returns a small confusion matrix and the main thread merges them.
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ftadapt.errors import DatasetError, FtadaptError
from ftadapt.evaluate import ConfusionMatrix, EvalResult, adaptsegnet_protocol
from ftadapt.imageio import read_label
from ftadapt.labels import CITYSCAPES_LUT

FRAME_ID = re.compile(r"[a-z]+_\d{6}_\d{6}")
GT_SUFFIX = "_gtFine_labelIds.png"
_SPLITS = ("train", "val", "test")
_SHOWN = 5
# The table of labels.cityscapes_to_trainid, applied with Pillow's point(): 5× faster than numpy fancy indexing.
_LUT_LIST = CITYSCAPES_LUT.tolist()


@dataclass(frozen=True)
class FramePairs:
    """Predictions and ground truth matched by frame id; the unmatched ids on either side, sorted."""

    pairs: dict[str, tuple[Path, Path]]
    missing_predictions: list[str]
    missing_ground_truth: list[str]


def labelids_to_trainids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids → trainIds (255 = ignore), same table as ``labels.cityscapes_to_trainid``.

    Shape: (H, W) uint8 → (H, W) uint8.
    """
    return np.asarray(Image.fromarray(label_ids).point(_LUT_LIST))


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


def index_ground_truth(gt_dir: str | os.PathLike) -> dict[str, Path]:
    """Frame id → ``<city>/<frame>_gtFine_labelIds.png`` under ``gt_dir`` (the ``gtFine/<split>`` folder).

    If ``gt_dir`` is the Cityscapes root, the ``gtFine`` folder or a city folder, the error says what to pass.
    """
    gt_dir = Path(gt_dir)
    found = {p.name[: -len(GT_SUFFIX)]: p for p in sorted(gt_dir.glob(f"*/*{GT_SUFFIX}"))}
    if found:
        return found
    if (gt_dir / "gtFine").is_dir():
        hint = f"it looks like the Cityscapes root: pass {gt_dir / 'gtFine' / 'val'} (or another split)"
    elif any(next((gt_dir / s).glob(f"*/*{GT_SUFFIX}"), None) for s in _SPLITS):
        hint = f"it looks like the gtFine folder: pass {gt_dir / 'val'} (or another split)"
    elif next(gt_dir.glob(f"*{GT_SUFFIX}"), None):
        hint = f"it looks like one city folder: pass its parent {gt_dir.parent}"
    else:
        hint = "pass the gtFine/<split> folder of Cityscapes (e.g. Cityscapes/gtFine/val)"
    raise DatasetError(f"{gt_dir}: no <city>/<frame>{GT_SUFFIX} files; {hint}")


def match_frames(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike) -> FramePairs:
    """Match prediction PNGs to ground-truth files by frame id."""
    preds, gts = index_predictions(pred_dir), index_ground_truth(gt_dir)
    pairs = {f: (preds[f], gts[f]) for f in sorted(gts.keys() & preds.keys())}
    return FramePairs(pairs, sorted(gts.keys() - preds.keys()), sorted(preds.keys() - gts.keys()))


def _count_pair(pred_path: Path, gt_path: Path) -> ConfusionMatrix | tuple[tuple[int, ...], tuple[int, ...]]:
    """One pair's confusion matrix, or (prediction shape, gt shape) when the sizes differ."""
    pred = read_label(pred_path)
    gt_ids = read_label(gt_path)
    if pred.shape != gt_ids.shape:
        return pred.shape, gt_ids.shape
    confusion = ConfusionMatrix()
    confusion.update(labelids_to_trainids(gt_ids), pred, name=str(pred_path))
    return confusion


def describe(names: list[str], what: str, shown: int = _SHOWN) -> str:
    """'N <what>: a, b, c, … (+k more)' for a problem report."""
    more = f", … (+{len(names) - shown} more)" if len(names) > shown else ""
    return f"{len(names)} {what}: {', '.join(names[:shown])}{more}"


def default_workers() -> int:
    """The number of CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def problem_report(missing: dict[str, list[str]], mismatched: dict[str, str] | None = None) -> list[str]:
    """Human lines for the non-empty ``missing`` lists (``mismatched`` adds the sizes of the first few)."""
    lines = []
    if missing["predictions"]:
        lines.append(describe(missing["predictions"], "ground-truth frame(s) without a prediction"))
    if missing["ground_truth"]:
        lines.append(describe(missing["ground_truth"], "prediction(s) without a ground-truth frame"))
    if missing["size_mismatch"]:
        names = missing["size_mismatch"]
        if mismatched:
            names = [f"{n} ({mismatched[n]})" if n in mismatched else n for n in names]
        lines.append(describe(names, "pair(s) whose prediction and ground-truth sizes differ"))
    return lines


def evaluate_pred_dir(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, *, allow_missing: bool = False,
                      workers: int | None = None, synthia_subsets: bool = False,
                      progress: bool = True) -> EvalResult:
    """mIoU of the trainId PNGs in ``pred_dir`` against the gtFine labelIds in ``gt_dir`` (AdaptSegNet protocol).

    Frames missing on either side and pairs whose sizes differ are skipped and listed in ``result.missing``; unless
    ``allow_missing``, any of them makes this raise ``FtadaptError`` (after the pass, so the report is complete).
    """
    from tqdm import tqdm

    frames = match_frames(pred_dir, gt_dir)
    if not frames.pairs:
        raise DatasetError(f"no prediction in {pred_dir} matches a ground-truth frame in {gt_dir}: "
                           f"{describe(frames.missing_ground_truth, 'prediction frame ids without ground truth')}")
    confusion = ConfusionMatrix()
    mismatched: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        futures = {pool.submit(_count_pair, *paths): frame for frame, paths in frames.pairs.items()}
        try:
            with tqdm(total=len(futures), desc="eval", unit="img", disable=not progress) as bar:
                for future in as_completed(futures):
                    counted = future.result()
                    if isinstance(counted, ConfusionMatrix):
                        confusion.merge(counted)
                    else:
                        (ph, pw), (gh, gw) = counted
                        mismatched[futures[future]] = f"prediction {pw}x{ph}, ground truth {gw}x{gh}"
                    bar.update()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    missing = {"predictions": frames.missing_predictions, "ground_truth": frames.missing_ground_truth,
               "size_mismatch": sorted(mismatched)}
    problems = problem_report(missing, mismatched)
    n_images = len(frames.pairs) - len(mismatched)
    if problems and not allow_missing:
        raise FtadaptError("; ".join(problems) + ". Fix the folders, or pass --allow-missing to evaluate the "
                           "matched frames only")
    if n_images == 0:
        raise FtadaptError("; ".join(problems) + ". No pair is left to evaluate")
    protocol = adaptsegnet_protocol(predictions="trainId PNGs", head_rule=None, flip=None)
    return EvalResult.from_confusion(confusion, n_images=n_images, protocol=protocol,
                                     synthia_subsets=synthia_subsets, missing=missing)
