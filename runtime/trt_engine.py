"""Build a TensorRT engine from the exported ONNX, or load it from the cache, and report how much of it runs in FP16.

The build follows ``reference/deploy.md`` §1.2–1.3: the ONNX is parsed from its path (so external weights load), the
network is strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` — required on 10.12+, accepted and
ignored on 11.x where strong typing is the only mode), no precision flag is ever set (FP16 comes from the graph),
TF32 is cleared so an FP32 export builds a true FP32 engine, the workspace is capped, the timing cache persists
between builds, the ``image`` input gets the optimization profile, and outputs the caller did not ask for (``probs``:
19× the label map) are unmarked so that the engine neither computes nor binds them. Before parsing, the graph is
checked against TensorRT's UINT8 rule (the uint8 ``image`` must feed a Cast and nothing else), so an old export fails
with the fix instead of a parser error. After a build the engine inspector counts the layers that run in half; an
FP16 export whose engine has none is refused (it would silently be an FP32 engine). TensorRT's own messages go to
the ``ftadapt.runtime.tensorrt`` logger; its errors are repeated in the ``EngineError`` of a failed build or load.

Every function expects the CUDA context of the target device to be current (``TrtBackend`` pushes it).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ftadapt.runtime.engine_cache import EngineCache, EngineKey, ShapeProfile
from ftadapt.runtime.errors import EngineError
from ftadapt.runtime.onnx_file import ModelFile, input_readers

if TYPE_CHECKING:
    import tensorrt as trt

DEFAULT_WORKSPACE_MB = 4096
OPTIMIZATION_LEVEL = 3  # TensorRT's default
# The build settings that shape the plan, recorded in the engine key so a change rebuilds (the workspace only bounds
# tactic choice and is left out).
BUILDER_SETTINGS = {"strongly_typed": True, "tf32": False, "optimization_level": OPTIMIZATION_LEVEL}
_HALF = re.compile(r"\b(FP16|Half)\b", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class EngineReport:
    """Where the engine came from: its cache file, whether it was built now (and in how many seconds), how many of
    its layers run in half precision (None when the inspector gave no detail), and notes worth logging."""

    path: str
    built: bool
    build_seconds: float | None
    half_layers: int | None
    layers: int | None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def count_half_layers(engine_information: str) -> tuple[int | None, int | None]:
    """(layers with an FP16 input or output, all layers) from the inspector's JSON engine information.

    With ``ProfilingVerbosity.DETAILED`` every layer is an object whose ``Inputs``/``Outputs`` carry a
    ``Format/Datatype`` text such as "Row major linear FP16 format"; with less detail layers are bare names and the
    half count is None.
    """
    try:
        layers = json.loads(engine_information).get("Layers", [])
    except (ValueError, AttributeError):
        return None, None
    if not all(isinstance(layer, dict) for layer in layers):
        return None, len(layers)
    half = 0
    for layer in layers:
        tensors = [t for side in ("Inputs", "Outputs") for t in layer.get(side, []) if isinstance(t, dict)]
        half += any(_HALF.search(str(t.get("Format/Datatype", ""))) for t in tensors)
    return half, len(layers)


def inspect_engine(trt: ModuleType, engine: trt.ICudaEngine) -> tuple[int | None, int | None]:
    """(half layers, layers) of a deserialized engine, via the engine inspector."""
    inspector = engine.create_engine_inspector()
    return count_half_layers(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def progress_monitor(trt: ModuleType) -> trt.IProgressMonitor:
    """A TensorRT build-progress monitor drawing one tqdm bar per build phase (on a terminal only)."""
    from tqdm import tqdm

    class BuildProgress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.bars[phase_name] = tqdm(total=num_steps, desc=f"TensorRT {phase_name}", unit="step",
                                         leave=parent_phase is None, position=len(self.bars), disable=None)

        def step_complete(self, phase_name: str, step: int) -> bool:
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.update(step + 1 - bar.n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return BuildProgress()


_LOGGERS: list = []  # [(tensorrt module, its logger)]: one per process (see trt_logger)


def trt_logger(trt: ModuleType) -> trt.ILogger:
    """The process's TensorRT logger: warnings and errors to the ``ftadapt.runtime.tensorrt`` logging logger (Python
    prints them to stderr when logging is not configured), errors also kept in its ``errors`` list. TensorRT keeps
    the first logger it is given for its global messages, so every Segmenter of the process shares this one."""
    if not _LOGGERS or _LOGGERS[0][0] is not trt:
        log = logging.getLogger("ftadapt.runtime.tensorrt")
        levels = {trt.ILogger.INTERNAL_ERROR: logging.ERROR, trt.ILogger.ERROR: logging.ERROR,
                  trt.ILogger.WARNING: logging.WARNING}

        class RecordingLogger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
                level = levels.get(severity)
                if level == logging.ERROR:
                    self.errors.append(msg)
                if level is not None:
                    log.log(level, "TensorRT: %s", msg)

        _LOGGERS[:] = [(trt, RecordingLogger())]
    return _LOGGERS[0][1]


def error_mark(logger: object) -> int:
    """How many errors ``logger`` has recorded so far (pass it to ``logged_errors`` after the call that may fail)."""
    return len(getattr(logger, "errors", []))


def logged_errors(logger: object, since: int) -> str:
    """TensorRT's errors logged after the first ``since`` ones (the last three), for an EngineError message."""
    errors = getattr(logger, "errors", [])[since:]
    return "; ".join(errors[-3:]) if errors else "TensorRT logged no error; its warnings are above"


