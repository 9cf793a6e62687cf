"""Result tables in the paper's Table 1 shape, from saved evaluation results (numpy-free, torch-free).

A results file is any JSON that ``ftadapt eval --json`` (or another command) wrote: a single result (``miou``,
``per_class_iou``: 19 percentages or null), or an object holding several — ``{"members": {...}, "ensemble": {...}}``,
``{"results": {...}}``, the ``results.json`` of ``ftadapt bench accuracy`` (``{"backends": {"pytorch": {...},
"onnxruntime": {...}}, "verdict": {...}}``) and the like. Every result found is a row: 19 per-class IoUs and mIoU, in
percent; a second table gives each row's difference to a baseline row, class by class (the paper's Table 2 shape).
What a file says besides its rows becomes a note under the table: entries that did not run (``"status": "not run"``,
a backend without a GPU, say) with their reason, and a parity gate's verdict.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftadapt.errors import UsageError
from ftadapt.evaluation.tables import Series, difference, per_class_table
from ftadapt.labels import CLASS_NAMES
from ftadapt.textfile import read_text_file


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Table 1: 19 IoUs then mIoU, in percent, printed to ``decimals`` places (the rounding
    the mIoU check allows), and ``note``, said under the table where the values differ from the paper's print."""

    values: tuple[float, ...]
    decimals: int
    note: str | None = None


# The paper's Table 1 (GTA5 → Cityscapes, DeepLab-v2 R101; AdaptSegNet's evaluation code except where noted), for
# reference rows next to one's own.
PAPER_TABLE_1: dict[str, PaperRow] = {
    "AdaptSegNet": PaperRow((86.5, 36.0, 79.9, 23.4, 23.3, 23.9, 35.2, 14.8, 83.4, 33.3, 75.6, 58.5, 27.6, 73.7, 32.5,
                             35.4, 3.9, 30.1, 28.1, 42.4), 1),
    "CLAN": PaperRow((87.0, 27.1, 79.6, 27.3, 23.3, 28.3, 35.5, 24.2, 83.6, 27.4, 74.2, 58.6, 28.0, 76.2, 33.1, 36.7,
                      6.7, 31.9, 31.4, 43.2), 1),
    "MaxSquare (its own evaluation)": PaperRow((89.4, 43.0, 82.1, 30.5, 21.3, 30.3, 34.7, 24.0, 85.3, 39.4, 78.2, 63.0,
                                                22.9, 84.6, 36.4, 43.0, 5.5, 34.7, 33.5, 46.4), 1),
    # Not a run of our source-only: the 36.6 is AdaptSegNet's published ResNet-101 baseline (one head, the reduced
    # ASPP of branches 6 + 12), which the paper copies.
    "Source only (AdaptSegNet's ResNet-101 baseline)": PaperRow(
        (75.8, 16.8, 77.2, 12.5, 21.0, 25.5, 30.1, 20.1, 81.3, 24.6, 70.3, 53.8, 26.4, 49.9, 17.2, 25.9, 6.5, 25.3,
         36.0, 36.6), 1),
    "Only Norm loss": PaperRow((86.59, 26.65, 79.63, 27.15, 22.61, 29.37, 37.19, 27.39, 83.21, 31.44, 73.7, 60.36,
                                28.91, 81.92, 33.41, 36.53, 1.85, 32.23, 36.44, 44.03), 2),
    "CLAN + Norm*": PaperRow((87.73, 25.41, 80.32, 28.65, 23.41, 29.47, 37.49, 26.6, 83.93, 35.38, 74.38, 60.39, 28.9,
                              83.48, 35.42, 39.36, 1.1, 32.83, 36.27, 44.76), 2),
    # car and bicycle from the authors' mIoU_result/results_best.txt: the paper's 84.73 and 36.66 are typos.
    "CLAN + Norm": PaperRow((88.83, 33.17, 81.48, 32.66, 24.24, 32.28, 37.65, 27.53, 83.94, 33.88, 75.42, 60.99,
                             28.11, 83.73, 33.36, 42.76, 0.97, 31.13, 35.66, 45.67), 2,
                            note='the paper prints car 84.73 and bicycle 36.66 for "CLAN + Norm", which do not '
                                 "average to its 45.67; the authors' results_best.txt has 83.73 and 35.66, used here"),
    "MaxSquare + Norm*": PaperRow((89.57, 40.32, 82.06, 33.58, 23.35, 29.77, 36.11, 23.68, 84.33, 39.61, 74.89, 60.31,
                                   27.3, 83.84, 42.8, 45.95, 1.9, 32.16, 37.87, 46.81), 2),
}


