"""Backends: the one interface both runtimes implement, and which of them runs a model on which device.

``auto`` picks TensorRT when the ``tensorrt`` and ``pycuda`` modules import, the TensorRT version is supported and an
NVIDIA GPU is there; otherwise ONNX Runtime (with CUDA when a GPU is there, else on the CPU). The reasons for passing
over a backend are kept as notes so the application can log what it got and why (``Segmenter.notes``).

Devices are spelled as everywhere in ftadapt (:mod:`ftadapt.devices`: auto, cpu, cuda, cuda:N or an index) and
probed through the NVIDIA driver, without torch. A CUDA device named explicitly where there is none is an error
naming the fix — unless ``backend="auto"``, which runs on the CPU and says why.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from ftadapt import devices
from ftadapt.devices import CPU, Device, DeviceLike
from ftadapt.errors import UsageError
from ftadapt.runtime.errors import BackendUnavailable

if TYPE_CHECKING:
    import numpy as np

BACKENDS = ("auto", "tensorrt", "onnxruntime")


class Backend(abc.ABC):
    """What runs an exported model: ONNX Runtime (``ort_backend``) or TensorRT (``trt_backend``).

    ``name`` says which; ``providers`` what really computes (ONNX Runtime's providers, or "TensorRT"); ``notes`` what
    is worth logging about how it was set up; ``description`` the versions, device and engine, for reports. Not
    thread-safe by itself (``Segmenter`` serialises calls).
    """

    name: ClassVar[str]
    providers: tuple[str, ...]
    notes: tuple[str, ...]
    description: dict[str, Any]

    @abc.abstractmethod
    def run(self, batch: np.ndarray, outputs: tuple[str, ...] = ("labels",)) -> dict[str, np.ndarray]:
        """Shape: uint8 N×H×W×3 → {name: array} for the requested outputs, in host memory."""

    @abc.abstractmethod
    def device_ms(self) -> float | None:
        """The device time of the last ``run``'s inference in milliseconds, None where it is not measured."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the session, or the engine, context, stream and buffers."""


@dataclasses.dataclass(frozen=True)
class Choice:
    """The backend to build, the device it runs on ("cpu" or cuda:N), the device asked for, and why the other
    backends were passed over."""

    backend: str
    device: Device
    requested: Device
    notes: tuple[str, ...] = ()


def _tensorrt_problems() -> list[str]:
    """Why TensorRT cannot run here as far as its modules tell (empty when they import and are supported)."""
    from ftadapt.runtime.trt_api import import_pycuda, import_tensorrt

    try:
        import_tensorrt()
        import_pycuda()
    except BackendUnavailable as exc:
        return [str(exc)]
    return []


def choose_backend(backend: str, device: DeviceLike) -> Choice:
    """Resolve ``backend`` ("auto", "tensorrt" or "onnxruntime") for ``device`` (see the module docstring).

    ``device="auto"`` is the first CUDA device when the NVIDIA driver reports one, else the CPU. UsageError for an
    unknown backend or device spelling (DeviceError for a CUDA index past the last GPU), BackendUnavailable when
    the named backend cannot run here.
    """
    if backend not in BACKENDS:
        raise UsageError(f"backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    requested = devices.parse_device(device)
    if requested.is_cpu:
        if backend == "tensorrt":
            raise UsageError("backend='tensorrt' needs a CUDA device, not device='cpu'; use backend='onnxruntime'")
        return Choice("onnxruntime", CPU, requested, ("TensorRT skipped: device='cpu'",) if backend == "auto" else ())
    count, why = devices.cuda_device_count()
    if count == 0:
        if backend == "onnxruntime" and requested.is_cuda:
            devices.resolve(requested)  # DeviceError naming the fix: a CUDA device was asked for by name
        if backend == "tensorrt":
            problems = [f"TensorRT needs a CUDA device, and this machine has none ({why}); use "
                        "backend='onnxruntime' to run on the CPU", *_tensorrt_problems()]
            raise BackendUnavailable("; and ".join(problems))
        notes = [f"ONNX Runtime CUDA skipped: {why}"]
        if backend == "auto":
            notes.insert(0, "TensorRT skipped: TensorRT needs a CUDA device, and this machine has none")
        return Choice("onnxruntime", CPU, requested, tuple(notes))
    resolved = devices.resolve(requested)  # DeviceError for an index past the last GPU
    problems = [] if backend == "onnxruntime" else _tensorrt_problems()
    if backend == "tensorrt" and problems:
        raise BackendUnavailable("; and ".join(problems))
    if backend == "onnxruntime" or problems:
        return Choice("onnxruntime", resolved, requested, tuple(f"TensorRT skipped: {p}" for p in problems))
    return Choice("tensorrt", resolved, requested)


__all__ = ["BACKENDS", "Backend", "Choice", "choose_backend"]