def check_uint8_input(model: ModelFile) -> None:
    """EngineError unless the uint8 ``image`` feeds one Cast and nothing else: TensorRT supports UINT8 only as a
    network input or output, and rejects a uint8 input that a Transpose, Reshape or Shape reads (``docs/deploy.md``).
    Exports written before ftadapt cast first read it with a Transpose and two Shapes."""
    readers = input_readers(model.path, "image")
    if [op for op, _ in readers] != ["Cast"]:
        shown = ", ".join(f"{op} {name!r}" for op, name in readers) or "no node"
        raise EngineError(f"{model.path} reads its uint8 'image' with {shown}; TensorRT takes uint8 only into a Cast "
                          "that reads it directly, so it cannot build this graph. Re-export the model with this "
                          "version of ftadapt (`ftadapt export`, which casts first) or use backend='onnxruntime'")


def _keep_outputs(network: trt.INetworkDefinition, outputs: tuple[str, ...], path: object) -> None:
    """Unmark every network output not in ``outputs``: TensorRT then neither computes nor binds it."""
    for i in reversed(range(network.num_outputs)):
        tensor = network.get_output(i)
        if tensor.name not in outputs:
            network.unmark_output(tensor)
    kept = sorted(network.get_output(i).name for i in range(network.num_outputs))
    if kept != sorted(outputs):
        raise EngineError(f"{path} has no output {sorted(set(outputs) - set(kept))}; re-export it with "
                          "`ftadapt export` (--probs for probabilities)")


def build_plan(trt: ModuleType, logger: trt.ILogger, model: ModelFile, profile: ShapeProfile, *,
               workspace_mb: int, timing_cache: bytes, outputs: tuple[str, ...] = ("labels",)) -> tuple[bytes, bytes]:
    """Parse and build ``outputs`` only; returns (serialized plan, updated timing cache). EngineError with the parser's
    or the builder's messages."""
    check_uint8_input(model)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model.path)):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors)) or "no details"
        raise EngineError(f"TensorRT cannot parse {model.path}: {errors}. Check that the ONNX was written by "
                          "`ftadapt export` and that its opset is supported by this TensorRT, or use "
                          "backend='onnxruntime'")
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != ["image"]:
        raise EngineError(f"{model.path} has inputs {inputs}; the runtime expects exactly one, 'image'")
    _keep_outputs(network, outputs, model.path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    config.clear_flag(trt.BuilderFlag.TF32)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    config.builder_optimization_level = OPTIMIZATION_LEVEL
    monitor = progress_monitor(trt)  # a local keeps the Python object alive for the whole build
    config.progress_monitor = monitor
    shapes = builder.create_optimization_profile()
    shapes.set_shape("image", profile.min, profile.opt, profile.max)
    config.add_optimization_profile(shapes)
    try:
        cache = config.create_timing_cache(timing_cache)
        reused = config.set_timing_cache(cache, False)
    except (RuntimeError, TypeError, ValueError):  # an unreadable cache file
        reused = False
    if not reused:  # a damaged cache, or one from another TensorRT or GPU: start a fresh one
        config.set_timing_cache(config.create_timing_cache(b""), False)
    mark = error_mark(logger)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"TensorRT failed to build an engine for {model.path}: {logged_errors(logger, mark)}. "
                          "Use backend='onnxruntime' (backend='auto' falls back to it by itself)")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def _deserialize(runtime: trt.Runtime, plan: bytes) -> trt.ICudaEngine | None:
    """The engine, or None when TensorRT rejects the plan (it logs why; some versions raise instead)."""
    try:
        return runtime.deserialize_cuda_engine(plan)
    except (RuntimeError, TypeError, ValueError):
        return None


