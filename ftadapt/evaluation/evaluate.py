"""One evaluation for every kind of predictor: ``evaluate(predictors, split, protocol)``.

Each frame of the split is decoded once (in a thread pool: Pillow and numpy release the GIL) and every predictor is
scored on it, so "the members beside their ensemble" and "the deployed graph beside PyTorch" are one pass and one
code path. A predictor is anything with the small interface of :class:`Predictor`:

- ``prepare(sample, protocol)`` runs in a decoding thread (file reads, the resized model input);
- ``predict(sample, prepared)`` returns the trainIds at the sample's label resolution (or None: no prediction for
  this frame). It runs in the calling thread unless the predictor sets ``in_worker`` (cheap, thread-safe ones such
  as a folder of PNGs, whose pairs are then counted in the pool as well).

Problems (frames without a prediction, predictions of another size, predictions of frames the split lacks, and — for
predictors that read the image — frames whose image and label differ in size) are collected per predictor over the
whole pass, listed in ``result.missing``, and — unless ``allow_missing`` — raised afterwards, so the report is
complete; with ``allow_missing`` those frames are left out of the scores.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ftadapt.errors import FtadaptError, UsageError
from ftadapt.evaluation.frames import LabelledSplit, Sample, decode, default_workers, listing
from ftadapt.evaluation.metrics import ConfusionMatrix, EvalResult
from ftadapt.evaluation.protocols import ADAPTSEGNET, Protocol


class Predictor:
    """The interface ``evaluate`` scores (subclass it). ``name`` labels the result; ``needs_image`` says whether the
    frames' pixels must be decoded; ``reports_matching`` adds the frame-matching record (``missing``) to the result
    even when nothing is missing (prediction folders)."""

    name: str = "predictor"
    needs_image: bool = True
    in_worker: bool = False
    reports_matching: bool = False

    def prepare(self, sample: Sample, protocol: Protocol) -> Any:
        """Work for a decoding thread; its return value is handed to ``predict``."""
        return None

    def predict(self, sample: Sample, prepared: Any) -> np.ndarray | None:
        """Shape: → (H, W) integer trainIds with (H, W) = ``sample.label.shape``; None when there is none."""
        raise NotImplementedError

    def check(self, split: LabelledSplit) -> None:
        """Refuse, before the pass, a split this predictor cannot be scored on (e.g. no frame in common)."""

    def unmatched(self, frame_names: Sequence[str]) -> list[str]:
        """What this predictor predicted for frames the split does not have (sorted)."""
        return []

    def describe(self) -> dict[str, Any]:
        """What this predictor adds to its result's ``protocol`` record (head rule, flip, checkpoint, …)."""
        return {}


class _Tally:
    """One predictor's confusion matrix and problems over a pass."""

    def __init__(self) -> None:
        self.confusion = ConfusionMatrix()
        self.counted = 0
        self.missing: list[str] = []
        self.mismatched: dict[str, str] = {}

    def add(self, outcome: ConfusionMatrix | str | tuple[str, str], name: str) -> None:
        if isinstance(outcome, ConfusionMatrix):
            self.confusion.merge(outcome)
            self.counted += 1
        elif outcome == "missing":
            self.missing.append(name)
        else:
            self.mismatched[name] = outcome[1]


def _what(predictor: Predictor, sample: Sample) -> str:
    return f"{predictor.name}, frame {sample.name}"


def _score(sample: Sample, pred: np.ndarray | None, what: str) -> ConfusionMatrix | str | tuple[str, str]:
    """A frame's confusion matrix, "missing" without a prediction, or ("size", sizes) for a size mismatch."""
    if pred is None:
        return "missing"
    pred = np.asarray(pred)
    if pred.shape != sample.label.shape:
        (ph, pw), (gh, gw) = pred.shape[:2], sample.label.shape
        return "size", f"prediction {pw}x{ph}, ground truth {gw}x{gh}"
    confusion = ConfusionMatrix()
    confusion.update(sample.label, pred, name=what)
    return confusion


