"""The dataset doctor: is a GTA5 / Cityscapes / SYNTHIA folder usable, and if not, what exactly is wrong?

For every frame it verifies the image file (header + PNG chunk CRCs via ``PIL.Image.verify``, no pixel decode), decodes
the label, and checks pairing, readability, image/label size and label values; it also sums the trainId pixel
histogram. Errors make the set unusable: no images, a list entry without image, a missing label where labels are
needed, an unreadable file, label values outside the known ids, and a Cityscapes label whose size differs from its
image's where labels are needed (evaluation scores predictions at the label's resolution, so the pair cannot be
scored). Warnings do not: image/label size mismatches of GTA5 and SYNTHIA (both are resized to the protocol size on
their own; the real GTA5 has a few), labels without an image, and missing labels in Cityscapes ``train`` (the
unlabeled target of training needs none). A folder that cannot be listed, or a file behind a symbolic-link loop, is
named, never a traceback.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
from PIL import Image
from tqdm import tqdm

from ftadapt.data.base import Frame, SegmentationDataset
from ftadapt.data.cityscapes import Cityscapes
from ftadapt.data.gta5 import GTA5
from ftadapt.data.synthia import SYNTHIA
from ftadapt.errors import DatasetError, UsageError
from ftadapt.imageio import verify_image
from ftadapt.labels import CLASS_NAMES, NUM_CLASSES

DATASETS: dict[str, type[SegmentationDataset]] = {"gta5": GTA5, "cityscapes": Cityscapes, "synthia": SYNTHIA}
ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file (or with the whole split when ``path`` is the folder)."""

    kind: str
    path: str
    detail: str
    severity: str = ERROR


@dataclass
class SplitReport:
    """Findings for one split. ``histogram``: pixels per trainId 0–18, then ignore (255 and unknown ids).
    ``problems`` keeps the first ``max_problems``; ``problem_counts`` counts all of them by kind."""

    split: str | None
    n_images: int = 0
    n_labels: int = 0
    n_pairs: int = 0
    n_errors: int = 0
    n_warnings: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * (NUM_CLASSES + 1))
    problems: list[Problem] = field(default_factory=list)
    problem_counts: dict[str, int] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.n_images > 0 and self.n_errors == 0


@dataclass
class CheckReport:
    """What ``check_dataset`` found, per split."""

    dataset: str
    root: str
    splits: list[SplitReport]
    seconds: float = 0.0

    @property
    def usable(self) -> bool:
        return all(s.usable for s in self.splits)

    def to_dict(self) -> dict:
        """A JSON-ready dict (adds ``usable`` and the named histogram rows)."""
        out = asdict(self)
        out["usable"] = self.usable
        for split_dict, split in zip(out["splits"], self.splits):
            split_dict["usable"] = split.usable
            split_dict["histogram"] = [dict(zip(("train_id", "name", "pixels", "percent"), row))
                                       for row in histogram_rows(split.histogram)]
        return out


def histogram_rows(histogram: list[int]) -> list[tuple[int, str, int, float]]:
    """(trainId, class name, pixels, percent) for the 19 classes and ignore (trainId 255)."""
    total = sum(histogram) or 1
    names = [*CLASS_NAMES, "ignore"]
    ids = [*range(NUM_CLASSES), 255]
    return [(i, n, int(c), round(100.0 * c / total, 3)) for i, n, c in zip(ids, names, histogram)]


@dataclass
class _FrameResult:
    problems: list[Problem]
    ids_histogram: np.ndarray | None  # pixels per raw label value, None without a readable label


def _describe_ids(valid: np.ndarray) -> str:
    """'0..33, 255' for a mask of valid ids."""
    ids = np.flatnonzero(valid)
    run = int(np.sum(ids == np.arange(len(ids))))
    return ", ".join([f"0..{run - 1}", *(str(i) for i in ids[run:])])


def _value_counts(ids: np.ndarray, n: int) -> np.ndarray:
    """Pixels per label value (at least ``n`` entries); 8-bit maps use Pillow's C histogram, 3× faster than numpy."""
    if ids.dtype == np.uint8:
        counts = np.asarray(Image.fromarray(np.ascontiguousarray(ids)).histogram(), dtype=np.int64)
        return np.pad(counts, (0, max(0, n - counts.size)))
    return np.bincount(ids.ravel(), minlength=n)


