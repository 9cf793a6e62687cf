"""Per-class tables for people: the one formatter of the 19 classes and the mIoU, for every command that shows them.

A table is a list of :class:`Series` — one result each (a run, an ensemble, a backend, a published row) or the
difference of two (:func:`difference`) — drawn with the classes down the rows (``ftadapt eval``, the bench report)
or across the columns (the paper's Table 1 shape, ``ftadapt report``), as plain text or Markdown. Numbers are
percentages rounded only here; a class absent from both ground truth and prediction shows "-". Differences carry a
sign. Numpy-free and torch-free.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ftadapt.errors import UsageError
from ftadapt.labels import CLASS_NAMES

# Short column names, as the paper's table heads them.
SHORT_NAMES = ("Road", "Sdwk", "Bldng", "Wall", "Fence", "Pole", "Light", "Sign", "Vgttn", "Trrn", "Sky", "Person",
               "Rider", "Car", "Truck", "Bus", "Train", "Mcycl", "Bcycl")
STYLES, LAYOUTS = ("text", "markdown"), ("classes-down", "classes-across")


@dataclass(frozen=True)
class Series:
    """One line of results: 19 IoUs and the mIoU in percent (None: undefined), further summaries such as SYNTHIA's
    mIoU16/mIoU13, whether it is a ``signed`` difference, and where it came from (``source``)."""

    label: str
    iou: tuple[float | None, ...]
    miou: float | None
    summaries: tuple[tuple[str, float | None], ...] = ()
    signed: bool = False
    source: str = ""

    @classmethod
    def of(cls, label: str, result: Any, *, source: str = "") -> Series:
        """From an ``EvalResult`` (fractions) or its ``to_dict()`` / a results file's entry (percent, null)."""
        if isinstance(result, Mapping):
            subsets = tuple((k, result[k.lower()]) for k in ("mIoU16", "mIoU13") if k.lower() in result)
            return cls(label, tuple(result["per_class_iou"]), result["miou"], subsets, source=source)
        subsets = (("mIoU16", _percent(result.miou16)), ("mIoU13", _percent(result.miou13))) \
            if result.synthia_subsets else ()
        return cls(label, tuple(_percent(v) for v in result.iou), _percent(result.miou), subsets, source=source)


def _percent(value: float) -> float | None:
    return None if math.isnan(value) else 100.0 * float(value)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def difference(a: Series, b: Series, label: str | None = None) -> Series:
    """``a − b`` class by class (None where either is), a signed series labelled ``label`` (default "a − b")."""
    subsets = tuple((name, _minus(x, y)) for (name, x), (_, y) in zip(a.summaries, b.summaries))
    return Series(label or f"{a.label} − {b.label}", tuple(_minus(x, y) for x, y in zip(a.iou, b.iou)),
                  _minus(a.miou, b.miou), subsets, signed=True, source=a.source)


def best_of(results: Mapping[str, Any]) -> str:
    """The name of the result (``EvalResult`` or :class:`Series`) with the highest mIoU (an undefined mIoU ranks
    last): the baseline of an ensemble's deltas."""
    if not results:
        raise UsageError("best_of needs at least one result")

    def score(name: str) -> float:
        miou = results[name].miou
        return -math.inf if miou is None or math.isnan(miou) else miou

    return max(results, key=score)


