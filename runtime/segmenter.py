"""``Segmenter``: numpy frames in, label maps out — the one class an application embeds.

    from ftadapt.runtime import Segmenter

    with Segmenter("ensemble.onnx") as seg:          # backend="auto": TensorRT, else ONNX Runtime CUDA, else CPU
        labels = seg(frame)                          # uint8 RGB H×W×3 → int32 H×W trainIds
        print(seg.backend, seg.providers, seg.notes)
        colours = seg.colorize(labels)

The model is the ONNX file ``ftadapt export`` wrote (DESIGN.md §4): pre-processing, the ensemble and the argmax are
inside it, so frames go in as they come from the camera (RGB, any size within ``max_size``). Its metadata gives the
class names, the palette and the precision.

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

from ftadapt.artifact import ArtifactError, ArtifactInfo
from ftadapt.errors import UsageError
from ftadapt.labels import colorize, palette_table
from ftadapt.runtime.backends import BackendUnavailable, choose_backend
from ftadapt.runtime.engine_cache import EngineCache, EngineError, compute_profile
from ftadapt.runtime.frames import ORT_MAX_SIZE, check_batch, check_frame, check_size, stack_frames
from ftadapt.runtime.onnx_file import ModelFile, read_model_file
from ftadapt.runtime.ort_backend import OrtBackend
from ftadapt.runtime.trt_backend import TrtBackend
from ftadapt.runtime.trt_engine import DEFAULT_WORKSPACE_MB


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
        device: CUDA device index, or "cpu" (ONNX Runtime on the CPU).
        providers: ONNX Runtime providers to request instead of CUDA-then-CPU (e.g. with TensorRT's EP first).
        engine_cache: folder of TensorRT engines (default ``~/.cache/ftadapt/engines``).
        max_batch: largest batch one engine call takes (TensorRT; default 1). Larger batches are split.
        max_size: (H, W) of the largest frame (TensorRT default 1024×2048; ONNX Runtime default 4096×4096, which
            bounds its memory: it needs about 110 bytes per pixel of frame).
        stream: a ``pycuda.driver.Stream`` for TensorRT work (default: the Segmenter's own non-default stream).
        min_size: (H, W) of the smallest frame (TensorRT, default 1×1); ``min_size == max_size`` and
            ``max_batch == 1`` give a static engine (fixed camera resolution): the best tactics for that one shape.
        threads: ONNX Runtime intra-op threads.
        build: build a missing or invalid TensorRT engine (False: raise instead, for devices that must not build).
        cuda_graph: replay TensorRT's enqueue as a CUDA graph, captured per input shape (needs ``cuda-bindings``;
            pays off at one camera size).
        workspace_mb: TensorRT builder workspace limit.
        with_probs: also compute the fused probabilities, so that calls may pass ``probs=True`` (the model must have
            been exported with ``--probs``). TensorRT otherwise builds its engine without that output — no
            C×H×W×4-byte buffer per frame — and ONNX Runtime copies it only on the calls that ask.
        opt_batch, opt_size: the batch and (H, W) TensorRT tunes its tactics for (default: 1 frame of ``max_size``,
            one camera frame per call); part of the engine's cache key.
        cpu_fallback: ``backend="onnxruntime"`` with a GPU ``device``: run on the CPU, with a warning, when ONNX
            Runtime cannot load its CUDA/TensorRT provider (default: raise BackendUnavailable naming the fix).
            ``backend="auto"`` always falls back.
        device_timing: TensorRT: time each call's inference on the device with CUDA events around the enqueue (no
            copies); ``last_device_ms`` then holds the last call's device time. It stays None on ONNX Runtime, which
            exposes no events around its run.
    """

    def __init__(self, model_path: str | os.PathLike, backend: str = "auto", device: int | str = 0,
                 providers: Sequence[Any] | None = None, engine_cache: str | os.PathLike | None = None,
                 max_batch: int | None = None, max_size: tuple[int, int] | None = None, stream: object = None, *,
                 min_size: tuple[int, int] | None = None, threads: int | None = None, build: bool = True,
                 cuda_graph: bool = False, workspace_mb: int | None = None, with_probs: bool = False,
                 opt_batch: int | None = None, opt_size: tuple[int, int] | None = None,
                 cpu_fallback: bool = False, device_timing: bool = False) -> None:
        self._lock = threading.Lock()
        self.last_device_ms: float | None = None
        self._impl: Any = None
        self.model_path = Path(model_path)
        model = read_model_file(model_path)
        self.metadata = ArtifactInfo.from_props(model.metadata, source=str(model_path))
        check_contract(model)
        if with_probs and "probs" not in {t.name for t in model.outputs}:
            raise UsageError(f"with_probs=True, but {self.model_path.name} has no 'probs' output; export it with "
                             "`ftadapt export --probs`")
        choice = choose_backend(backend, device)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise UsageError(f"threads={threads!r}: expected a positive integer")
        self.with_probs, self.device, notes = bool(with_probs), device, list(choice.notes)
        if choice.backend == "tensorrt":
            if providers is not None:
                raise UsageError("providers= configures ONNX Runtime; drop it or pass backend='onnxruntime'")
            profile = compute_profile(max_batch, max_size, min_size, opt_batch=opt_batch, opt_size=opt_size)
            try:
                self._impl = TrtBackend(model, self.metadata, device=device, profile=profile,
                                        cache=EngineCache(engine_cache), build=build, stream=stream,
                                        cuda_graph=cuda_graph, workspace_mb=workspace_mb or DEFAULT_WORKSPACE_MB,
                                        outputs=("labels", "probs") if with_probs else ("labels",),
                                        device_timing=device_timing)
                self.max_batch, self.max_size, self.min_size = profile.max_batch, profile.max_size, profile.min_size
            except (EngineError, BackendUnavailable) as exc:
                if backend != "auto":
                    raise
                notes.append(f"TensorRT failed, so ONNX Runtime runs instead: {exc}")
        if self._impl is None:
            if stream is not None or cuda_graph:
                if backend == "onnxruntime":
                    raise UsageError("stream= and cuda_graph= apply to the TensorRT backend only")
                notes.append("stream= and cuda_graph= are ignored: they apply to TensorRT, and ONNX Runtime runs")
            self.max_batch = None if max_batch is None else check_batch(max_batch)
            self.max_size = check_size(max_size, "max_size") or ORT_MAX_SIZE  # bounds the session's memory
            self.min_size = check_size(min_size, "min_size")
            self._impl = OrtBackend(model, device=device, providers=None if providers is None else list(providers),
                                    threads=threads, cpu_fallback=cpu_fallback or backend == "auto")
        self.backend: str = self._impl.name
        self.providers: tuple[str, ...] = self._impl.providers
        self.notes: tuple[str, ...] = tuple(notes) + tuple(self._impl.notes)
        self._palette = palette_table(self.metadata.palette)
        # Releases the backend if the caller never closes it: at garbage collection or, at the latest, before the
        # interpreter tears down modules (pycuda and TensorRT need their context alive to free memory).
        self._finalizer = weakref.finalize(self, self._impl.close)

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
                device_ms.append(getattr(self._impl, "device_ms", None))
            self.last_device_ms = None if None in device_ms else sum(device_ms)
        return {n: parts[0][n] if len(parts) == 1 else np.concatenate([p[n] for p in parts]) for n in names}

    def __call__(self, frame: np.ndarray, *, probs: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Label map of one frame. Shape: uint8 RGB (H, W, 3) → int32 (H, W); with ``probs`` also float32 (C, H, W).

        Raises UsageError for a frame that is not uint8 RGB H×W×3 within ``min_size``/``max_size``.
        """
        frame = check_frame(frame, max_size=self.max_size, min_size=self.min_size)
        out = self._run(frame[None], probs)
        return (out["labels"][0], out["probs"][0]) if probs else out["labels"][0]

    def predict_batch(self, frames: Sequence[np.ndarray] | np.ndarray, *,
                      probs: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Label maps of equally sized frames. Shape: (N, H, W, 3) or N × (H, W, 3) uint8 → int32 (N, H, W)."""
        batch = stack_frames(frames, max_size=self.max_size, min_size=self.min_size)
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
                "max_batch": self.max_batch, "max_size": self.max_size, "min_size": self.min_size,
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
