"""The ONNX Runtime backend: CUDA when a GPU is there, else the CPU; TensorRT's EP only when asked for.

Facts from ``reference/deploy.md`` §0.4 and §6: providers are requested explicitly, and the providers a session really
got (``get_providers()``) are checked and exposed, because ``onnxruntime-gpu`` lists CUDA and TensorRT as *available*
on any machine and silently falls back to the CPU when their libraries are missing. Inputs and outputs go through IO
binding on the device the session runs on, so only the requested outputs come back to the host (``probs`` at full
resolution is 19× the label map). The session is created once; ``run`` allocates only the returned arrays.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ftadapt.artifact import ArtifactError
from ftadapt.runtime.backends import BackendUnavailable, cuda_device_count
from ftadapt.runtime.onnx_file import ModelFile

ORT_HINT = ("install ONNX Runtime — pip install onnxruntime-gpu (NVIDIA GPUs; also runs on the CPU) or onnxruntime "
            "(CPU only), never both, e.g. pip install 'ftadapt[export]'")
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(f"ONNX Runtime cannot be imported ({exc}); {ORT_HINT}") from None
    return onnxruntime


def default_providers(device: int | str) -> tuple[list[Any], list[str]]:
    """(providers to request, notes): CUDA on ``device`` then CPU when the driver reports a GPU, else CPU only."""
    if device == "cpu":
        return ["CPUExecutionProvider"], []
    count, why = cuda_device_count()
    if count == 0:
        return ["CPUExecutionProvider"], [f"ONNX Runtime CUDA skipped: {why}"]
    return [("CUDAExecutionProvider", {"device_id": device}), "CPUExecutionProvider"], []


def _provider_name(provider: Any) -> str:
    return provider[0] if isinstance(provider, (tuple, list)) else str(provider)


class OrtBackend:
    """Runs an exported model with ONNX Runtime. ``providers`` overrides the default order (e.g. to add TensorRT's
    EP); ``threads`` sets the intra-op thread count (default: ONNX Runtime's, one per physical core)."""

    name = "onnxruntime"

    def __init__(self, model: ModelFile, *, device: int | str = 0, providers: list[Any] | None = None,
                 threads: int | None = None) -> None:
        ort = import_onnxruntime()
        self._ort = ort
        notes: list[str] = []
        if providers is None:
            requested, notes = default_providers(device)
        else:
            requested = list(providers)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: a failed provider still logs why
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(model.path), sess_options=options, providers=requested)
        except Exception as exc:
            raise ArtifactError(f"ONNX Runtime cannot load {model.path}: {exc}") from None
        self.providers = tuple(self._session.get_providers())
        missing = [n for n in map(_provider_name, requested) if n not in self.providers]
        if missing:
            note = (f"ONNX Runtime did not give the requested {', '.join(missing)} (its log above says why); running "
                    f"on {', '.join(self.providers)}")
            notes.append(note)
            if providers is not None:
                warnings.warn(note, RuntimeWarning, stacklevel=3)
        self.notes = tuple(notes)
        gpu = self.providers[0] in _GPU_PROVIDERS
        self._device = ("cuda", device if isinstance(device, int) else 0) if gpu else ("cpu", 0)
        self.outputs = tuple(o.name for o in self._session.get_outputs())
        self.description = {"onnxruntime": ort.__version__, "execution_device": self._device[0],
                            "intra_op_threads": threads or "default"}

    def run(self, batch: np.ndarray, outputs: tuple[str, ...] = ("labels",)) -> dict[str, np.ndarray]:
        """Shape: uint8 N×H×W×3 → {name: array} for the requested outputs (copied to the host)."""
        kind, index = self._device
        binding = self._session.io_binding()
        binding.bind_ortvalue_input("image", self._ort.OrtValue.ortvalue_from_numpy(batch, kind, index))
        for name in outputs:
            binding.bind_output(name, kind, index)
        self._session.run_with_iobinding(binding)
        return {name: value.numpy() for name, value in zip(outputs, binding.get_outputs())}

    def close(self) -> None:
        self._session = None


__all__ = ["ORT_HINT", "OrtBackend", "default_providers", "import_onnxruntime"]
