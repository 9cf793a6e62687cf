"""Result tables for people: one result's 19 classes, several results side by side with a delta column.

Numbers are percentages rounded only here; a NaN class (absent from both ground truth and prediction) shows "-".
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from ftadapt.errors import UsageError
from ftadapt.evaluation.metrics import EvalResult
from ftadapt.labels import CLASS_NAMES


def _cell(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{100.0 * value:.{digits}f}"


def _summary_rows(result: EvalResult, synthia: bool) -> list[tuple[str, float]]:
    rows = [("mIoU", result.miou)]
    if synthia:
        rows += [("mIoU16", result.miou16), ("mIoU13", result.miou13)]
    return rows


def format_table(result: EvalResult, *, digits: int = 2) -> str:
    """A table for people: the 19 classes with IoU in percent, then mIoU (and mIoU16/13 for SYNTHIA)."""
    width = max(len(n) for n in CLASS_NAMES)
    lines = [f"{'id':>2}  {'class':<{width}}  {'IoU':>6}", "-" * (width + 12)]
    lines += [f"{c:>2}  {name:<{width}}  {_cell(result.iou[c], digits):>6}" for c, name in enumerate(CLASS_NAMES)]
    lines.append("-" * (width + 12))
    summary = _summary_rows(result, result.synthia_subsets)
    lines += [f"{'':>2}  {label:<{width}}  {_cell(value, digits):>6}" for label, value in summary]
    details = ", ".join(f"{k} {v}" for k, v in result.protocol.items() if k != "name" and v is not None)
    lines.append(f"{result.n_images} images; protocol {result.protocol.get('name', '?')} ({details})")
    return "\n".join(lines)


def best_of(results: Mapping[str, EvalResult]) -> str:
    """The name of the result with the highest mIoU (a NaN mIoU ranks last): the baseline of an ensemble's deltas."""
    return max(results, key=lambda k: -math.inf if math.isnan(results[k].miou) else results[k].miou)


def format_comparison(results: Mapping[str, EvalResult], *, delta: tuple[str, str] | None = None,
                      digits: int = 2) -> str:
    """Several results side by side (one column per run), optionally with a column ``delta = (a, b)``: a − b.

    E.g. ``format_comparison({"clan": r1, "maxsquare": r2, "ensemble": r3}, delta=("ensemble", "clan"))``.
    """
    if not results:
        raise UsageError("format_comparison needs at least one result")
    names = list(results)
    if delta is not None and not set(delta) <= set(names):
        raise UsageError(f"delta columns {delta} must name runs among {names}")
    width = max(len(n) for n in CLASS_NAMES)
    cols = [max(len(n), 6) for n in names]
    header = f"{'id':>2}  {'class':<{width}}" + "".join(f"  {n:>{w}}" for n, w in zip(names, cols))
    if delta is not None:
        delta_title = f"{delta[0]}-{delta[1]}"
        header += f"  {delta_title:>{max(len(delta_title), 6)}}"

    def row(head: str, values: list[float]) -> str:
        line = head + "".join(f"  {_cell(v, digits):>{w}}" for v, w in zip(values, cols))
        if delta is not None:
            a, b = values[names.index(delta[0])], values[names.index(delta[1])]
            diff = "-" if math.isnan(a) or math.isnan(b) else f"{100.0 * (a - b):+.{digits}f}"
            line += f"  {diff:>{max(len(delta_title), 6)}}"
        return line

    rule = "-" * len(header)
    lines = [header, rule]
    lines += [row(f"{c:>2}  {name:<{width}}", [r.iou[c] for r in results.values()])
              for c, name in enumerate(CLASS_NAMES)]
    lines.append(rule)
    synthia = any(r.synthia_subsets for r in results.values())
    summaries = [_summary_rows(r, synthia) for r in results.values()]
    for i, (label, _) in enumerate(summaries[0]):
        lines.append(row(f"{'':>2}  {label:<{width}}", [s[i][1] for s in summaries]))
    return "\n".join(lines)