def cell(value: float | None, digits: int = 2, *, signed: bool = False) -> str:
    """A number as the tables show it: "-" when undefined, a sign on differences ("+0.12", "-0.12")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _summary_names(series: Sequence[Series]) -> list[str]:
    names = ["mIoU"]
    for s in series:
        names += [name for name, _ in s.summaries if name not in names]
    return names


def _summary(s: Series, name: str) -> float | None:
    return s.miou if name == "mIoU" else dict(s.summaries).get(name)


def per_class_table(series: Sequence[Series], *, style: str = "text", layout: str = "classes-down",
                    digits: int = 2, ids: bool = False) -> str:
    """The table of ``series``: text (aligned columns; ``ids`` adds the trainId) or Markdown, with the classes down
    the rows (a column per series, the summaries below a rule) or across the columns (a row per series, the
    paper's short class names, then the mIoU)."""
    if style not in STYLES or layout not in LAYOUTS:
        raise UsageError(f"table style {style!r} / layout {layout!r}: expected one of {STYLES} / {LAYOUTS}")
    if not series:
        raise UsageError("a per-class table needs at least one result")
    if layout == "classes-across":
        return _across(series, style, digits)
    heads = [s.label for s in series]
    body = [(name, [cell(s.iou[c], signed=s.signed, digits=digits) for s in series])
            for c, name in enumerate(CLASS_NAMES)]
    tail = [(name, [cell(_summary(s, name), signed=s.signed, digits=digits) for s in series])
            for name in _summary_names(series)]
    if style == "markdown":
        rows = [[name, *cells] for name, cells in body] + [[f"**{name}**", *(f"**{c}**" for c in cells)]
                                                          for name, cells in tail]
        return markdown_table(["class", *heads], rows)
    return _text_down(heads, body, tail, ids)


def _text_down(heads: list[str], body: list[tuple[str, list[str]]], tail: list[tuple[str, list[str]]],
               ids: bool) -> str:
    width = max(len(n) for n in CLASS_NAMES)
    cols = [max(len(h), 6) for h in heads]

    def line(first: str, name: str, cells: Sequence[str]) -> str:
        return (f"{first:>2}  " if ids else "") + f"{name:<{width}}" + "".join(f"  {c:>{w}}" for c, w in
                                                                               zip(cells, cols))

    header = line("id", "class", heads)
    rule = "-" * len(header)
    lines = [header, rule, *(line(str(c), name, cells) for c, (name, cells) in enumerate(body)), rule]
    return "\n".join(lines + [line("", name, cells) for name, cells in tail])


def _across(series: Sequence[Series], style: str, digits: int) -> str:
    heads = ["Method", *SHORT_NAMES, "mIoU"]
    rows = [[s.label, *(cell(v, signed=s.signed, digits=digits) for v in (*s.iou, s.miou))] for s in series]
    if style == "markdown":
        return markdown_table(heads, rows)
    widths = [max(len(str(r[i])) for r in [heads, *rows]) for i in range(len(heads))]
    return "\n".join("  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(r, widths)))
                     for r in [heads, *rows])


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> str:
    """A Markdown table; columns from ``right`` on are right-aligned."""
    align = ["---" if i < right else "---:" for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_result(result: Any, *, digits: int = 2) -> str:
    """One ``EvalResult``: its classes with trainIds, its mIoU (and mIoU16/13 for SYNTHIA), then how it was made."""
    table = per_class_table([Series.of("IoU", result)], ids=True, digits=digits)
    details = ", ".join(f"{k} {v}" for k, v in result.protocol.items() if k != "name" and v is not None)
    return f"{table}\n{result.n_images} images; protocol {result.protocol.get('name', '?')} ({details})"


def format_comparison(results: Mapping[str, Any], *, delta: tuple[str, str] | None = None, digits: int = 2) -> str:
    """Several ``EvalResult`` side by side, optionally with the column ``delta = (a, b)``: a − b.

    E.g. ``format_comparison({"clan": r1, "maxsquare": r2, "ensemble": r3}, delta=("ensemble", "clan"))``.
    """
    if not results:
        raise UsageError("format_comparison needs at least one result")
    series = {name: Series.of(name, r) for name, r in results.items()}
    if delta is not None and not set(delta) <= set(series):
        raise UsageError(f"delta columns {delta} must name runs among {list(series)}")
    columns = list(series.values())
    if delta is not None:
        columns.append(difference(series[delta[0]], series[delta[1]], f"{delta[0]}-{delta[1]}"))
    return per_class_table(columns, ids=True, digits=digits)


__all__ = ["Series", "difference", "best_of", "cell", "per_class_table", "markdown_table", "format_result",
           "format_comparison", "SHORT_NAMES"]
