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

With ``reference`` (the name of one predictor), every other predictor's labels are also compared with the reference's
labels on each frame, pixel by pixel over the whole frame (``result.agreement``): how many pixels differ, and on which
frame the most. Scores alone cannot show this — two predictors can differ on many pixels and still have the same mIoU.
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

    def close(self) -> None:
        """Release what the predictor holds (a runtime session); nothing by default."""


def require_full_resolution(protocol: Protocol, name: str) -> None:
    """UsageError unless ``protocol`` scores at the ground truth's own resolution: predictors that are fed the frame
    as it is (an exported graph and its PyTorch module) predict at the frame's resolution."""
    if protocol.gt_resolution != "full":
        raise UsageError(f"{name}: an exported graph predicts at the frame's resolution; score it with the "
                         f"adaptsegnet protocol, not {protocol.name}")


class Agreement:
    """Pixel-by-pixel agreement of one predictor's labels with the reference predictor's, over a pass."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.pixels = self.differing = self.frames = 0
        self.worst: tuple[str, float] | None = None

    def add(self, name: str, pred: np.ndarray, ref: np.ndarray) -> None:
        """Count one frame. Shape: pred and ref (H, W) integer labels of the same shape."""
        differing = int(np.count_nonzero(np.asarray(pred) != np.asarray(ref)))
        self.pixels += pred.size
        self.differing += differing
        self.frames += 1
        share = differing / max(pred.size, 1)
        if self.worst is None or share > self.worst[1]:
            self.worst = (name, share)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: shares in percent of the compared pixels (null when no frame was compared)."""
        share = 100.0 * self.differing / self.pixels if self.pixels else None
        worst = {"frame": self.worst[0], "differing_percent": 100.0 * self.worst[1]} if self.worst else None
        return {"reference": self.reference, "frames": self.frames, "pixels": self.pixels,
                "differing_pixels": self.differing, "differing_percent": share, "worst_frame": worst}


class _Tally:
    """One predictor's confusion matrix, problems and (with a reference) agreement over a pass."""

    def __init__(self, reference: str | None = None) -> None:
        self.confusion = ConfusionMatrix()
        self.counted = 0
        self.missing: list[str] = []
        self.mismatched: dict[str, str] = {}
        self.agreement = Agreement(reference) if reference is not None else None

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


def _predicted(p: Predictor, sample: Sample, prepared: Any, keep: bool) -> tuple[Any, np.ndarray | None]:
    """(the frame's outcome for ``_Tally.add``, the prediction itself when ``keep`` — for the reference comparison)."""
    pred = p.predict(sample, prepared)
    return _score(sample, pred, _what(p, sample)), (np.asarray(pred) if keep and pred is not None else None)


def _compare(sample: Sample, tallies: Sequence[_Tally], preds: Sequence[np.ndarray | None], ref: int) -> None:
    """Add the frame to every non-reference tally's agreement (frames without both predictions, or of another size,
    are left out: they are already reported as missing or mismatched)."""
    reference = preds[ref]
    for i, (tally, pred) in enumerate(zip(tallies, preds)):
        if i != ref and pred is not None and reference is not None and pred.shape == reference.shape:
            tally.agreement.add(sample.name, pred, reference)


def evaluate(predictors: Sequence[Predictor], split: LabelledSplit, protocol: Protocol = ADAPTSEGNET, *,
             workers: int | None = None, allow_missing: bool = False, synthia_subsets: bool = False,
             progress: bool = True, reference: str | None = None) -> dict[str, EvalResult]:
    """Score every predictor on every frame of ``split`` under ``protocol``; results by predictor name, in order.
    With ``reference`` (a predictor's name) every other result also carries its ``agreement`` with that predictor.

    Raises FtadaptError after the pass when a predictor misses frames or mismatches sizes (unless ``allow_missing``)
    and when a predictor has no frame left to score.
    """
    names = [p.name for p in predictors]
    if not predictors or len(set(names)) != len(names):
        raise UsageError(f"evaluate needs at least one predictor, each with its own name; got {names}")
    if reference is not None and reference not in names:
        raise UsageError(f"reference {reference!r} names no predictor; predictors: {', '.join(names)}")
    with_image = any(p.needs_image for p in predictors)
    if with_image:
        split.require_images()
    for p in predictors:
        p.check(split)
    tallies = [_Tally(reference if p.name != reference else None) for p in predictors]
    keep = reference is not None

    def load(frame) -> tuple[Sample, list[Any]]:
        sample = decode(frame, protocol, with_image=with_image)
        out = []
        for p in predictors:
            if p.needs_image and sample.mismatch:
                out.append((("size", sample.mismatch), None))
                continue
            prepared = p.prepare(sample, protocol)
            out.append(_predicted(p, sample, prepared, keep) if p.in_worker else prepared)
        return sample, out

    for sample, prepared in _decoded(load, split.frames, workers or default_workers(), progress):
        outcomes = [item if p.in_worker or (p.needs_image and sample.mismatch) else _predicted(p, sample, item, keep)
                    for p, item in zip(predictors, prepared)]
        for tally, (outcome, _) in zip(tallies, outcomes):
            tally.add(outcome, sample.name)
        if keep:
            _compare(sample, tallies, [pred for _, pred in outcomes], names.index(reference))
    options = {"allow_missing": allow_missing, "synthia_subsets": synthia_subsets, "named": len(predictors) > 1}
    return {p.name: _result(p, tally, split, protocol, **options) for p, tally in zip(predictors, tallies)}


def _decoded(load: Callable[[Any], Any], frames: Sequence[Any], workers: int, progress: bool) -> Iterator[Any]:
    """``load(frame)`` for every frame, in order, computed ``2 × workers`` frames ahead in a thread pool."""
    from tqdm import tqdm

    pool = ThreadPoolExecutor(max_workers=workers)
    pending: deque[Future] = deque()
    ahead: Iterable[Any] = iter(frames)
    try:
        with tqdm(total=len(frames), desc="eval", unit="frame", disable=not progress) as bar:
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
    agreement = tally.agreement.to_dict() if tally.agreement is not None else None
    return EvalResult.from_confusion(tally.confusion, n_images=tally.counted,
                                     protocol=protocol.describe(**predictor.describe(), **split_record),
                                     synthia_subsets=synthia_subsets, missing=record, agreement=agreement)


__all__ = ["Predictor", "Agreement", "evaluate", "problem_report", "require_full_resolution"]
