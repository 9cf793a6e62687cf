"""The TensorRT backend: one engine, one execution context, one CUDA stream, buffers allocated once.

Execution follows ``reference/deploy.md`` §1.5–1.6 and §7.2: I/O tensors by name (``num_io_tensors``,
``get_tensor_name``, ``get_tensor_mode``), ``set_input_shape`` when the frame shape changes, device addresses bound
once with ``set_tensor_address``, ``execute_async_v3`` on a non-default stream, and page-locked host buffers plus
device buffers sized for the largest profile shape at start-up, so no frame allocates. The engine has only the
outputs asked for (``probs``, 19× the label map in FP32, only with ``outputs`` naming it). The optional CUDA graph
replays the enqueue for the current input shape; a new shape drops it and captures again (at one camera size: once).
With ``device_timing`` two CUDA events bracket the enqueue (or graph launch) on the stream, and ``device_ms()`` is the
device time of the last ``run`` — inference alone, without the copies (``reference/deploy.md`` §7.1).

CUDA context: the device's *primary* context is retained (once per device and process, and kept, as
``pycuda.autoprimaryctx`` does) and pushed around every call — what ``autoprimaryctx`` does at import, but for the
requested device and on whichever thread calls (a pushed context is per thread). Never ``pycuda.autoinit``: it
creates a second context that clashes with TensorRT, torch and any other user of the primary one. The caller
serialises calls (``Segmenter`` holds a lock).
"""
from __future__ import annotations

import math
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ftadapt.artifact import ArtifactInfo
from ftadapt.errors import UsageError
from ftadapt.runtime.backends import Backend
from ftadapt.runtime.engine_cache import EngineCache, EngineKey, ShapeProfile
from ftadapt.runtime.errors import EngineError
from ftadapt.runtime.onnx_file import ModelFile
from ftadapt.runtime.options import TensorRTOptions
from ftadapt.runtime.trt_api import import_pycuda, import_tensorrt, numpy_dtype, tensorrt_cuda
from ftadapt.runtime.trt_cuda_graph import TrtCudaGraph, cuda_runtime
from ftadapt.runtime.trt_engine import (
    BUILDER_SETTINGS,
    DEFAULT_WORKSPACE_MB,
    error_mark,
    load_or_build,
    logged_errors,
    trt_logger,
)

if TYPE_CHECKING:
    import tensorrt as trt


def buffer_bytes(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype]) -> dict[str, int]:
    """Bytes to allocate per tensor for its largest shape; a dimension still unknown (-1) is an error."""
    sizes = {}
    for name, shape in shapes.items():
        if any(d < 0 for d in shape):
            raise EngineError(f"the engine cannot tell the size of {name!r} at the largest input (shape {shape}); "
                              "its output shape depends on the data, which the runtime does not support")
        sizes[name] = math.prod(shape) * np.dtype(dtypes[name]).itemsize
    return sizes


def gpu_identity(cuda: ModuleType, device: int) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of a CUDA device, for the engine-cache key."""
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return dev.name(), f"{major}.{minor}"


_PRIMARY_CONTEXTS: dict[int, Any] = {}


def primary_context(cuda: ModuleType, device: int) -> Any:
    """The retained primary context of ``device``; retained once and never released, like ``autoprimaryctx``."""
    if device not in _PRIMARY_CONTEXTS:
        _PRIMARY_CONTEXTS[device] = cuda.Device(device).retain_primary_context()
    return _PRIMARY_CONTEXTS[device]


def _tensors(trt: ModuleType, engine: trt.ICudaEngine) -> tuple[list[str], list[str]]:
    """(input names, output names) of the engine, in its I/O order."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    return inputs, [n for n in names if n not in inputs]


def check_labels_type(model: ModelFile) -> None:
    """EngineError for a graph whose ``labels`` are not int32. ``ftadapt export`` writes int32; TensorRT's operator
    docs allow an int64 → uint8 Cast into a uint8 network output, but no engine with one has been run, so the TensorRT
    backend does not take the claim on trust (ONNX Runtime runs such a file)."""
    labels = next((t for t in model.outputs if t.name == "labels"), None)
    if labels is not None and labels.dtype != "int32":
        raise EngineError(f"{model.path} returns {labels.dtype} labels; the TensorRT backend runs int32 labels only "
                          "(uint8 network outputs are documented but unverified). Re-export the model with `ftadapt "
                          "export` (int32 labels) or use backend='onnxruntime'")


