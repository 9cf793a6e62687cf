"""In-process stand-ins for ``tensorrt``, ``pycuda.driver`` and ``cuda.bindings.runtime``, for CPU tests of the
TensorRT backend's logic (cache, build flow, buffers, shapes, chunking, CUDA-graph replay, error paths).

They model only what the backend calls, with the names of the real API (``test_runtime_trt`` checks that every
public member of the fake TensorRT classes exists in the 11.4 API surface). "Device memory" is a dict of bytearrays
keyed by fake addresses; the fake engine computes the toy model of ``onnx_models`` (label = argmax over RGB) from
the bytes at the input address and writes int32 labels (and float32 one-hot "probs") at the output addresses.
A plan is JSON naming the model's I/O, precision, profile and how many layers "run in half".
"""
from __future__ import annotations

import json
import types

import numpy as np

from ftadapt.runtime.onnx_file import read_model_file

MEMORY: dict[int, bytearray] = {}
STATS = {"builds": 0, "enqueues": 0, "graph_launches": 0, "pushes": 0, "pops": 0, "flags_set": 0}
CAPTURE: list = []  # while a stream capture is open: the enqueues it recorded
# The fake device's clock: each computed frame takes DEVICE_MS_PER_FRAME of it, copies take none; fake CUDA events read
# it, so a test knows exactly what events around an enqueue must measure.
DEVICE_MS_PER_FRAME = 2.5
DEVICE_CLOCK = {"ms": 0.0}


def _enum(name: str, *members: str) -> type:
    return type(name, (), {m: f"{name}.{m}" for m in members})


# ---- tensorrt -------------------------------------------------------------------------------------------------
DataType = _enum("DataType", "FLOAT", "HALF", "INT8", "INT32", "INT64", "UINT8", "BOOL")
TensorIOMode = _enum("TensorIOMode", "INPUT", "OUTPUT", "NONE")
BuilderFlag = _enum("BuilderFlag", "TF32")
MemoryPoolType = _enum("MemoryPoolType", "WORKSPACE")
ProfilingVerbosity = _enum("ProfilingVerbosity", "DETAILED")
LayerInformationFormat = _enum("LayerInformationFormat", "JSON")
NetworkDefinitionCreationFlag = type("NetworkDefinitionCreationFlag", (), {"STRONGLY_TYPED": 1})
_DTYPES = {"uint8": DataType.UINT8, "int32": DataType.INT32, "float32": DataType.FLOAT, "int64": DataType.INT64}


class ILogger:
    """The base class of Python loggers; the fake builder and runtime report their failures through ``log``."""

    Severity = _enum("Severity", "INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")
    INTERNAL_ERROR, ERROR, WARNING = Severity.INTERNAL_ERROR, Severity.ERROR, Severity.WARNING
    INFO, VERBOSE = Severity.INFO, Severity.VERBOSE


class _Tensor:
    def __init__(self, name: str) -> None:
        self.name = name


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags, self.model, self.outputs = flags, None, []

    @property
    def num_inputs(self) -> int:
        return len(self.model.inputs)

    def get_input(self, index: int) -> _Tensor:
        return _Tensor(self.model.inputs[index].name)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_output(self, index: int) -> _Tensor:
        return _Tensor(self.outputs[index])

    def unmark_output(self, tensor: _Tensor) -> None:
        self.outputs.remove(tensor.name)


class ParserError:
    def __init__(self, text: str) -> None:
        self.text = text

    def desc(self) -> str:
        return self.text


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self.network, self.errors = network, []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> ParserError:
        return self.errors[index]

    def parse_from_file(self, model: str) -> bool:
        if "unparseable" in model:
            self.errors = [ParserError("node 3 (Foo): unsupported operator")]
            return False
        self.network.model = read_model_file(model)
        self.network.outputs = [t.name for t in self.network.model.outputs]
        return True


class ITimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+"


class IOptimizationProfile:
    def set_shape(self, input: str, min, opt, max) -> None:
        self.shapes = {"input": input, "min": list(min), "opt": list(opt), "max": list(max)}


