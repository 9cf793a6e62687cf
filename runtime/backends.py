"""Which backend runs a model: availability probes and the ``backend="auto"`` choice, each with its reason.

``auto`` picks TensorRT when the ``tensorrt`` and ``pycuda`` modules import, the TensorRT version is supported and an
NVIDIA GPU is visible; otherwise ONNX Runtime (with CUDA when a GPU is visible, else on the CPU). The reasons for
passing over a backend are kept as notes so the application can log what it got and why (``Segmenter.notes``).
"""
from __future__ import annotations

import ctypes
import dataclasses

from ftadapt.errors import FtadaptError, UsageError

BACKENDS = ("auto", "tensorrt", "onnxruntime")


class BackendUnavailable(FtadaptError):
    """A backend that cannot run here (module missing, no GPU, unsupported version); the message names the fix."""


def cuda_device_count() -> tuple[int, str]:
    """(number of CUDA devices, why there are none) asked of the NVIDIA driver library itself.

    No CUDA Python package is needed, so the probe is cheap and works in the base install; it keeps ONNX Runtime from
    trying (and loudly failing) to load its CUDA provider on machines without a GPU.
    """
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return 0, "no NVIDIA driver (libcuda not found)"
    status = lib.cuInit(0)
    if status != 0:
        return 0, f"the NVIDIA driver failed to initialise CUDA (cuInit error {status})"
    count = ctypes.c_int(0)
    status = lib.cuDeviceGetCount(ctypes.byref(count))
    if status != 0 or count.value == 0:
        return 0, "the NVIDIA driver reports no CUDA device"
    return count.value, ""


def check_device(device: int | str) -> int | str:
    """``device`` is a CUDA device index ≥ 0 or ``"cpu"``."""
    if device == "cpu" or (isinstance(device, int) and not isinstance(device, bool) and device >= 0):
        return device
    raise UsageError(f"device={device!r}: expected a CUDA device index (0, 1, …) or 'cpu'")


def parse_device(name: str) -> int | str:
    """The runtime's ``device`` for a torch-style device name: "cpu", or the CUDA index of "cuda", "cuda:N" or
    "auto" (0)."""
    if name == "cpu":
        return name
    index = "0" if name == "auto" else name.removeprefix("cuda").removeprefix(":")
    if not (name == "auto" or name.startswith("cuda")) or not (index or "0").isdigit():
        raise UsageError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")
    return int(index or 0)


@dataclasses.dataclass(frozen=True)
class Choice:
    """The backend to build and why the others were passed over."""

    backend: str
    notes: tuple[str, ...] = ()


def choose_backend(backend: str, device: int | str) -> Choice:
    """Resolve ``backend`` ("auto", "tensorrt" or "onnxruntime") for ``device`` (see the module docstring)."""
    if backend not in BACKENDS:
        raise UsageError(f"backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    device = check_device(device)
    if backend == "onnxruntime":
        return Choice(backend)
    if device == "cpu":
        if backend == "tensorrt":
            raise UsageError("backend='tensorrt' needs a CUDA device, not device='cpu'; use backend='onnxruntime'")
        return Choice("onnxruntime", ("TensorRT skipped: device='cpu'",))
    from ftadapt.runtime.trt_api import import_pycuda, import_tensorrt

    problems = []
    try:
        import_tensorrt()
        import_pycuda()
    except BackendUnavailable as exc:
        problems.append(str(exc))
    count, why = cuda_device_count()
    if count == 0:
        problems.append(f"TensorRT needs an NVIDIA GPU: {why}; use backend='onnxruntime' to run on the CPU")
    elif device >= count:
        raise UsageError(f"device={device}, but only {count} CUDA device(s) are visible (0–{count - 1})")
    if problems and backend == "tensorrt":
        raise BackendUnavailable("; and ".join(problems))
    if problems:
        return Choice("onnxruntime", tuple(f"TensorRT skipped: {p}" for p in problems))
    return Choice("tensorrt")


__all__ = ["BACKENDS", "BackendUnavailable", "Choice", "check_device", "choose_backend", "cuda_device_count",
           "parse_device"]