def _find(data: Any, wanted: Callable[[dict], bool],
          path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """Every object of a JSON document that is ``wanted`` (not looking inside those), with the keys leading to it."""
    if isinstance(data, dict):
        if wanted(data):
            yield path, data
            return
        for key, value in data.items():
            yield from _find(value, wanted, (*path, str(key)))


def _is_result(obj: dict) -> bool:
    return isinstance(obj.get("per_class_iou"), list) and "miou" in obj


def _notes(data: Any, path: Path, label: str) -> list[str]:
    """The lines under the table for one file: what did not run, and a parity gate's verdict."""
    prefix = f"{label} " if label else ""
    notes = [f"{prefix}{keys[-1] if keys else path.stem}: not run: {entry.get('reason', 'no reason given')}"
             for keys, entry in _find(data, lambda obj: obj.get("status") == "not run")]
    verdict = data.get("verdict") if isinstance(data, dict) else None
    if isinstance(verdict, dict) and verdict.get("line"):
        notes.append(f"{prefix or path.name + ': '}parity gate: {verdict['line']}")
    return notes


def read_all(files: Sequence[tuple[str | None, str | Path]]) -> tuple[list[Series], list[str]]:
    """The rows and notes of several (label or None, results file), in order. Two rows with one label are refused,
    naming both files: a table whose rows cannot be told apart is no use, and ``--baseline`` would pick either (two
    ``eval.json`` of different runs both become "eval" unless labelled)."""
    rows: list[Series] = []
    notes: list[str] = []
    for label, path in files:
        found, said = read_results(path, label=label)
        rows += found
        notes += said
    seen: dict[str, str] = {}
    for row in rows:
        if row.label in seen:
            raise UsageError(f"two rows are labelled {row.label!r} (from {seen[row.label]} and {row.source}); give "
                             "each file its own label: LABEL=PATH")
        seen[row.label] = row.source
    return rows, notes


def read_results(path: str | Path, *, label: str | None = None) -> tuple[list[Series], list[str]]:
    """The rows and notes of one results file; ``label`` names a file holding one result, or prefixes the names of
    a file holding several (without it: the file's stem, or the results' own names)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no results file {path}")
    fix = "give the JSON file `ftadapt eval ... --json FILE` wrote"
    text = read_text_file(path, what="JSON results file", fix=fix)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not a JSON results file ({exc}); {fix}") from None
    found = list(_find(data, _is_result))
    if not found:
        raise UsageError(f"{path} holds no evaluation result (an object with miou and per_class_iou); write one "
                         "with `ftadapt eval ... --json FILE`")
    rows = []
    for keys, result in found:
        iou = tuple(result["per_class_iou"])
        if len(iou) != len(CLASS_NAMES):
            raise UsageError(f"{path}: a result has {len(iou)} per-class IoUs, not {len(CLASS_NAMES)}")
        name = keys[-1] if keys else (label if label is not None else path.stem)
        if keys and label is not None:
            name = f"{label} {name}"
        rows.append(Series.of(name, result, source=str(path)))
    return rows, _notes(data, path, label or "")


def paper_rows() -> list[Series]:
    """The paper's Table 1 as rows labelled "paper: NAME"."""
    return [Series(f"paper: {name}", row.values[:-1], row.values[-1], source="the paper's Table 1")
            for name, row in PAPER_TABLE_1.items()]


def paper_notes() -> list[str]:
    """The notes under the table that go with ``paper_rows``: where a row's values differ from the paper's print."""
    return [row.note for row in PAPER_TABLE_1.values() if row.note]


def deltas(rows: Sequence[Series], baseline: str) -> list[Series]:
    """Each row but the baseline minus the baseline, class by class (None where either side is None)."""
    base = next((r for r in rows if r.label == baseline), None)
    if base is None:
        raise UsageError(f"--baseline {baseline!r} names no row; rows: {', '.join(r.label for r in rows)}")
    return [difference(r, base) for r in rows if r is not base]


def markdown(rows: Sequence[Series], delta_rows: Sequence[Series], baseline: str | None,
             notes: Sequence[str] = ()) -> str:
    """The table (and the delta table against ``baseline``) as Markdown, then ``notes`` as a list."""
    text = per_class_table(rows, style="markdown", layout="classes-across")
    if delta_rows:
        text += (f"\nDifference to {baseline} (IoU points):\n\n"
                 + per_class_table(delta_rows, style="markdown", layout="classes-across"))
    if notes:
        text += "\nNotes:\n\n" + "".join(f"- {note}\n" for note in notes)
    return text


def csv_text(rows: Sequence[Series], delta_rows: Sequence[Series]) -> str:
    """One CSV line per row (``kind`` = result or delta), full precision, empty cells for absent classes."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["kind", "method", *CLASS_NAMES, "miou", "source"])
    for kind, group in (("result", rows), ("delta", delta_rows)):
        for r in group:
            writer.writerow([kind, r.label, *("" if v is None else v for v in r.iou),
                             "" if r.miou is None else r.miou, r.source])
    return out.getvalue()


__all__ = ["read_all", "read_results", "paper_rows", "paper_notes", "deltas", "markdown", "csv_text",
           "PAPER_TABLE_1", "PaperRow"]