def load_or_build(trt: ModuleType, runtime: trt.Runtime, logger: trt.ILogger, model: ModelFile, key: EngineKey,
                  cache: EngineCache, *, build: bool = True,
                  workspace_mb: int = DEFAULT_WORKSPACE_MB) -> tuple[trt.ICudaEngine, EngineReport]:
    """The engine for ``key``: from the cache when a valid plan is there, else built (when ``build``) and cached.

    A cached plan that is stale, foreign or corrupt is never deserialized: it is rebuilt, or — with ``build=False``
    — refused with the reason. A plan whose bytes match its record but that TensorRT cannot deserialize was built by
    another TensorRT build (its key could not tell them apart); it is treated the same way.
    """
    lookup = cache.lookup(key, model.path.name)
    problem = lookup.problem
    if lookup.plan is not None:
        mark = error_mark(logger)
        engine = _deserialize(runtime, lookup.plan)
        if engine is not None:
            record = lookup.record or {}
            return engine, EngineReport(str(lookup.path), False, None, record.get("half_layers"), record.get("layers"))
        problem = (f"{lookup.path} is intact but TensorRT {key.tensorrt} ({key.cuda}) cannot load it: "
                   f"{logged_errors(logger, mark)}; it was built by another TensorRT build")
    if not build:
        why = problem or f"no engine for this model, TensorRT, GPU and profile in {cache.root}"
        raise EngineError(f"{why}. Build it with `ftadapt build-engine {model.path}` (the same --max-batch, "
                          "--max-frame, --min-frame, --opt-frame, --opt-batch and --probs) or let the Segmenter "
                          "build it (TensorRTOptions(build=True))")
    notes = [f"{problem}; rebuilt it"] if problem else []
    start = time.perf_counter()
    plan, timing = build_plan(trt, logger, model, key.profile, workspace_mb=workspace_mb,
                              timing_cache=cache.read_timing_cache(key), outputs=key.outputs)
    seconds = round(time.perf_counter() - start, 3)
    mark = error_mark(logger)
    engine = _deserialize(runtime, plan)
    if engine is None:
        raise EngineError(f"TensorRT built an engine for {model.path} but cannot deserialize it: "
                          f"{logged_errors(logger, mark)}")
    half, layers = inspect_engine(trt, engine)
    if key.precision == "fp16" and half == 0:
        raise EngineError(f"{model.path} is an FP16 export but none of the engine's {layers} layers runs in half "
                          "precision, so it would silently be an FP32 engine; re-export it with `ftadapt export "
                          "--precision fp16` (FP16 must be in the graph: TensorRT 11 has no FP16 builder flag)")
    if half is None:
        notes.append("the engine inspector gave no per-layer detail; the FP16 layer count is unknown")
    cache.write_timing_cache(key, timing)
    path = cache.store(key, model.path.name, plan, {"half_layers": half, "layers": layers, "build_seconds": seconds})
    return engine, EngineReport(str(path), True, seconds, half, layers, tuple(notes))


__all__ = ["BUILDER_SETTINGS", "DEFAULT_WORKSPACE_MB", "EngineReport", "build_plan", "check_uint8_input",
           "count_half_layers", "error_mark", "inspect_engine", "load_or_build", "logged_errors", "trt_logger"]
