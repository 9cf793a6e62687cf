"""The ONNX Runtime backend: CUDA when a GPU is there, else the CPU; TensorRT's EP only when asked for.

Facts from ``reference/deploy.md`` §0.4 and §6: providers are requested explicitly, and the providers a session really
got (``get_providers()``) are checked and exposed, because ``onnxruntime-gpu`` lists CUDA and TensorRT as *available*
on any machine and silently falls back to the CPU when their libraries are missing. Those libraries (cudart, cuBLAS,
cuRAND, cuFFT, cuDNN) usually come from the ``nvidia-*`` wheels, which are not on the loader's path unless something
loaded them first — torch does, but ``ftadapt.runtime`` imports no torch — so before a session that requests CUDA or
TensorRT, ``onnxruntime.preload_dlls()`` loads them (ONNX Runtime ≥ 1.21). If a GPU provider still does not load while
a CUDA device was asked for by name, that is an error unless the caller allowed the CPU fallback. Inputs and outputs
go through IO binding on the device the session runs on, so only the requested outputs come back to the host
(``probs`` at full resolution is 19× the label map). The session is created once; ``run`` allocates only the
returned arrays.
"""
from __future__ import annotations

import contextlib
import io
import re
import warnings
from typing import Any

import numpy as np

from ftadapt.artifact import ArtifactError
from ftadapt.devices import Device
from ftadapt.runtime.backends import Backend
from ftadapt.runtime.errors import BackendUnavailable
from ftadapt.runtime.onnx_file import ModelFile
from ftadapt.runtime.options import OnnxRuntimeOptions

ORT_HINT = ("install ONNX Runtime — pip install onnxruntime-gpu (NVIDIA GPUs; also runs on the CPU) or onnxruntime "
            "(CPU only), never both, e.g. pip install 'ftadapt[export]'")
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module; BackendUnavailable naming the package to install when it is missing."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(f"ONNX Runtime cannot be imported ({exc}); {ORT_HINT}") from None
    return onnxruntime


def default_providers(device: Device) -> list[Any]:
    """The providers to request on ``device`` (cpu or cuda:N, resolved): CUDA on that GPU then the CPU, or the CPU."""
    if device.is_cpu:
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": device.index}), "CPUExecutionProvider"]


def _provider_name(provider: Any) -> str:
    return provider[0] if isinstance(provider, (tuple, list)) else str(provider)


def preload_gpu_libraries(ort: Any, requested: list[Any]) -> list[str]:
    """Call ``onnxruntime.preload_dlls()`` when ``requested`` names a GPU provider and this ONNX Runtime has it (1.21+):
    it loads cudart, cuBLAS, cuRAND, cuFFT and cuDNN from the ``nvidia-*`` wheels (or a compatible torch) so that the
    CUDA provider's library can resolve them. Returns notes: what it printed (it reports problems with ``print``)."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or not any(_provider_name(p) in _GPU_PROVIDERS for p in requested):
        return []
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            preload()
    except Exception as exc:  # it loads shared libraries: OSError and whatever else the platform raises
        return [f"onnxruntime.preload_dlls() failed: {type(exc).__name__}: {exc}"]
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", printed.getvalue()).split())
    return [f"onnxruntime.preload_dlls(): {text}"] if text else []


def _gpu_fallback(obtained: tuple[str, ...], missing: list[str], device: Device, allow_cpu: bool) -> str:
    """The note for requested providers the session did not get; BackendUnavailable when ``device`` is a GPU, no GPU
    provider was obtained and the CPU is not allowed instead."""
    note = (f"ONNX Runtime did not give the requested {', '.join(missing)} (its log above says why); running on "
            f"{', '.join(obtained)}")
    lost_gpu = any(n in _GPU_PROVIDERS for n in missing) and obtained[0] not in _GPU_PROVIDERS
    if lost_gpu and device.is_cuda and not allow_cpu:
        raise BackendUnavailable(
            f"ONNX Runtime could not load its {' or '.join(n for n in missing if n in _GPU_PROVIDERS)} for device "
            f"{device} and would run on the CPU (its log above names the missing library). Install the CUDA "
            "libraries it needs (pip install 'onnxruntime-gpu[cuda,cudnn]'), or pass device='cpu' to run on the CPU "
            "on purpose, or onnxruntime=OnnxRuntimeOptions(cpu_fallback=True) to accept the fallback")
    return note


class OrtBackend(Backend):
    """Runs an exported model with ONNX Runtime on ``device`` (cpu or cuda:N, resolved). ``options.providers``
    overrides the default order (e.g. to add TensorRT's EP); ``options.threads`` sets the intra-op thread count;
    ``allow_cpu`` lets a session meant for a GPU run on the CPU (with a warning) when no GPU provider loads."""

    name = "onnxruntime"

    def __init__(self, model: ModelFile, *, device: Device, options: OnnxRuntimeOptions, allow_cpu: bool) -> None:
        ort = import_onnxruntime()
        self._ort = ort
        requested = default_providers(device) if options.providers is None else list(options.providers)
        notes = preload_gpu_libraries(ort, requested)
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3  # errors only: a failed provider still logs why
        if options.threads is not None:
            session_options.intra_op_num_threads = options.threads
        try:
            self._session = ort.InferenceSession(str(model.path), sess_options=session_options, providers=requested)
        except Exception as exc:
            raise ArtifactError(f"ONNX Runtime cannot load {model.path}: {exc}") from None
        self.providers = tuple(self._session.get_providers())
        missing = [n for n in map(_provider_name, requested) if n not in self.providers]
        if missing:
            note = _gpu_fallback(self.providers, missing, device, allow_cpu)
            notes.append(note)
            warnings.warn(note, RuntimeWarning, stacklevel=4)
        self.notes = tuple(notes)
        gpu = self.providers[0] in _GPU_PROVIDERS
        self._device = ("cuda", device.index or 0) if gpu else ("cpu", 0)
        self.description = {"onnxruntime": ort.__version__, "execution_device": self._device[0],
                            "intra_op_threads": options.threads or "default"}

    def run(self, batch: np.ndarray, outputs: tuple[str, ...] = ("labels",)) -> dict[str, np.ndarray]:
        """Shape: uint8 N×H×W×3 → {name: array} for the requested outputs (copied to the host)."""
        kind, index = self._device
        binding = self._session.io_binding()
        binding.bind_ortvalue_input("image", self._ort.OrtValue.ortvalue_from_numpy(batch, kind, index))
        for name in outputs:
            binding.bind_output(name, kind, index)
        self._session.run_with_iobinding(binding)
        return {name: value.numpy() for name, value in zip(outputs, binding.get_outputs())}

    def device_ms(self) -> float | None:
        """None: ONNX Runtime exposes no CUDA events around its run."""
        return None

    def close(self) -> None:
        self._session = None


__all__ = ["ORT_HINT", "OrtBackend", "default_providers", "import_onnxruntime", "preload_gpu_libraries"]
