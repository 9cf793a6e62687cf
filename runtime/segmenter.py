"""``Segmenter``: numpy frames in, label maps out — the one class an application embeds.

    from ftadapt.runtime import Segmenter, TensorRTOptions

    with Segmenter("ensemble.onnx") as seg:          # backend="auto": TensorRT, else ONNX Runtime CUDA, else CPU
        labels = seg(frame)                          # uint8 RGB H×W×3 → int32 H×W trainIds
        print(seg.backend, seg.providers, seg.notes)
        colours = seg.colorize(labels)

    seg = Segmenter("ensemble.onnx", max_frame=(1920, 1080), min_frame=(1920, 1080),     # W×H: one camera size
                    tensorrt=TensorRTOptions(engine_cache="engines/", cuda_graph=True))

The model is the ONNX file ``ftadapt export`` wrote (DESIGN.md §4): pre-processing, the ensemble and the argmax are
inside it, so frames go in as they come from the camera (RGB, any size within ``max_frame``). Its metadata gives the
class names, the palette and the precision. Frame sizes are W×H, as everywhere in ftadapt.

``backend="auto"`` takes TensorRT when it imports and a GPU is there, and falls back to ONNX Runtime — noting why in
``notes`` — when it does not, and also when building or loading the engine fails (an unsupported graph, out of
memory, …). A backend named explicitly never falls back: its failure is the error.

Thread safety: a Segmenter owns one execution context and one CUDA stream (TensorRT) or one session (ONNX Runtime);
calls from several threads are serialised by a lock, so sharing one Segmenter is safe but not parallel. For parallel
streams create one Segmenter per thread — TensorRT engines come from the shared engine cache.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ftadapt.artifact import ArtifactError
from ftadapt.devices import DeviceLike
from ftadapt.errors import UsageError
from ftadapt.labels import colorize, palette_table
from ftadapt.runtime.backends import Backend, Choice, choose_backend
from ftadapt.runtime.engine_cache import compute_profile
from ftadapt.runtime.errors import BackendUnavailable, EngineError
from ftadapt.runtime.frames import ORT_MAX_FRAME, Size, check_batch, check_frame, check_size, stack_frames
from ftadapt.runtime.onnx_file import ModelFile, read_model_file
from ftadapt.runtime.options import OnnxRuntimeOptions, TensorRTOptions, translate_deprecated
from ftadapt.runtime.ort_backend import OrtBackend
from ftadapt.runtime.trt_backend import TrtBackend


def check_contract(model: ModelFile) -> None:
    """The graph's I/O is the exported-artifact contract: ``image`` uint8 N×H×W×3 → ``labels`` int32 N×H×W (+probs)."""
    fix = "; export the model with `ftadapt export`"
    inputs = [(t.name, t.dtype, len(t.dims)) for t in model.inputs]
    if inputs != [("image", "uint8", 4)] or model.inputs[0].dims[3] not in (3, "?"):
        shown = ", ".join(f"{t.name} {t.dtype} {list(t.dims)}" for t in model.inputs) or "none"
        raise ArtifactError(f"{model.path} takes {shown}; the runtime feeds one input 'image', uint8 N×H×W×3{fix}")
    outputs = {t.name: t for t in model.outputs}
    labels = outputs.get("labels")
    if labels is None or labels.dtype not in ("int32", "uint8") or len(labels.dims) != 3:
        shown = ", ".join(f"{t.name} {t.dtype} {list(t.dims)}" for t in model.outputs) or "none"
        raise ArtifactError(f"{model.path} returns {shown}; the runtime needs 'labels', int32 N×H×W{fix}")