def _check_frame(cls: type[SegmentationDataset], missing_label: str | None, size_mismatch: str,
                 frame: Frame) -> _FrameResult:
    """Check one frame; ``missing_label`` is the severity of a missing label (None: not a problem), ``size_mismatch``
    that of a label whose size differs from the image's."""
    problems = []
    image_size = None
    try:
        image_size = verify_image(frame.image)
    except DatasetError as exc:
        problems.append(Problem("unreadable", str(frame.image), str(exc).removeprefix(f"{frame.image}: ")))
    if frame.label is None:
        if missing_label is not None:
            problems.append(Problem("missing-label", str(frame.image), "no label file for this image", missing_label))
        return _FrameResult(problems, None)
    try:
        ids = cls.read_label_ids(frame.label)
    except DatasetError as exc:
        problems.append(Problem("unreadable", str(frame.label), str(exc).removeprefix(f"{frame.label}: ")))
        return _FrameResult(problems, None)
    if image_size is not None and (ids.shape[1], ids.shape[0]) != image_size:
        problems.append(Problem("size-mismatch", str(frame.label), f"label {ids.shape[1]}×{ids.shape[0]} vs image "
                                f"{image_size[0]}×{image_size[1]}", size_mismatch))
    counts = _value_counts(ids, len(cls.valid_ids))
    bad = np.flatnonzero((counts > 0) & ~cls.valid_ids[: len(counts)])
    if bad.size:
        shown = ", ".join(f"{v} ({counts[v]} px)" for v in bad[:5]) + (" …" if bad.size > 5 else "")
        problems.append(Problem("bad-values", str(frame.label),
                                f"label values outside the known ids {_describe_ids(cls.valid_ids)}: {shown}"))
    return _FrameResult(problems, counts)


def _add(report: SplitReport, problem: Problem, max_problems: int) -> None:
    if len(report.problems) < max_problems:
        report.problems.append(problem)
    report.problem_counts[problem.kind] = report.problem_counts.get(problem.kind, 0) + 1
    if problem.severity == ERROR:
        report.n_errors += 1
    else:
        report.n_warnings += 1


def _check_split(cls: type[SegmentationDataset], root: str | os.PathLike, split: str | None,
                 list_file: str | os.PathLike | None, workers: int, max_problems: int, progress: bool,
                 allow: tuple[str, ...]) -> SplitReport:
    scan = cls.scan(root, split=split, list_file=list_file)
    report = SplitReport(split, n_images=len(scan.frames))
    report.n_labels = sum(f.label is not None for f in scan.frames) + len(scan.orphan_labels)
    report.n_pairs = sum(f.label is not None for f in scan.frames)
    if not scan.frames:
        _add(report, Problem("no-images", str(root), "no .png images found for this split"), max_problems)
    for path in scan.missing_images:
        _add(report, Problem("missing-image", str(path), "named by the list file but missing"), max_problems)
    for path in scan.orphan_labels:
        _add(report, Problem("label-without-image", str(path), "no image for this label", WARNING), max_problems)
    labels_needed = not (cls is Cityscapes and split == "train")
    missing_label: str | None = ERROR if labels_needed else WARNING
    if not labels_needed and scan.frames and not report.n_pairs:
        _add(report, Problem("no-labels", str(scan.frames[0].image.parent.parent), "no gtFine labels for this split: "
                             "fine for the unlabeled target of training", WARNING), max_problems)
        missing_label = None
    strict_sizes = cls is Cityscapes and labels_needed and "size-mismatch" not in allow
    raw_counts = np.zeros(len(cls.valid_ids), dtype=np.int64)
    check = partial(_check_frame, cls, missing_label, ERROR if strict_sizes else WARNING)
    desc = f"check {cls.kind}" + (f" {split}" if split else "")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = tqdm(pool.map(check, scan.frames), total=len(scan.frames), desc=desc, unit="img",
                       disable=not progress, leave=False)
        for result in results:
            for problem in result.problems:
                _add(report, problem, max_problems)
            if result.ids_histogram is not None:
                raw_counts[: len(result.ids_histogram)] += result.ids_histogram[: len(raw_counts)]
    ids = np.arange(len(raw_counts), dtype=np.uint8 if len(raw_counts) <= 256 else np.uint16)
    per_trainid = np.bincount(cls.to_trainid(ids), weights=raw_counts, minlength=256).astype(np.int64)
    report.histogram = [*per_trainid[:NUM_CLASSES].tolist(), int(raw_counts.sum() - per_trainid[:NUM_CLASSES].sum())]
    return report


