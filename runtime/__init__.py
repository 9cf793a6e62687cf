"""ftadapt.runtime: the embeddable segmentation runtime (numpy in, numpy out, no torch).

``Segmenter`` runs an ONNX file written by ``ftadapt export`` with TensorRT (``trt`` extra) or ONNX Runtime; TensorRT,
pycuda and onnxruntime are imported only when a backend needs them.
"""
from ftadapt.runtime.backends import BackendUnavailable
from ftadapt.runtime.engine_cache import EngineError
from ftadapt.runtime.segmenter import Segmenter

__all__ = ["BackendUnavailable", "EngineError", "Segmenter"]