class TrtBackend(Backend):
    """Runs an exported model with TensorRT on the CUDA device ``device`` (see the module docstring): an engine for
    ``profile`` computing ``outputs``, from the engine cache or built into it, set up as ``options`` say."""

    name = "tensorrt"

    def __init__(self, model: ModelFile, info: ArtifactInfo, *, device: int, profile: ShapeProfile,
                 options: TensorRTOptions, outputs: tuple[str, ...] = ("labels",)) -> None:
        cache = EngineCache(options.engine_cache)
        trt, cuda = import_tensorrt(), import_pycuda()
        check_labels_type(model)
        if options.cuda_graph:
            cuda_runtime()  # fail now, not at the second frame, when cuda-bindings is missing
        stream = options.stream
        if stream is not None and not isinstance(stream, cuda.Stream):
            raise UsageError(f"TensorRTOptions(stream=…) must be a pycuda.driver.Stream (the runtime copies with "
                             f"pycuda), got {type(stream).__name__}")
        self._trt, self._cuda, self.profile = trt, cuda, profile
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._graph: Any = None
        self._device_mem: dict[str, Any] = {}
        self._host: dict[str, np.ndarray] = {}
        self._runtime: trt.Runtime | None = None
        self._stream: Any = stream
        self._own_stream = stream is None
        self._want_graph = options.cuda_graph
        self._device_timing = options.device_timing
        self._events: tuple[Any, Any] | None = None
        self._device_ms: float | None = None
        self._ctx = primary_context(cuda, device)
        self._ctx.push()
        try:
            gpu, capability = gpu_identity(cuda, device)
            key = EngineKey(model_sha256=model.sha256(), tensorrt=trt.__version__, gpu=gpu,
                            compute_capability=capability, precision=info.precision, profile=profile,
                            builder=BUILDER_SETTINGS, cuda=tensorrt_cuda(trt), outputs=tuple(outputs))
            self._logger = trt_logger(trt)
            self._runtime = trt.Runtime(self._logger)
            self._engine, self.report = load_or_build(trt, self._runtime, self._logger, model, key, cache,
                                                      build=options.build,
                                                      workspace_mb=options.workspace_mb or DEFAULT_WORKSPACE_MB)
            self._setup()
        except BaseException:
            self._release()  # free what was allocated while the context is still current
            raise
        finally:
            cuda.Context.pop()
        self.providers = ("TensorRT",)
        self.notes = self.report.notes
        self.description = {"tensorrt": trt.__version__, "tensorrt_cuda": key.cuda, "gpu": gpu,
                            "compute_capability": capability, "engine": self.report.to_dict(),
                            "profile": profile.to_dict(), "static_profile": profile.static,
                            "cuda_graph": options.cuda_graph}

    def _setup(self) -> None:
        """Check the engine's I/O against the contract, size and allocate every buffer once, bind the addresses."""
        trt, cuda, engine = self._trt, self._cuda, self._engine
        inputs, self._outputs = _tensors(trt, engine)
        self._dtypes = {n: numpy_dtype(trt, engine.get_tensor_dtype(n)) for n in inputs + self._outputs}
        if inputs != ["image"] or self._dtypes["image"] != np.uint8:
            raise EngineError(f"the engine's inputs are {inputs}; expected one uint8 'image' (re-export the model)")
        if "labels" not in self._outputs or self._dtypes["labels"] != np.int32:
            raise EngineError(f"the engine's outputs are {self._outputs}; expected an int32 'labels' (re-export)")
        self._context = engine.create_execution_context()
        if self._context is None:
            raise EngineError("TensorRT could not create an execution context (out of device memory?); lower "
                              "max_batch/max_frame or use backend='onnxruntime'")
        self._set_shape(self.profile.max)
        shapes = {"image": self.profile.max, **{n: self._shapes[n] for n in self._outputs}}
        self._nbytes = buffer_bytes(shapes, self._dtypes)
        for name, nbytes in self._nbytes.items():
            try:
                self._device_mem[name] = cuda.mem_alloc(max(nbytes, 1))
                self._host[name] = cuda.pagelocked_empty(nbytes // self._dtypes[name].itemsize, self._dtypes[name])
            except cuda.Error as exc:
                raise EngineError(f"cannot allocate the {nbytes / 2**20:.0f} MiB buffers of {name!r} ({exc}); lower "
                                  "max_batch/max_frame or use backend='onnxruntime'") from None
            if not self._context.set_tensor_address(name, int(self._device_mem[name])):
                raise EngineError(f"TensorRT refused the device address of {name!r}")
        if self._own_stream:
            self._stream = cuda.Stream()
        if self._device_timing:
            self._events = (cuda.Event(), cuda.Event())

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        """Set the input shape; a CUDA graph captured for another shape is dropped (a graph freezes shapes)."""
        if not self._context.set_input_shape("image", shape):
            raise UsageError(f"input shape {shape} is outside the engine's profile {self.profile.to_dict()}")
        self._shape = tuple(shape)
        self._shapes = {n: tuple(self._context.get_tensor_shape(n)) for n in self._outputs}
        if self._graph is not None:
            self._graph.close()
            self._graph = None
            self._want_graph = True  # one plain enqueue at the new shape, then a new capture

    def _enqueue(self) -> None:
        mark = error_mark(self._logger)
        if not self._context.execute_async_v3(self._stream.handle):
            raise EngineError(f"TensorRT failed to enqueue the engine: {logged_errors(self._logger, mark)}")

    def _run_graph_or_enqueue(self) -> None:
        if self._graph is not None:
            self._graph.launch()
            return
        self._enqueue()
        if self._want_graph:  # the first enqueue ran outside capture; capture it now, replay from the next call
            self._want_graph = False
            self._stream.synchronize()
            try:
                self._graph = TrtCudaGraph(self._stream.handle, self._enqueue)
            except EngineError as exc:  # an engine with uncapturable work: keep enqueueing
                self.description["cuda_graph"] = f"off: capture failed ({exc})"
                warnings.warn(f"CUDA graph capture failed, running without it: {exc}", RuntimeWarning, stacklevel=4)

    def run(self, batch: np.ndarray, outputs: tuple[str, ...] = ("labels",)) -> dict[str, np.ndarray]:
        """Shape: uint8 N×H×W×3 within the profile → {name: array} for the requested outputs."""
        cuda = self._cuda
        self._ctx.push()
        try:
            if batch.shape != self._shape:
                self._set_shape(batch.shape)
            host_in = self._host["image"][: batch.size]
            host_in[...] = batch.reshape(-1)
            cuda.memcpy_htod_async(self._device_mem["image"], host_in, self._stream)
            if self._events is not None:
                self._events[0].record(self._stream)
            self._run_graph_or_enqueue()
            if self._events is not None:
                self._events[1].record(self._stream)
            views = {}
            for name in outputs:
                shape = self._shapes[name]
                views[name] = self._host[name][: math.prod(shape)]
                cuda.memcpy_dtoh_async(views[name], self._device_mem[name], self._stream)
            self._stream.synchronize()
            if self._events is not None:
                self._device_ms = self._events[0].time_till(self._events[1])
            return {name: view.reshape(self._shapes[name]).copy() for name, view in views.items()}
        finally:
            cuda.Context.pop()

    def device_ms(self) -> float | None:
        """The last ``run``'s time on the device (CUDA events around the enqueue), with ``device_timing`` only."""
        return self._device_ms

    def _release(self) -> None:
        """Free what this backend created, newest first, while its CUDA context is current (CUDA frees need it)."""
        if self._graph is not None:
            self._graph.close()
        self._graph = self._context = self._engine = self._runtime = self._events = None
        for mem in self._device_mem.values():
            mem.free()
        for host in self._host.values():
            free = getattr(host.base, "free", None)  # pycuda's HostAllocation behind a page-locked array
            if free is not None:
                free()
        self._device_mem, self._host = {}, {}
        if self._own_stream:
            self._stream = None

    def close(self) -> None:
        """Free everything, with the device's context current. Idempotent."""
        if self._ctx is None:
            return
        self._ctx.push()
        try:
            self._release()
        finally:
            self._cuda.Context.pop()
            self._ctx = None


__all__ = ["TrtBackend", "buffer_bytes", "check_labels_type", "gpu_identity"]