class IBuilderConfig:
    def __init__(self) -> None:
        self.cleared, self.profiles, self.pool = [], [], {}
        self.profiling_verbosity = self.builder_optimization_level = self.progress_monitor = None
        self.cache = None

    def set_memory_pool_limit(self, pool: str, pool_size: int) -> None:
        self.pool[pool] = pool_size

    def clear_flag(self, flag: str) -> None:
        self.cleared.append(flag)

    def set_flag(self, flag: str) -> None:
        STATS["flags_set"] += 1

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        return ITimingCache(bytes(serialized_timing_cache))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        self.cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache:
        return self.cache


class IProgressMonitor:
    """Base class of build-progress monitors; the fake builder reports one phase of three steps."""


class Builder:
    half_layers = 5  # what the next build's inspector reports; tests set it to 0 to fake an FP32 engine
    fail_with = None  # an error message: the next build logs it and returns None (e.g. out of memory)

    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
        STATS["builds"] += 1
        if Builder.fail_with:
            self.logger.log(ILogger.ERROR, Builder.fail_with)
            return None
        monitor = getattr(config, "progress_monitor", None)
        if monitor is not None:
            monitor.phase_start("Building engine", None, 3)
            for step in range(3):
                monitor.step_complete("Building engine", step)
            monitor.phase_finish("Building engine")
        model = network.model
        plan = {"outputs": {t.name: t.dtype for t in model.outputs if t.name in network.outputs},
                "profile": config.profiles[0].shapes, "half": Builder.half_layers, "strongly_typed": network.flags,
                "workspace": config.pool.get(MemoryPoolType.WORKSPACE),
                "tf32_cleared": BuilderFlag.TF32 in config.cleared, "timing_cache": config.cache.data.decode(),
                "build": Runtime.build}
        return json.dumps(plan).encode()


class EngineInspector:
    def __init__(self, half: int) -> None:
        self.half = half

    def get_engine_information(self, format: str) -> str:
        fp16 = {"Outputs": [{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]}
        fp32 = {"Outputs": [{"Format/Datatype": "Row major linear FP32"}]}
        return json.dumps({"Layers": [fp16] * self.half + [fp32] * 3, "Bindings": ["image", "labels"]})


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine, self.addresses, self.shape = engine, {}, None

    def set_input_shape(self, name: str, shape) -> bool:
        lo, hi = self.engine.plan["profile"]["min"], self.engine.plan["profile"]["max"]
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        n, h, w, _ = self.shape
        return (n, 19, h, w) if name == "probs" else (n, h, w)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.addresses[name] = memory
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        if CAPTURE and CAPTURE[0] == stream_handle:  # a graph freezes the shape it was captured with
            shape = self.shape
            CAPTURE.append(lambda: self._compute(shape))
        else:
            self._compute(self.shape)
        return True

    def _compute(self, shape: tuple[int, ...]) -> None:
        STATS["enqueues"] += 1
        n, h, w, _ = shape
        DEVICE_CLOCK["ms"] += DEVICE_MS_PER_FRAME * n
        frames = np.frombuffer(MEMORY[self.addresses["image"]], np.uint8, n * h * w * 3).reshape(n, h, w, 3)
        labels = frames.argmax(-1).astype(np.int32)
        MEMORY[self.addresses["labels"]][: labels.nbytes] = labels.tobytes()
        if "probs" in self.addresses:
            probs = (np.arange(19)[None, :, None, None] == labels[:, None]).astype(np.float32)
            MEMORY[self.addresses["probs"]][: probs.nbytes] = probs.tobytes()


class ICudaEngine:
    def __init__(self, plan: dict) -> None:
        self.plan = plan
        self.names = ["image", *plan["outputs"]]

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> str:
        return TensorIOMode.INPUT if name == "image" else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> str:
        return DataType.UINT8 if name == "image" else _DTYPES[self.plan["outputs"][name]]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)

    def create_engine_inspector(self) -> EngineInspector:
        return EngineInspector(self.plan["half"])


