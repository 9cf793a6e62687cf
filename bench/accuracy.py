"""Accuracy parity: ``ftadapt bench accuracy`` — the deployed model's mIoU beside PyTorch's on a labelled split.

One pass over the split (``ftadapt.evaluation.evaluate``): each frame is decoded once and every backend is scored on
it, on the AdaptSegNet protocol at the file's working size. The backends:

- ``pytorch``: the very module that was exported — ``SegmentationGraph`` rebuilt from the member checkpoints given,
  matched to the file's members by sha256 (``ftadapt.export.rebuild``) — in FP32, fed the frame as it is (the graph's
  own bilinear pre-processing). It is the reference the others are compared with. For an FP16 file on CUDA also
  ``pytorch-fp16``, the same module with BN-folded half members (what the FP16 export traced), so the cost of FP16
  itself shows apart from the runtime's.
- ``onnxruntime`` and ``tensorrt``: the file through ``ftadapt.runtime.Segmenter`` on ``device``.
- ``pytorch-protocol`` (never gated): the same FP32 ensemble under the training protocol's pre-processing (PIL
  bicubic resize to the working size), whose mIoU is the one papers report. The gap to ``pytorch`` is what the graph's
  bilinear pre-processing costs (or gains); the gate compares only the deployed pre-processing.

For each backend: mIoU and the 19 per-class IoUs, ΔmIoU and per-class Δ against the reference, the share of pixels
whose label differs from the reference's (``evaluate(..., reference=)``), and the gate: |ΔmIoU| ≤ the tolerance (0.1
mIoU points for an FP16 file, 0.01 for FP32) and, for an FP32 file, at least 99.99 % identical labels (DESIGN.md §7).
A backend that cannot run here is listed as "not run: reason". Without ``pytorch`` (no checkpoints) the first deployed
backend that ran is the reference, and the report says so; with fewer than two backends nothing can be compared.

FP32 parity on a GPU needs TF32 off on every side: PyTorch's cuDNN convolutions and matmuls (switched off for the
pass), ONNX Runtime CUDA (``use_tf32=0``); the runtime builds TensorRT engines without TF32.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ftadapt.devices import Device, DeviceLike, resolve
from ftadapt.errors import FtadaptError, UsageError
from ftadapt.evaluation import predictors
from ftadapt.evaluation.evaluate import Predictor
from ftadapt.evaluation.predictors import Unavailable
from ftadapt.tolerances import tolerance_for

BACKENDS = ("pytorch", "onnxruntime", "tensorrt")
PROTOCOL_ROW = "pytorch-protocol"


def _pytorch_predictors(model: Path, info: Any, checkpoints: Sequence[Path],
                        device: Device) -> dict[str, Predictor | Unavailable]:
    """``pytorch`` (FP32), ``pytorch-fp16`` (FP16 files) and ``pytorch-protocol``, or why each cannot run."""
    names = ("pytorch", "pytorch-fp16", PROTOCOL_ROW) if info.precision == "fp16" else ("pytorch", PROTOCOL_ROW)
    if not checkpoints:
        why = ("no --checkpoints; pass the checkpoint (or run) folders of the file's members "
               f"({', '.join(m.name for m in info.members)}) to run the exported module in PyTorch")
        return {name: Unavailable(name, why) for name in names}
    reference = predictors.or_unavailable(
        "pytorch", lambda: predictors.exported_module(model, checkpoints, name="pytorch", device=device))
    if isinstance(reference, Unavailable):
        return {name: Unavailable(name, reference.reason) for name in names}
    out: dict[str, Predictor | Unavailable] = {"pytorch": reference}
    if info.precision == "fp16":
        out["pytorch-fp16"] = predictors.or_unavailable(
            "pytorch-fp16", lambda: predictors.half_module(reference, name="pytorch-fp16"))
    out[PROTOCOL_ROW] = predictors.protocol_module(reference, name=PROTOCOL_ROW)
    return out


def _runtime_predictor(model: Path, backend: str, device: Device, engine_cache: Path | None,
                       threads: int | None) -> Predictor | Unavailable:
    """The file through the runtime on ``backend``, or why that backend cannot run here."""
    from ftadapt.runtime import OnnxRuntimeOptions, TensorRTOptions

    if backend == "tensorrt" and device.is_cpu:
        return Unavailable(backend, "TensorRT needs a CUDA device (--device cuda:N)")
    if backend == "tensorrt":
        options: dict[str, Any] = {"tensorrt": TensorRTOptions(engine_cache=engine_cache)}
    else:  # FP32 parity: no TF32 in ONNX Runtime's CUDA kernels either
        providers = None if device.is_cpu else [("CUDAExecutionProvider", {"device_id": device.index, "use_tf32": 0}),
                                                "CPUExecutionProvider"]
        options = {"onnxruntime": OnnxRuntimeOptions(providers=providers, threads=threads)}
    return predictors.or_unavailable(
        backend, lambda: predictors.exported(model, name=backend, backend=backend, device=device, **options))


def open_backends(model: Path, info: Any, backends: Sequence[str], *, checkpoints: Sequence[Path], device: Device,
                  engine_cache: Path | None = None, threads: int | None = None) -> dict[str, Predictor | Unavailable]:
    """Every backend asked for, in order: a predictor, or why it cannot run here."""
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or not backends:
        raise UsageError(f"--backends {','.join(backends)}: expected some of {', '.join(BACKENDS)}")
    out: dict[str, Predictor | Unavailable] = {}
    for backend in backends:
        if backend == "pytorch":
            out.update(_pytorch_predictors(model, info, checkpoints, device))
        else:
            out[backend] = _runtime_predictor(model, backend, device, engine_cache, threads)
    return out


@contextlib.contextmanager
def no_tf32(device: Device) -> Iterator[None]:
    """PyTorch without TF32 on CUDA for the duration (FP32 parity), restored afterwards."""
    if not device.is_cuda:
        yield
        return
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def timed(predictor: Any) -> list[float]:
    """Time every ``predict`` call of ``predictor`` (in place; it runs in the calling thread: the inference with its
    copies and argmax). Returns the list the wall times in seconds are appended to."""
    seconds: list[float] = []
    inner = predictor.predict

    def predict(sample: Any, prepared: Any) -> Any:
        t0 = time.perf_counter()
        out = inner(sample, prepared)
        seconds.append(time.perf_counter() - t0)
        return out

    predictor.predict = predict
    return seconds


def pass_latency(seconds: Sequence[float]) -> dict[str, Any] | None:
    """Per-frame latency during the accuracy pass, the first frame left out (warm-up: sessions, lazy kernel loads)."""
    from ftadapt.bench.latency import latency_stats

    timed_frames = list(seconds[1:] if len(seconds) > 1 else seconds)
    if not timed_frames:
        return None
    return {**latency_stats(timed_frames), "warmup": len(seconds) - len(timed_frames),
            "samples_ms": [round(t * 1000.0, 4) for t in timed_frames]}


def reference_of(opened: dict[str, Predictor | Unavailable]) -> str | None:
    """``pytorch`` when it runs, else the first deployed backend that runs (None: nothing runs)."""
    ran = [name for name, p in opened.items() if not isinstance(p, Unavailable) and name != PROTOCOL_ROW]
    return "pytorch" if "pytorch" in ran else (ran[0] if ran else None)


def gate_of(row: dict[str, Any], reference: dict[str, Any], *, tolerance: float,
            min_identical: float | None) -> dict[str, Any]:
    """The verdict on one backend's result row against the reference's: |ΔmIoU| ≤ ``tolerance`` (mIoU points) and,
    when ``min_identical`` is set, at least that percent of identical labels. ΔmIoU is rounded to 1e-9 first, so a
    difference of exactly the tolerance passes despite the binary fractions of the percentages."""
    delta = None if row["miou"] is None or reference["miou"] is None else row["miou"] - reference["miou"]
    checks = [{"check": "|ΔmIoU|", "value": None if delta is None else abs(delta), "limit": tolerance,
               "passed": delta is not None and round(abs(delta), 9) <= tolerance}]
    if min_identical is not None:
        differing = (row.get("agreement") or {}).get("differing_percent")
        identical = None if differing is None else 100.0 - differing
        checks.append({"check": "identical labels %", "value": identical, "limit": min_identical,
                       "passed": identical is not None and identical >= min_identical})
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def _row(name: str, predictor: Predictor | Unavailable, result: Any, seconds: Sequence[float]) -> dict[str, Any]:
    """One backend's entry: how it ran, its result (EvalResult.to_dict: miou, per_class_iou, agreement, …) and its
    per-frame latency during the pass."""
    if isinstance(predictor, Unavailable):
        return {"status": "not run", "reason": predictor.reason}
    kind = "protocol" if name == PROTOCOL_ROW else "pytorch" if name.startswith("pytorch") else "deployed"
    preprocessing = ("PIL bicubic resize (the training protocol)" if kind == "protocol" else
                     "the graph's own (bilinear half-pixel resize)")
    return {"status": "ran", "kind": kind, "preprocessing": preprocessing, **result.to_dict(),
            "latency_during_pass": pass_latency(seconds)}


def _compare(rows: dict[str, dict[str, Any]], reference: str, *, tolerance: float, min_identical: float | None) -> None:
    """Add Δ against the reference, and the gate, to every row that ran (in place)."""
    ref = rows[reference]
    for name, row in rows.items():
        if row["status"] != "ran":
            continue
        row["delta_miou"] = None if row["miou"] is None or ref["miou"] is None else row["miou"] - ref["miou"]
        row["delta_per_class_iou"] = [None if a is None or b is None else a - b
                                      for a, b in zip(row["per_class_iou"], ref["per_class_iou"])]
        if name == reference:
            row["gate"] = "reference"
        elif row["kind"] == "protocol":
            row["gate"] = "not gated: the training protocol's pre-processing, shown for the gap to the deployed one"
        else:
            row["gate"] = gate_of(row, ref, tolerance=tolerance, min_identical=min_identical)


def verdict_of(rows: dict[str, dict[str, Any]], reference: str | None) -> dict[str, Any]:
    """passed / failed / not compared, with the backends in each group and one line for people."""
    gated = {n: r["gate"] for n, r in rows.items() if isinstance(r.get("gate"), dict)}
    failed = sorted(n for n, g in gated.items() if not g["passed"])
    not_run = [n for n, r in rows.items() if r["status"] != "ran"]
    if not gated:
        ran = [n for n, r in rows.items() if r["status"] == "ran" and r.get("kind") != "protocol"]
        line = (f"no backend can be compared: only {', '.join(ran) or 'none'} ran"
                + (f" (not run: {', '.join(not_run)})" if not_run else ""))
        return {"status": "not compared", "passed": False, "reference": reference, "failed": [], "passed_backends": [],
                "not_run": not_run, "line": line}
    status = "failed" if failed else "passed"
    line = f"{status.upper()}: " + ", ".join(f"{n} {'fails' if n in failed else 'passes'}" for n in gated)
    line += f" against {reference}" + (f"; not run: {', '.join(not_run)}" if not_run else "")
    return {"status": status, "passed": not failed, "reference": reference, "failed": failed,
            "passed_backends": sorted(set(gated) - set(failed)), "not_run": not_run, "line": line}


def measure_accuracy(model: str | os.PathLike, root: str | os.PathLike, *, split: str = "val",
                     backends: Sequence[str] = BACKENDS, checkpoints: Sequence[str | os.PathLike] = (),
                     device: DeviceLike = "auto", tolerance: float | None = None, min_identical: float | None = None,
                     limit: int | None = None, workers: int | None = None, engine_cache: Path | None = None,
                     threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """The accuracy parity report of ``model`` on Cityscapes ``root``/``split`` (see the module docstring):
    ``tolerance`` in mIoU points and ``min_identical`` in percent override the file's precision's defaults
    (``ftadapt.tolerances``); ``threads`` sets PyTorch's and ONNX Runtime's CPU threads."""
    from ftadapt.bench.report import environment
    from ftadapt.data.check import require_usable
    from ftadapt.evaluation import ADAPTSEGNET, LabelledSplit, evaluate
    from ftadapt.runtime.onnx_file import read_model_file

    model, device = Path(model), resolve(device)
    model_file = read_model_file(model)
    info, default = model_file.info, tolerance_for(model_file.info.precision)
    gate = {"tolerance_miou_points": default.miou_points if tolerance is None else tolerance,
            "min_identical_percent": _percent(default.min_identical) if min_identical is None else min_identical}
    gate["default_for"] = (f"an {info.precision.upper()} file" if tolerance is None and min_identical is None
                           else None)
    require_usable("cityscapes", root, [split], progress=progress)
    labelled = LabelledSplit.from_root(root, split).head(limit)
    if threads is not None and "pytorch" in backends:
        import torch

        torch.set_num_threads(threads)
    opened = open_backends(model, info, backends, checkpoints=[Path(c) for c in checkpoints], device=device,
                           engine_cache=engine_cache, threads=threads)
    reference = reference_of(opened)
    ran = [p for p in opened.values() if not isinstance(p, Unavailable)]
    seconds = {p.name: timed(p) for p in ran}
    started = time.perf_counter()
    try:
        with no_tf32(device):
            results = evaluate(ran, labelled, ADAPTSEGNET.at(info.working_size), workers=workers, progress=progress,
                               reference=reference) if ran else {}
    finally:
        predictors.close_all(ran)
    elapsed = time.perf_counter() - started
    rows = {name: _row(name, p, results.get(name), seconds.get(name, ())) for name, p in opened.items()}
    if reference is not None:
        _compare(rows, reference, tolerance=gate["tolerance_miou_points"],
                 min_identical=gate["min_identical_percent"])
    return {"benchmark": "accuracy", "model": _model_record(model, info, model_file.sha256()),
            "data": {"root": str(root), "split": split, "frames": len(labelled.frames), "limit": limit},
            "device": str(device), "reference": reference, "gate": gate,
            "backends": rows, "protocol_gap": _protocol_gap(rows), "verdict": verdict_of(rows, reference),
            "pass_seconds": round(elapsed, 2),
            "frames_per_s": round(len(labelled.frames) / elapsed, 3) if ran and elapsed > 0 else None,
            "latency_note": "latency_during_pass: each backend's predict call per frame in the accuracy pass, while "
                            "other threads decode frames; `ftadapt bench latency` measures under control",
            "environment": environment(str(device))}


def _percent(share: float | None) -> float | None:
    return None if share is None else round(100.0 * share, 9)


def _model_record(model: Path, info: Any, sha256: str) -> dict[str, Any]:
    return {"path": str(model), "sha256": sha256, "precision": info.precision,
            "working_size": list(info.working_size), "ensemble": dict(info.ensemble),
            "members": [{"name": m.name, "weight": m.weight, "head_rule": m.head_rule, "sha256": m.sha256,
                         "method": m.method} for m in info.members]}


def _protocol_gap(rows: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The training protocol's mIoU (PIL bicubic) beside the deployed pre-processing's (the PyTorch module)."""
    deployed, protocol = rows.get("pytorch"), rows.get(PROTOCOL_ROW)
    if not (deployed and protocol and deployed["status"] == protocol["status"] == "ran"):
        return None
    a, b = protocol["miou"], deployed["miou"]
    gap = None if a is None or b is None or math.isnan(a - b) else a - b
    return {"protocol_miou": a, "deployed_miou": b, "protocol_minus_deployed": gap,
            "differing_percent": (protocol.get("agreement") or {}).get("differing_percent")}


class GateFailed(FtadaptError):
    """A backend failed the parity gate, or none could be compared (exit 1; the report is written first)."""


__all__ = ["BACKENDS", "GateFailed", "measure_accuracy", "gate_of", "verdict_of",
           "open_backends", "reference_of", "no_tf32"]


if __name__ == "__main__":  # python -m ftadapt.bench.accuracy: the same as `ftadapt bench accuracy`
    import sys

    from ftadapt.cli import main

    main(["bench", "accuracy", *sys.argv[1:]])
