"""ftadapt: domain-adaptive semantic segmentation with the step-wise feature-norm loss of "Feature To Adapt",
fused ONNX ensembles, and a TensorRT FP16 / ONNX Runtime runtime with verified mIoU.

This module imports nothing heavy: ``import ftadapt`` must stay cheap and torch-free.
"""
from ftadapt.version import __version__

__all__ = ["__version__", "load_model"]


def __getattr__(name: str):
    # ``ftadapt.load_model`` is resolved on first use so ``import ftadapt`` does not import torch.
    if name == "load_model":
        from ftadapt.checkpoint import load_model

        return load_model
    raise AttributeError(f"module 'ftadapt' has no attribute {name!r}")
