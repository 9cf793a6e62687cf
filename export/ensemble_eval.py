"""Evaluate an ensemble beside its members (``ftadapt eval --ensemble``): the paper's Table 1/2 shape.

Every member is evaluated with its own head rule and the ensemble with the fused prediction, all on the AdaptSegNet
protocol of :mod:`ftadapt.evaluate_model` (the ensemble goes through the same ``evaluate_dataset`` as any model).
Members are run twice (alone and inside the ensemble): simple, and each result comes from the one shared code path.
"""
from __future__ import annotations

import math
import os
from typing import Any

import torch

from ftadapt.evaluate import EvalResult, format_comparison
from ftadapt.evaluate_model import evaluate_cityscapes
from ftadapt.export.ensemble import Ensemble
from ftadapt.protocol import CITYSCAPES_SIZE


ENSEMBLE = "ensemble"


def evaluate_ensemble(ensemble: Ensemble, root: str | os.PathLike, *, split: str = "val",
                      size: tuple[int, int] = CITYSCAPES_SIZE, device: str | torch.device | None = None,
                      progress: bool = True, num_workers: int = 2) -> dict[str, EvalResult]:
    """Results of every member (by name) and of the ensemble (key ``"ensemble"``) on Cityscapes ``split`` at input
    ``size`` (W, H; the protocol's 1024×512 by default)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ensemble = ensemble.to(device).eval()
    names = [i.name for i in ensemble.infos] or [f"member{k + 1}" for k in range(len(ensemble.members))]
    options = {"split": split, "size": size, "device": device, "progress": progress, "num_workers": num_workers}
    results = {name: evaluate_cityscapes(member, root, rule=rule, **options)
               for name, member, rule in zip(names, ensemble.members, ensemble.rules)}
    fused = evaluate_cityscapes(ensemble, root, **options)
    fused.protocol["heads"] = "per member"
    fused.protocol["ensemble"] = [{"name": n, "weight": float(w), "head_rule": r}
                                  for n, w, r in zip(names, ensemble.weights.tolist(), ensemble.rules)]
    results[ENSEMBLE] = fused
    return results


def best_member(results: dict[str, EvalResult]) -> str:
    """The member with the highest mIoU (the baseline the ensemble's deltas are measured against)."""
    members = {k: v for k, v in results.items() if k != ENSEMBLE}
    return max(members, key=lambda k: -math.inf if math.isnan(members[k].miou) else members[k].miou)


def format_ensemble_results(results: dict[str, EvalResult]) -> str:
    """Per-class IoU of each member and the ensemble side by side, with ensemble − best member deltas."""
    return format_comparison(results, delta=(ENSEMBLE, best_member(results)))


def ensemble_results_dict(results: dict[str, EvalResult]) -> dict[str, Any]:
    """JSON-ready: each member's and the ensemble's result, and which member the deltas compare against."""
    return {"members": {k: v.to_dict() for k, v in results.items() if k != ENSEMBLE},
            "ensemble": results[ENSEMBLE].to_dict(), "delta_vs": best_member(results)}


__all__ = ["evaluate_ensemble", "format_ensemble_results", "ensemble_results_dict", "best_member"]
