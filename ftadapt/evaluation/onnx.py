"""An exported ONNX file as a predictor, run through the embeddable runtime (``ftadapt.runtime.Segmenter``).

The file does its own pre-processing (bilinear half-pixel resize to its working size, see ``ftadapt.export.onnx_graph``)
and returns labels at the frame's own resolution, so it is fed the decoded frame as it is and scored against the
full-resolution ground truth: the AdaptSegNet protocol, with the graph's pre-processing instead of PIL BICUBIC.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ftadapt.evaluation.evaluate import Predictor, require_full_resolution
from ftadapt.evaluation.frames import Sample
from ftadapt.evaluation.protocols import Protocol


class OnnxPredictor(Predictor):
    """The labels of ``segmenter`` (a :class:`ftadapt.runtime.Segmenter`), named ``name``."""

    def __init__(self, segmenter: Any, *, name: str) -> None:
        self.segmenter = segmenter
        self.name = name

    @classmethod
    def open(cls, path: str | os.PathLike, *, name: str | None = None, **segmenter_options: Any) -> OnnxPredictor:
        """A Segmenter on ``path`` (``segmenter_options`` as the Segmenter takes them: backend, device, …)."""
        from ftadapt.runtime import Segmenter

        return cls(Segmenter(path, **segmenter_options), name=name or Path(path).name)

    def prepare(self, sample: Sample, protocol: Protocol) -> np.ndarray:
        require_full_resolution(protocol, self.name)
        return np.asarray(sample.rgb)

    def predict(self, sample: Sample, prepared: np.ndarray) -> np.ndarray:
        return self.segmenter(prepared)

    def describe(self) -> dict[str, Any]:
        seg = self.segmenter
        return {"model": str(seg.model_path), "backend": seg.backend, "providers": list(seg.providers),
                "precision": seg.metadata.precision, "working_size": list(seg.metadata.working_size),
                "members": [m.name for m in seg.metadata.members], "preprocessing": "the graph's own (bilinear "
                "half-pixel resize)"}

    def close(self) -> None:
        self.segmenter.close()


__all__ = ["OnnxPredictor"]