def evaluate(predictors: Sequence[Predictor], split: LabelledSplit, protocol: Protocol = ADAPTSEGNET, *,
             workers: int | None = None, allow_missing: bool = False, synthia_subsets: bool = False,
             progress: bool = True) -> dict[str, EvalResult]:
    """Score every predictor on every frame of ``split`` under ``protocol``; results by predictor name, in order.

    Raises FtadaptError after the pass when a predictor misses frames or mismatches sizes (unless ``allow_missing``)
    and when a predictor has no frame left to score.
    """
    names = [p.name for p in predictors]
    if not predictors or len(set(names)) != len(names):
        raise UsageError(f"evaluate needs at least one predictor, each with its own name; got {names}")
    with_image = any(p.needs_image for p in predictors)
    if with_image:
        split.require_images()
    for p in predictors:
        p.check(split)
    tallies = [_Tally() for _ in predictors]

    def load(frame) -> tuple[Sample, list[Any]]:
        sample = decode(frame, protocol, with_image=with_image)
        out = []
        for p in predictors:
            if p.needs_image and sample.mismatch:
                out.append(("size", sample.mismatch))
                continue
            prepared = p.prepare(sample, protocol)
            out.append(_score(sample, p.predict(sample, prepared), _what(p, sample)) if p.in_worker else prepared)
        return sample, out

    for sample, prepared in _decoded(load, split.frames, workers or default_workers(), progress):
        for p, tally, item in zip(predictors, tallies, prepared):
            done = p.in_worker or (p.needs_image and sample.mismatch)
            tally.add(item if done else _score(sample, p.predict(sample, item), _what(p, sample)), sample.name)
    options = {"allow_missing": allow_missing, "synthia_subsets": synthia_subsets, "named": len(predictors) > 1}
    return {p.name: _result(p, tally, split, protocol, **options) for p, tally in zip(predictors, tallies)}


def _decoded(load: Callable[[Any], Any], frames: Sequence[Any], workers: int, progress: bool) -> Iterator[Any]:
    """``load(frame)`` for every frame, in order, computed ``2 × workers`` frames ahead in a thread pool."""
    from tqdm import tqdm

    pool = ThreadPoolExecutor(max_workers=workers)
    pending: deque[Future] = deque()
    ahead: Iterable[Any] = iter(frames)
    try:
        with tqdm(total=len(frames), desc="eval", unit="img", disable=not progress) as bar:
            for frame in ahead:
                pending.append(pool.submit(load, frame))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
                    bar.update()
            while pending:
                yield pending.popleft().result()
                bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def problem_report(missing: dict[str, list[str]], mismatched: dict[str, str] | None = None) -> list[str]:
    """Human lines for the non-empty ``missing`` lists (``mismatched`` adds the sizes of the first few)."""
    lines = []
    if missing.get("predictions"):
        lines.append(listing(missing["predictions"], "ground-truth frame(s) without a prediction"))
    if missing.get("ground_truth"):
        lines.append(listing(missing["ground_truth"], "prediction(s) without a ground-truth frame"))
    if missing.get("size_mismatch"):
        names = missing["size_mismatch"]
        if mismatched:
            names = [f"{n} ({mismatched[n]})" if n in mismatched else n for n in names]
        lines.append(listing(names, "frame(s) whose prediction or image differs in size from the ground truth"))
    return lines


def _result(predictor: Predictor, tally: _Tally, split: LabelledSplit, protocol: Protocol, *, allow_missing: bool,
            synthia_subsets: bool, named: bool) -> EvalResult:
    missing = {"predictions": sorted(tally.missing), "ground_truth": predictor.unmatched(split.names),
               "size_mismatch": sorted(tally.mismatched)}
    problems = problem_report(missing, tally.mismatched)
    whose = f"{predictor.name}: " if named else ""
    if tally.counted == 0:
        raise FtadaptError(whose + "; ".join(problems or [f"{split.where} has no frame"]) + ". No pair is left to "
                           "evaluate")
    if problems and not allow_missing:
        raise FtadaptError(whose + "; ".join(problems) + ". Fix the folders, or pass --allow-missing to evaluate "
                           "the matched frames only")
    record = missing if problems or predictor.reports_matching else None
    split_record = {"split": split.split} if split.split else {}
    return EvalResult.from_confusion(tally.confusion, n_images=tally.counted,
                                     protocol=protocol.describe(**predictor.describe(), **split_record),
                                     synthia_subsets=synthia_subsets, missing=record)


__all__ = ["Predictor", "evaluate", "problem_report"]
