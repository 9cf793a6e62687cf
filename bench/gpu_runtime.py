"""The GPU check's runtime items (``ftadapt bench gpu``): ONNX Runtime CPU vs ONNX Runtime CUDA vs TensorRT on one
file, one call, one dict, and the deployment check.

    from ftadapt.bench.gpu_runtime import measure_runtime_gpu
    report = measure_runtime_gpu()            # or measure_runtime_gpu("ens.onnx")

Every backend is tried and any that cannot run here is reported as ``"not available: <reason>"`` instead of failing
(the usual reasons: ``tensorrt``/``pycuda`` not installed, the CPU-only ``onnxruntime`` wheel instead of
``onnxruntime-gpu``, CUDA/cuDNN libraries missing). ONNX Runtime CUDA counts as available only when the session
really got ``CUDAExecutionProvider``. TensorRT builds a static engine for the frame size (the recommended setting for
one camera) into ``engine_cache`` and reports the build time and how many layers run in FP16; with ``cuda-bindings``
installed it is also timed with CUDA-graph replay. Latency is wall clock per ``Segmenter`` call — host frame in,
host label map out, copies included — after warm-up (see ``ftadapt.bench.latency``).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ftadapt.bench.latency import random_frames, time_segmenter
from ftadapt.bench.random_models import WEIGHTS_NOTE, export_random_model
from ftadapt.bench.report import environment
from ftadapt.devices import DeviceError
from ftadapt.errors import FtadaptError
from ftadapt.runtime import BackendUnavailable, Segmenter, TensorRTOptions


class CheckFailed(FtadaptError):
    """A requirement of the GPU check did not hold (e.g. ONNX Runtime ran on the CPU while asked for CUDA)."""


def _measure(label: str, make: Any, frames: list, warmup: int, runs: int, extra: Any = None) -> dict[str, Any] | str:
    """Create a Segmenter with ``make()`` and time it. A backend that cannot start here gives "not available: …";
    one that starts but then fails gives "failed: …" — either way the other backends are still measured."""
    t0 = time.perf_counter()
    try:
        seg = make()
    except (FtadaptError, ImportError, OSError, RuntimeError) as exc:
        return f"not available: {exc}"
    try:
        with seg:
            row = {"backend": seg.backend, "providers": list(seg.providers),
                   "setup_s": round(time.perf_counter() - t0, 2)}
            problem = extra(seg, row) if extra is not None else None
            if problem:
                return f"not available: {problem}"
            row.update(time_segmenter(seg, frames, warmup=warmup, runs=runs))
    except (FtadaptError, OSError, RuntimeError) as exc:
        return f"failed: {type(exc).__name__}: {exc}"
    print(json.dumps({label: row}), flush=True)
    return row


def measure_runtime_gpu(model_path: str | Path | None = None, *, model: str = "deeplabv2-r101",
                        working_size: tuple[int, int] = (1024, 512), frame_size: tuple[int, int] = (2048, 1024),
                        precision: str = "fp32", warmup: int = 3, runs: int = 20, cpu_runs: int = 3,
                        engine_cache: str | Path | None = None, workdir: str | Path | None = None,
                        cuda_graph: bool = True) -> dict[str, Any]:
    """Latency of each backend on one model; see the module docstring.

    ``model_path``: an exported .onnx to time; None exports a random-init one-member ``model`` at ``working_size`` and
    ``precision`` first (into ``workdir``, reused when present). ``frame_size`` is (W, H); ``cpu_runs`` timed calls
    for the (slow) CPU backend, ``runs`` for the GPU ones. Returns a JSON-serialisable dict.
    """
    with tempfile.TemporaryDirectory(prefix="ftadapt-gpu-runtime-") as tmp:
        work = Path(workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        path = Path(model_path) if model_path else export_random_model(work, model, working_size, precision)
        export_s = time.perf_counter() - t0
        frames = random_frames(frame_size)
        cache = Path(engine_cache) if engine_cache else work / "engines"

        def cuda_only(seg: Segmenter, row: dict) -> str | None:
            if seg.providers[0] != "CUDAExecutionProvider":
                return f"ONNX Runtime gave {', '.join(seg.providers)} (needs onnxruntime-gpu with its CUDA and cuDNN)"
            return None

        def engine_info(seg: Segmenter, row: dict) -> None:
            info = seg.describe()
            row.update(tensorrt=info["tensorrt"], engine=info["engine"], static_profile=info["static_profile"])

        results: dict[str, Any] = {
            "onnxruntime-cpu": _measure("onnxruntime-cpu", lambda: Segmenter(path, "onnxruntime", device="cpu"),
                                        frames, 1, cpu_runs),
            "onnxruntime-cuda": _measure("onnxruntime-cuda", lambda: Segmenter(path, "onnxruntime", device=0),
                                         frames, warmup, runs, cuda_only),
            "tensorrt": _measure("tensorrt", lambda: Segmenter(path, "tensorrt", max_frame=frame_size,
                                                               min_frame=frame_size,
                                                               tensorrt=TensorRTOptions(engine_cache=cache)),
                                 frames, warmup, runs, engine_info),
        }
        if cuda_graph and isinstance(results["tensorrt"], dict):
            results["tensorrt-cuda-graph"] = _measure(
                "tensorrt-cuda-graph", lambda: Segmenter(path, "tensorrt", max_frame=frame_size, min_frame=frame_size,
                                                         tensorrt=TensorRTOptions(engine_cache=cache, cuda_graph=True)),
                frames, warmup, runs)
    return {"benchmark": "gpu_runtime", "model": str(model_path) if model_path else model,
            "weights": "given model" if model_path else WEIGHTS_NOTE, "precision": precision,
            "working_size": list(working_size), "frame_size": list(frame_size), "export_or_reuse_s": round(export_s, 2),
            "machine": environment("cuda"), "results": results,
            "timing": "wall clock per Segmenter call (host frame in, host int32 label map out), after warm-up"}


def _agreement(seg: Segmenter, batch: np.ndarray, expected: np.ndarray) -> float:
    return float(np.mean(seg.predict_batch(batch) == expected))


def deployment_check(path: str | Path, frame_size: tuple[int, int] = (2048, 1024),
                     engine_cache: str | Path | None = None) -> dict[str, Any]:
    """A file ``ftadapt export`` wrote, run as an application would, against ONNX Runtime on the CPU (the reference):
    ONNX Runtime CUDA — which must really run on CUDA, ``providers[0] == "CUDAExecutionProvider"``, else CheckFailed
    — and TensorRT with a static engine for ``frame_size`` (W, H), when TensorRT and pycuda import. Reports the share
    of identical labels on two random frames and what the TensorRT engine is (FP16 layers, build time)."""
    from ftadapt.runtime.trt_api import import_pycuda, import_tensorrt

    batch = np.stack(random_frames(frame_size, count=2, seed=1))
    with Segmenter(path, "onnxruntime", device="cpu") as seg:
        expected = seg.predict_batch(batch)
    report: dict[str, Any] = {"model": str(path), "frame_size": list(frame_size), "reference": "onnxruntime CPU"}
    try:
        seg = Segmenter(path, "onnxruntime", device=0)
    except (BackendUnavailable, DeviceError) as exc:
        raise CheckFailed(f"ONNX Runtime CUDA did not load: {exc}") from None
    with seg:
        if seg.providers[0] != "CUDAExecutionProvider":
            raise CheckFailed(f"ONNX Runtime gave {list(seg.providers)} for device 0, not CUDAExecutionProvider first")
        report["onnxruntime_cuda"] = {"providers": list(seg.providers), "notes": list(seg.notes),
                                      "identical_labels": _agreement(seg, batch, expected)}
    try:
        import_tensorrt()
        import_pycuda()
    except BackendUnavailable as exc:
        report["tensorrt"] = f"not available: {exc}"
        return report
    with Segmenter(path, "tensorrt", max_frame=frame_size, min_frame=frame_size,
                   tensorrt=TensorRTOptions(engine_cache=engine_cache)) as seg:
        info = seg.describe()
        report["tensorrt"] = {"tensorrt": info["tensorrt"], "tensorrt_cuda": info["tensorrt_cuda"],
                              "engine": info["engine"], "identical_labels": _agreement(seg, batch[:1], expected[:1])}
    return report
