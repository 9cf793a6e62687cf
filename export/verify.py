"""Parity verification of an exported graph: ``onnx.checker`` on the file, then ONNX Runtime (CPU) against the
FP32 PyTorch module on a few frames at two sizes (DESIGN.md §7).

Gates (``ftadapt.tolerances``): FP32 — max |Δprob| ≤ 1e-4 and ≥ 99.99 % equal labels; FP16 — ≥ 99.5 % equal labels
against the FP32 module (its max |Δprob| is reported, not gated). Exact ties in the reference are not counted as
disagreement (see :class:`Verification`); the raw identical-label rate is reported beside the gated figure. The
probabilities compared are the full-resolution fused probabilities that feed the graph's ArgMax; a graph exported
without a ``probs`` output gets that tensor added as an output in a verification copy (in memory, or a small sibling
file that shares the external weights).

Default frames are synthetic Cityscapes-style street scenes (``ftadapt.data.synthetic``) rather than noise, so the
label agreement is measured on images with structure, at sizes other than the working size.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from tqdm import tqdm

from ftadapt.data.synthetic import synthesize
from ftadapt.export.onnx_graph import SegmentationGraph
from ftadapt.runtime.onnx_file import ModelFile, read_model_file
from ftadapt.tolerances import tolerance_for

TIE_EPS = 1e-6  # reference probabilities this close are a tie: either label is the argmax
PROVIDER = "CPUExecutionProvider"


@dataclasses.dataclass
class Verification:
    """The outcome of one verification; ``to_dict`` is what the metadata stores.

    ``label_agreement`` (the gated figure) counts a differing pixel as agreeing when it is a tie: the reference gives
    both labels the same probability up to ``TIE_EPS`` (float rounding, e.g. where bilinear upsampling lands exactly
    half-way between two confident cells), so either label is the argmax. ``identical_labels`` counts raw equality.
    """

    status: str  # "passed" | "failed"
    precision: str
    checker: str  # "ok" or the checker's message
    provider: str
    sizes: list[tuple[int, int]]  # (W, H) of the frame batches
    frames: int
    max_abs_prob: float | None = None
    label_agreement: float | None = None
    identical_labels: float | None = None
    seconds: float = 0.0
    reasons: list[str] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        tolerance = tolerance_for(self.precision)
        gate = {"label_agreement": tolerance.min_label_agreement}
        if tolerance.max_abs_prob is not None:
            gate = {"max_abs_prob": tolerance.max_abs_prob, **gate}
        return {"status": self.status, "reference": "pytorch fp32 module", "runtime": f"onnxruntime {PROVIDER}",
                "checker": self.checker, "frames": self.frames, "sizes": [f"{w}x{h}" for w, h in self.sizes],
                "max_abs_prob": _finite(self.max_abs_prob), "label_agreement": self.label_agreement,
                "identical_labels": self.identical_labels, "tie_eps": TIE_EPS, "gate": gate,
                "seconds": round(self.seconds, 2), "reasons": list(self.reasons)}

    def summary(self) -> str:
        prob = "-" if self.max_abs_prob is None else f"{self.max_abs_prob:.3g}"
        agree = "-" if self.label_agreement is None else f"{100 * self.label_agreement:.4f} %"
        same = "-" if self.identical_labels is None else f"{100 * self.identical_labels:.4f} %"
        text = (f"verification {self.status.upper()} ({self.precision} vs PyTorch FP32, ONNX Runtime CPU, "
                f"{self.frames} frames at {', '.join(f'{w}x{h}' for w, h in self.sizes)}): max |Δprob| {prob}, "
                f"label agreement {agree} (identical {same}; ties excused)")
        return text + "".join(f"\n  - {r}" for r in self.reasons)


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: a non-finite difference (overflow in the graph) is stored as null; the reasons say why."""
    return value if value is not None and np.isfinite(value) else None


