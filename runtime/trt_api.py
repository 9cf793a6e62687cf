"""Guarded imports of TensorRT and pycuda, the supported TensorRT versions, and TensorRT → numpy dtypes.

TensorRT's builder is not installable from PyPI and pycuda compiles against a CUDA toolkit, so both live in the
``trt`` extra and are imported only here, on first use (``reference/deploy.md`` §0). Supported: TensorRT 10.12+
(strong typing supersedes the FP16 builder flag) and 11.x (strong typing is the only mode); ftadapt never sets a
precision flag, so one code path serves both (§1.3).
"""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from types import ModuleType

import numpy as np

from ftadapt.runtime.errors import BackendUnavailable

MIN_VERSION = (10, 12)
NEXT_UNSUPPORTED = (12, 0)
PROC_MAPS = Path("/proc/self/maps")  # Linux: the files mapped into this process, shared libraries included
_CU_DIST = re.compile(r"tensorrt[-_.]cu(\d+)([-_.](bindings|libs))?")
_CUDART = re.compile(r"/libcudart\.so\.(\d+)(\.|$)")
INSTALL_HINT = ("install the `trt` extra (pip install 'ftadapt[trt]'; TensorRT ≥ 10.12 with the CUDA libraries for "
                "your driver) or use backend='onnxruntime'")


def parse_version(text: str) -> tuple[int, int]:
    """``"10.16.1.11"`` → (10, 16)."""
    match = re.match(r"(\d+)\.(\d+)", str(text))
    if match is None:
        raise BackendUnavailable(f"cannot read the TensorRT version {text!r}; {INSTALL_HINT}")
    return int(match.group(1)), int(match.group(2))


def check_version(text: str) -> tuple[int, int]:
    """The (major, minor) of a supported TensorRT version; BackendUnavailable for any other."""
    version = parse_version(text)
    if version < MIN_VERSION:
        raise BackendUnavailable(
            f"TensorRT {text} is too old: ftadapt needs {MIN_VERSION[0]}.{MIN_VERSION[1]} or newer (strongly typed "
            f"FP16 engines without the FP16 builder flag); upgrade it, {INSTALL_HINT}")
    if version >= NEXT_UNSUPPORTED:
        raise BackendUnavailable(
            f"TensorRT {text} is newer than the versions ftadapt was checked against (10.12–11.x); install TensorRT "
            f"11.x, {INSTALL_HINT}")
    return version


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, after checking its version; BackendUnavailable naming the fix otherwise."""
    try:
        import tensorrt as trt
    except ImportError as exc:  # the module, or libnvinfer behind it, is missing
        raise BackendUnavailable(f"TensorRT cannot be imported ({exc}); {INSTALL_HINT}") from None
    except OSError as exc:
        raise BackendUnavailable(f"TensorRT's libraries cannot be loaded ({exc}); {INSTALL_HINT}") from None
    check_version(getattr(trt, "__version__", "unknown"))
    return trt


def tensorrt_cuda(trt: ModuleType) -> str:
    """The CUDA major version this TensorRT build targets, e.g. "cuda13", for the engine-cache key.

    ``trt.__version__`` is the same for the CUDA 12 and CUDA 13 builds of a TensorRT release, and their plans are not
    interchangeable. pip installs name the build: the ``tensorrt-cu12``/``tensorrt-cu13`` distributions (and their
    ``-bindings``/``-libs``) of this version. Other installs (tar, deb) are told apart by the CUDA runtime library
    loaded into the process (``libcudart.so.<major>``, Linux); "unknown" when neither says.
    """
    majors = set()
    for dist in importlib.metadata.distributions():
        match = _CU_DIST.fullmatch((dist.metadata["Name"] or "").lower())
        if match and dist.version == trt.__version__:
            majors.add(match.group(1))
    if not majors:
        try:
            maps = PROC_MAPS.read_text()
        except OSError:
            maps = ""
        majors = {m.group(1) for m in _CUDART.finditer(maps)}
    return "+".join(f"cuda{m}" for m in sorted(majors)) or "unknown"


def import_pycuda() -> ModuleType:
    """``pycuda.driver`` (initialised); BackendUnavailable naming the fix when pycuda or the driver is missing."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendUnavailable(f"pycuda cannot be imported ({exc}); {INSTALL_HINT}") from None
    try:
        cuda.init()
    except cuda.Error as exc:
        raise BackendUnavailable(f"CUDA cannot be initialised ({exc}): no usable NVIDIA GPU or driver; use "
                                 "backend='onnxruntime' to run on the CPU") from None
    return cuda


def numpy_dtype(trt: ModuleType, dtype: object) -> np.dtype:
    """The numpy dtype of a TensorRT ``DataType`` that can cross the I/O boundary (FP32/FP16/INT8/32/64/UINT8/BOOL)."""
    table = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT8: np.int8,
             trt.DataType.INT32: np.int32, trt.DataType.INT64: np.int64, trt.DataType.UINT8: np.uint8,
             trt.DataType.BOOL: np.bool_}
    if dtype not in table:
        raise BackendUnavailable(f"the engine uses I/O data type {dtype}, which ftadapt's runtime cannot exchange "
                                 "with numpy; re-export the model with `ftadapt export`")
    return np.dtype(table[dtype])


__all__ = ["INSTALL_HINT", "MIN_VERSION", "check_version", "import_pycuda", "import_tensorrt", "numpy_dtype",
           "parse_version", "tensorrt_cuda"]