def check_dataset(kind: str, root: str | os.PathLike, *, splits: list[str] | None = None,
                  list_file: str | os.PathLike | None = None, workers: int = 2, max_problems: int = 20,
                  progress: bool = True, allow: tuple[str, ...] = ()) -> CheckReport:
    """Check a dataset folder; Cityscapes checks ``train`` and ``val`` unless ``splits`` says otherwise.

    Layout errors (wrong root, missing split folder, a folder that cannot be listed) raise ``DatasetError`` with the
    fix; everything else is reported. ``allow=("size-mismatch",)`` makes Cityscapes size mismatches warnings (for an
    evaluation that skips those frames with the user's consent).
    """
    if kind not in DATASETS:
        raise UsageError(f"unknown dataset {kind!r}; expected one of {', '.join(DATASETS)}")
    cls = DATASETS[kind]
    if splits and cls.splits == (None,):
        raise UsageError(f"{kind} has no splits; drop --split (select images with a list file)")
    if list_file is not None and len(splits or cls.splits) > 1:
        raise UsageError("a list file describes one split; pass --split too")
    start = time.perf_counter()
    reports = [_check_split(cls, root, split, list_file, workers, max_problems, progress, allow)
               for split in (splits or cls.splits)]
    return CheckReport(kind, str(root), reports, round(time.perf_counter() - start, 3))


def format_report(report: CheckReport) -> str:
    """The report as tables for people: counts per split, trainId histograms, and the first problems."""
    status = "usable" if report.usable else "NOT usable"
    lines = [f"{report.dataset} at {report.root}: {status} ({report.seconds:.1f} s)", "",
             f"{'split':<8}{'images':>8}{'labels':>8}{'pairs':>8}{'errors':>8}{'warnings':>10}"]
    for s in report.splits:
        lines.append(f"{s.split or '-':<8}{s.n_images:>8}{s.n_labels:>8}{s.n_pairs:>8}{s.n_errors:>8}"
                     f"{s.n_warnings:>10}")
    labelled = [s for s in report.splits if sum(s.histogram)]
    if labelled:
        head = "".join(f"{(s.split or '') + ' pixels':>16}{'%':>8}" for s in labelled)
        lines += ["", "trainId pixel histogram:", f"{'id':>4}  {'class':<14}{head}"]
        columns = [histogram_rows(s.histogram) for s in labelled]
        for rows in zip(*columns):
            lines.append(f"{rows[0][0]:>4}  {rows[0][1]:<14}" + "".join(f"{c:>16,}{p:>8.2f}" for _, _, c, p in rows))
    unlabelled = [s.split or report.dataset for s in report.splits if not sum(s.histogram)]
    if unlabelled:
        lines += ["", f"no labels read in {', '.join(unlabelled)}"]
    for s in report.splits:
        total = s.n_errors + s.n_warnings
        if not total:
            continue
        counts = ", ".join(f"{k} {v}" for k, v in Counter(s.problem_counts).most_common())
        where = f" in {s.split}" if s.split else ""
        lines += ["", f"problems{where} ({counts}); first {len(s.problems)} of {total}:"]
        lines += [f"  {p.severity:<8}{p.kind:<20}{p.path}: {p.detail}" for p in s.problems]
    return "\n".join(lines)


def require_usable(kind: str, root: str | os.PathLike, splits: list[str] | None, *, progress: bool = True,
                   skip_hint: str = "", allow: tuple[str, ...] = ()) -> None:
    """Run the dataset doctor on ``root`` and raise a DatasetError naming its first problems unless it is usable;
    ``skip_hint`` ends the message (e.g. how to skip the check), ``allow`` as for ``check_dataset``."""
    report = check_dataset(kind, root, splits=splits, progress=progress, allow=allow)
    if not report.usable:
        problems = [p for s in report.splits for p in s.problems if p.severity == "error"][:3]
        empty = [s.split or kind for s in report.splits if s.n_images == 0]
        found = "; ".join([f"{p.kind} {p.path}: {p.detail}" for p in problems] + [f"{e}: no images" for e in empty])
        raise DatasetError(f"{kind}:{root} fails the dataset doctor ({found}); `ftadapt data check --dataset {kind} "
                           f"--root {root}` lists every problem{skip_hint}")
