"""ftadapt: domain-adaptive semantic segmentation with the step-wise feature-norm loss of "Feature To Adapt",
fused ONNX ensembles, and a TensorRT FP16 / ONNX Runtime runtime with verified mIoU.

This module imports nothing heavy: ``import ftadapt`` must stay cheap and torch-free.
"""
__version__ = "0.1.0"

__all__ = ["__version__"]