class Segmenter:
    """Semantic segmentation of RGB frames with an exported ftadapt model (see the module docstring).

    Args:
        model_path: the ``.onnx`` file (its external-data file beside it).
        backend: "auto", "tensorrt" or "onnxruntime". ``auto`` says what it chose in ``backend``/``providers`` and
            why in ``notes``.
        device: "auto" (the first CUDA device when the NVIDIA driver reports one, else the CPU), "cpu", "cuda",
            "cuda:N" or an index N (``ftadapt.devices``). A CUDA device named explicitly on a machine without one is
            an error naming the fix, unless ``backend="auto"``, which then runs ONNX Runtime on the CPU.
        max_batch: largest batch one engine call takes (TensorRT; default 1). Larger batches are split.
        max_frame: (W, H) of the largest frame (TensorRT default 2048×1024; ONNX Runtime default 4096×4096, which
            bounds its memory: it needs about 110 bytes per pixel of frame).
        min_frame: (W, H) of the smallest frame (TensorRT, default 1×1); ``min_frame == max_frame`` and
            ``max_batch == 1`` give a static engine (fixed camera resolution): the best tactics for that one shape.
        with_probs: also compute the fused probabilities, so that calls may pass ``probs=True`` (the model must have
            been exported with ``--probs``). TensorRT otherwise builds its engine without that output — no
            C×H×W×4-byte buffer per frame — and ONNX Runtime copies it only on the calls that ask.
        tensorrt: :class:`~ftadapt.runtime.options.TensorRTOptions` (engine cache, build, workspace, opt shape,
            stream, CUDA graph, device timing).
        onnxruntime: :class:`~ftadapt.runtime.options.OnnxRuntimeOptions` (providers, threads, CPU fallback).
        **deprecated: the flat keywords of earlier releases (``engine_cache=``, ``threads=``, …, and the (H, W)
            ``max_size``/``min_size``/``opt_size``), accepted for one release with a DeprecationWarning.

    ``last_device_ms`` is the device time of the last call with ``TensorRTOptions(device_timing=True)``, else None
    (ONNX Runtime exposes no events around its run).
    """

    def __init__(self, model_path: str | os.PathLike, backend: str = "auto", device: DeviceLike = "auto", *,
                 max_batch: int | None = None, max_frame: Size | None = None, min_frame: Size | None = None,
                 with_probs: bool = False, tensorrt: TensorRTOptions | None = None,
                 onnxruntime: OnnxRuntimeOptions | None = None, **deprecated: Any) -> None:
        max_frame, min_frame, tensorrt, onnxruntime = translate_deprecated(
            deprecated, max_frame=max_frame, min_frame=min_frame, tensorrt=tensorrt, onnxruntime=onnxruntime)
        self._lock = threading.Lock()
        self.last_device_ms: float | None = None
        self._impl: Backend | None = None
        self.model_path = Path(model_path)
        model = read_model_file(model_path)
        model.require_data_files()
        self.metadata = model.info
        check_contract(model)
        if with_probs and "probs" not in {t.name for t in model.outputs}:
            raise UsageError(f"with_probs=True, but {self.model_path.name} has no 'probs' output; export it with "
                             "`ftadapt export --probs`")
        choice = choose_backend(backend, device)
        self.with_probs, self.device = bool(with_probs), str(choice.device)
        notes, limits = list(choice.notes), (max_batch, max_frame, min_frame)
        if choice.backend == "tensorrt":
            notes += self._open_tensorrt(model, choice, backend, limits, tensorrt, onnxruntime)
        if self._impl is None:
            notes += self._open_onnxruntime(model, choice, backend, limits, tensorrt, onnxruntime)
        self.backend: str = self._impl.name
        self.providers: tuple[str, ...] = self._impl.providers
        self.notes: tuple[str, ...] = tuple(notes) + tuple(self._impl.notes)
        self._palette = palette_table(self.metadata.palette)
        # Releases the backend if the caller never closes it: at garbage collection or, at the latest, before the
        # interpreter tears down modules (pycuda and TensorRT need their context alive to free memory).
        self._finalizer = weakref.finalize(self, self._impl.close)

    def _open_tensorrt(self, model: ModelFile, choice: Choice, backend: str, limits: tuple[Any, Any, Any],
                       options: TensorRTOptions, onnxruntime: OnnxRuntimeOptions) -> list[str]:
        """Set ``_impl`` to the TensorRT backend for ``limits`` (max_batch, max_frame, min_frame); with
        ``backend="auto"`` a failure leaves it None and is a note."""
        if onnxruntime.providers is not None:
            raise UsageError("OnnxRuntimeOptions(providers=…) configures ONNX Runtime; drop it or pass "
                             "backend='onnxruntime'")
        profile = compute_profile(*limits, opt_batch=options.opt_batch, opt_frame=options.opt_frame)
        try:
            self._impl = TrtBackend(model, self.metadata, device=choice.device.index, profile=profile,
                                    options=options, outputs=("labels", "probs") if self.with_probs else ("labels",))
        except (EngineError, BackendUnavailable) as exc:
            if backend != "auto":
                raise
            return [f"TensorRT failed, so ONNX Runtime runs instead: {exc}"]
        self.max_batch, self.max_frame, self.min_frame = profile.max_batch, profile.max_frame, profile.min_frame
        return []

    def _open_onnxruntime(self, model: ModelFile, choice: Choice, backend: str, limits: tuple[Any, Any, Any],
                          tensorrt: TensorRTOptions, options: OnnxRuntimeOptions) -> list[str]:
        """Set ``_impl`` to the ONNX Runtime backend for ``limits`` (max_batch, max_frame, min_frame); returns notes
        (TensorRT settings it ignores)."""
        notes = []
        if tensorrt.stream is not None or tensorrt.cuda_graph:
            if backend == "onnxruntime":
                raise UsageError("TensorRTOptions(stream=…, cuda_graph=…) apply to the TensorRT backend only")
            notes.append("TensorRTOptions(stream=…, cuda_graph=…) are ignored: they apply to TensorRT, and ONNX "
                         "Runtime runs")
        max_batch, max_frame, min_frame = limits
        self.max_batch = None if max_batch is None else check_batch(max_batch)
        self.max_frame = check_size(max_frame, "max_frame") or ORT_MAX_FRAME  # bounds the session's memory
        self.min_frame = check_size(min_frame, "min_frame")
        # The CPU instead of a GPU that does not load is an error only where a CUDA device was asked for by name.
        allow_cpu = options.cpu_fallback or backend == "auto" or not choice.requested.is_cuda
        self._impl = OrtBackend(model, device=choice.device, options=options, allow_cpu=allow_cpu)
        return notes

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, index = label value."""
        return self.metadata.classes

    @property
    def palette(self) -> np.ndarray:
        """Class colours. Shape: (C, 3) uint8 RGB."""
        return self._palette[: len(self.classes)].copy()

    def _run(self, batch: np.ndarray, probs: bool) -> dict[str, np.ndarray]:
        names = ("labels", "probs") if probs else ("labels",)
        step = self.max_batch or len(batch)
        with self._lock:
            if self._impl is None:
                raise UsageError("this Segmenter is closed; create a new one")
            if probs and not self.with_probs:
                raise UsageError("probs=True needs a Segmenter created with with_probs=True (the TensorRT engine then "
                                 "computes them; the model must have been exported with `ftadapt export --probs`)")
            parts, device_ms = [], []
            for i in range(0, len(batch), step):
                parts.append(self._impl.run(batch[i:i + step], names))
                device_ms.append(self._impl.device_ms())
            self.last_device_ms = None if None in device_ms else sum(device_ms)
        return {n: parts[0][n] if len(parts) == 1 else np.concatenate([p[n] for p in parts]) for n in names}

    def __call__(self, frame: np.ndarray, *, probs: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Label map of one frame. Shape: uint8 RGB (H, W, 3) → int32 (H, W); with ``probs`` also float32 (C, H, W).

        Raises UsageError for a frame that is not uint8 RGB H×W×3 within ``min_frame``/``max_frame`` (W×H).
        """
        frame = check_frame(frame, max_frame=self.max_frame, min_frame=self.min_frame)
        out = self._run(frame[None], probs)
        return (out["labels"][0], out["probs"][0]) if probs else out["labels"][0]

    def predict_batch(self, frames: Sequence[np.ndarray] | np.ndarray, *,
                      probs: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Label maps of equally sized frames. Shape: (N, H, W, 3) or N × (H, W, 3) uint8 → int32 (N, H, W)."""
        batch = stack_frames(frames, max_frame=self.max_frame, min_frame=self.min_frame)
        out = self._run(batch, probs)
        return (out["labels"], out["probs"]) if probs else out["labels"]

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Colour a label map with the model's palette (other values black). Shape: (..., H, W) → (..., H, W, 3)."""
        return colorize(labels, self._palette)

    def describe(self) -> dict[str, Any]:
        """What runs the model, for logs and reports (JSON-serialisable)."""
        return {"model": str(self.model_path), "backend": self.backend, "providers": list(self.providers),
                "device": self.device, "precision": self.metadata.precision,
                "working_size": list(self.metadata.working_size), "members": [m.name for m in self.metadata.members],
                "max_batch": self.max_batch, "max_frame": self.max_frame, "min_frame": self.min_frame,
                "with_probs": self.with_probs, "notes": list(self.notes),
                **(self._impl.description if self._impl is not None else {})}

    def close(self) -> None:
        """Release the engine, context, stream and buffers (or the session). Idempotent."""
        with self._lock:
            self._impl = None
            finalizer = getattr(self, "_finalizer", None)
            if finalizer is not None:
                finalizer()  # calls the backend's close() once

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._impl is None else f"backend={self.backend!r}, providers={list(self.providers)}"
        return f"Segmenter({str(self.model_path)!r}, {state})"


__all__ = ["Segmenter", "check_contract"]