def default_sizes(working_size: tuple[int, int]) -> list[tuple[int, int]]:
    """Two frame sizes unlike the working size: 2× (Cityscapes 2048×1024 for the default) and a 16:9 one
    (1280×720 for the default), so the dynamic H and W are exercised too."""
    w, h = working_size
    return [(2 * w, 2 * h), (max(8, w * 5 // 4), max(8, h * 45 // 32))]


def verification_frames(sizes: list[tuple[int, int]], per_size: int = 2, seed: int = 0) -> list[np.ndarray]:
    """One uint8 RGB batch (N×H×W×3) of synthetic target-domain street scenes per size (W, H)."""
    return [np.stack([synthesize("target", "val", i, size, seed=seed)[0] for i in range(per_size)])
            for size in sizes]


def image_input_problems(model: onnx.ModelProto) -> list[str]:
    """Why TensorRT would reject the graph's ``image`` input: it must be uint8 and read by exactly one node, a Cast to
    float32 (TensorRT takes UINT8 only as a network input that feeds a Cast; ``docs/deploy.md``). Empty when fine."""
    readers = [n for n in model.graph.node if "image" in n.input]
    casts = [n for n in readers if n.op_type == "Cast"
             and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)]
    if len(readers) == 1 and casts:
        return []
    shown = ", ".join(f"{n.op_type} {n.name!r}" for n in readers) or "no node"
    return [f"'image' is read by {shown}; TensorRT needs exactly one reader, a Cast to float32"]


def _session(checked: ModelFile) -> tuple[Any, str, Path | None]:
    """An ORT CPU session that outputs the fused probabilities, its probs output name, and any file to delete.

    It takes what :func:`~ftadapt.runtime.onnx_file.read_model_file` returned: ONNX Runtime then opens only external
    data that the reader checked to lie beside the file."""
    path = checked.path
    model = onnx.load(str(path), load_external_data=False)
    outputs = [o.name for o in model.graph.output]
    if "probs" in outputs:
        return ort.InferenceSession(str(path), providers=[PROVIDER]), "probs", None
    argmax = [n for n in model.graph.node if n.op_type == "ArgMax"]
    if len(argmax) != 1:
        raise ValueError(f"expected one ArgMax in the graph, found {len(argmax)}")
    probs = argmax[0].input[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(probs, onnx.TensorProto.FLOAT, None))
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return ort.InferenceSession(model.SerializeToString(), providers=[PROVIDER]), probs, None
    copy = path.with_name(f".verify-{path.name}")  # beside the weights it references
    onnx.save(model, str(copy))
    return ort.InferenceSession(str(copy), providers=[PROVIDER]), probs, copy


def verify_onnx(path: str | os.PathLike, reference: SegmentationGraph, *, precision: str,
                batches: list[np.ndarray], progress: bool = True) -> Verification:
    """Check the ONNX file at ``path`` against ``reference`` (the FP32 module) on ``batches`` (uint8 N×H×W×3 each).

    The file is read through :func:`~ftadapt.runtime.onnx_file.read_model_file` first (ArtifactError for a damaged
    file or external data outside its folder), so neither the checker nor ONNX Runtime opens anything else."""
    checked, t0, tolerance = read_model_file(path), time.perf_counter(), tolerance_for(precision)
    path = checked.path
    sizes = [(b.shape[2], b.shape[1]) for b in batches]
    frames = sum(len(b) for b in batches)

    def result(status: str, checker: str, reasons: list[str], **figures: float) -> Verification:
        return Verification(status, precision, checker, PROVIDER, sizes, frames, reasons=reasons,
                            seconds=time.perf_counter() - t0, **figures)

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # ValidationError, InferenceError
        return result("failed", f"{type(exc).__name__}: {exc}", ["onnx.checker rejected the file"])
    reasons = image_input_problems(onnx.load(str(path), load_external_data=False))
    session, probs_name, extra = _session(checked)
    diffs, same, ties, total = [], 0, 0, 0
    try:
        for batch in tqdm(batches, desc=f"verify {precision}", unit="batch", disable=not progress):
            labels, probs = session.run(["labels", probs_name], {"image": batch})
            with torch.inference_mode():
                ref = reference.fused_probs(torch.from_numpy(batch)).numpy()
            total += labels.size
            diffs.append(float(np.abs(probs - ref).max()))
            if labels.dtype != np.int32 or labels.shape != batch.shape[:3] or labels.min() < 0 \
                    or labels.max() >= ref.shape[1]:
                reasons.append(f"labels are {labels.dtype} {list(labels.shape)} in [{labels.min()}, {labels.max()}], "
                               f"expected int32 {list(batch.shape[:3])} in [0, {ref.shape[1] - 1}]")
                continue
            chosen = np.take_along_axis(ref, labels[:, None].astype(np.int64), axis=1)[:, 0]
            best = ref.max(axis=1)
            differ = labels != ref.argmax(axis=1)
            same += int((~differ).sum())
            ties += int((differ & (best - chosen <= TIE_EPS)).sum())
    finally:
        del session
        if extra is not None:
            extra.unlink(missing_ok=True)
    agreement, identical = (same + ties) / total, same / total
    max_diff = max(diffs) if all(np.isfinite(diffs)) else float("nan")
    if not np.isfinite(max_diff):
        reasons.append("the graph produced non-finite probabilities (NaN/inf: an overflow)")
    elif tolerance.max_abs_prob is not None and max_diff > tolerance.max_abs_prob:
        reasons.append(f"max |Δprob| {max_diff:.3g} > {tolerance.max_abs_prob:g}")
    if agreement < tolerance.min_label_agreement:
        reasons.append(f"label agreement {100 * agreement:.4f} % < {100 * tolerance.min_label_agreement:g} %")
    return result("failed" if reasons else "passed", "ok", reasons, max_abs_prob=max_diff,
                  label_agreement=agreement, identical_labels=identical)

__all__ = ["Verification", "verify_onnx", "image_input_problems", "verification_frames", "default_sizes"]
