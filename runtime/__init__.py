"""ftadapt.runtime: the embeddable segmentation runtime (numpy in, numpy out, no torch).

``Segmenter`` runs an ONNX file written by ``ftadapt export`` with TensorRT (``trt`` extra) or ONNX Runtime; TensorRT,
pycuda and onnxruntime are imported only when a backend needs them. ``TensorRTOptions`` and ``OnnxRuntimeOptions``
carry each backend's settings.

``Segmenter`` is loaded on first use, so that importing a leaf of the runtime — the metadata reader
``ftadapt.runtime.onnx_file``, which ``ftadapt inspect`` and the export use — loads neither numpy nor a backend.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ftadapt.runtime.errors import BackendUnavailable, EngineError
from ftadapt.runtime.options import OnnxRuntimeOptions, TensorRTOptions

if TYPE_CHECKING:
    from ftadapt.runtime.segmenter import Segmenter


def __getattr__(name: str) -> Any:
    if name == "Segmenter":
        from ftadapt.runtime.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'ftadapt.runtime' has no attribute {name!r}")


__all__ = ["Segmenter", "TensorRTOptions", "OnnxRuntimeOptions", "BackendUnavailable", "EngineError"]