class Runtime:
    build = "cuda13"  # plans record the build that wrote them; another build's plan is refused, as TensorRT does

    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        try:
            plan = json.loads(bytes(serialized_engine))
        except ValueError:
            return None
        if plan.setdefault("build", Runtime.build) != Runtime.build:
            self.logger.log(ILogger.ERROR, f"the plan was built by TensorRT for {plan['build']}")
            return None
        return ICudaEngine(plan)


def tensorrt_module(version: str = "11.4.0.106") -> types.ModuleType:
    module = types.ModuleType("tensorrt")
    for name, value in globals().items():
        if isinstance(value, type) and not name.startswith("_"):
            setattr(module, name, value)
    module.__version__ = version
    return module


# ---- pycuda.driver ----------------------------------------------------------------------------------------------
class _Error(Exception):
    pass


class _DeviceAllocation:
    _next = 0x1000

    def __init__(self, nbytes: int) -> None:
        self.ptr = _DeviceAllocation._next
        _DeviceAllocation._next += nbytes + 256
        MEMORY[self.ptr] = bytearray(nbytes)

    def __int__(self) -> int:
        return self.ptr

    def free(self) -> None:
        MEMORY.pop(self.ptr, None)


class _Context:
    def push(self) -> None:
        STATS["pushes"] += 1

    @staticmethod
    def pop() -> None:
        STATS["pops"] += 1


class _Device:
    def __init__(self, index: int) -> None:
        self.index = index

    def name(self) -> str:
        return "Fake GPU 9000"

    def compute_capability(self) -> tuple[int, int]:
        return 8, 9

    def retain_primary_context(self) -> _Context:
        return _Context()


class _Stream:
    _next = 7

    def __init__(self) -> None:
        self.handle = _Stream._next
        _Stream._next += 1

    def synchronize(self) -> None:
        pass


class _Event:
    def __init__(self, flags: int = 0) -> None:
        self.at: float | None = None

    def record(self, stream: _Stream | None = None) -> _Event:
        self.at = DEVICE_CLOCK["ms"]
        return self

    def time_till(self, end: _Event) -> float:
        return end.at - self.at


def _htod(dest: _DeviceAllocation, src: np.ndarray, stream: _Stream) -> None:
    MEMORY[int(dest)][: src.nbytes] = src.tobytes()


def _dtoh(dest: np.ndarray, src: _DeviceAllocation, stream: _Stream) -> None:
    dest[...] = np.frombuffer(MEMORY[int(src)], dest.dtype, dest.size)


def pycuda_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """(``pycuda`` package, ``pycuda.driver``) to put into ``sys.modules``."""
    driver = types.ModuleType("pycuda.driver")
    driver.init = lambda: None
    driver.Error, driver.Device, driver.Context, driver.Stream = _Error, _Device, _Context, _Stream
    driver.Event = _Event
    driver.mem_alloc = _DeviceAllocation
    driver.pagelocked_empty = lambda n, dtype: np.empty(n, dtype)
    driver.memcpy_htod_async, driver.memcpy_dtoh_async = _htod, _dtoh
    package = types.ModuleType("pycuda")
    package.driver = driver
    return package, driver


# ---- cuda.bindings.runtime ------------------------------------------------------------------------------------------
def cuda_runtime_module() -> types.ModuleType:
    """Stream capture records the enqueues issued on the capturing stream; a graph launch replays them."""
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaStream_t = int
    rt.cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def begin(stream, mode):
        CAPTURE[:] = [stream]
        return (0,)

    def end(stream):
        recorded = CAPTURE[1:]
        CAPTURE.clear()
        return 0, recorded

    def launch(graph_exec, stream):
        STATS["graph_launches"] += 1
        for step in graph_exec:
            step()
        return (0,)

    rt.cudaStreamBeginCapture, rt.cudaStreamEndCapture = begin, end
    rt.cudaGraphInstantiate = lambda graph, flags: (0, list(graph))
    rt.cudaGraphDestroy = rt.cudaGraphExecDestroy = lambda graph: (0,)
    rt.cudaGraphLaunch = launch
    return rt
