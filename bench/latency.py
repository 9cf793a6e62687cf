"""Latency: ``ftadapt bench latency`` — per backend, precision and batch size, what an application waits for.

A timed call is host frames in, host label maps out (``ftadapt.bench.runners``): decoding is excluded (frames are
decoded once, before timing), pre-processing, transfers, inference, upsampling and argmax are included. For each
exported file (``--model``, or ``--random MODEL``: random-init members exported here, since latency does not depend on
weight values) and each backend — ONNX Runtime and TensorRT through ``ftadapt.runtime.Segmenter``, PyTorch running the
exported graph's own module (rebuilt from ``--checkpoints``) — the bench makes warm-up calls (session set-up, lazy
kernel loading, cuDNN autotuning, engine tactic loading are not timed), then times ``runs`` calls per batch size
(1, and on GPUs 2, 4, 8 until one does not fit in memory) and reports p50 / p90 / p99 and the mean per call, the
same per frame, and frames per second. On GPUs it adds the pure device time of each call (CUDA events around the
inference: TensorRT and PyTorch; ONNX Runtime exposes none), the peak of PyTorch's allocator and how much the device's
used memory grew while the backend ran. Frames are random uint8 noise at the camera size (2048×1024 by default),
rotated over several buffers (never zeros, never one cached frame). Every report carries its environment
(``ftadapt.bench.report.environment``) and every row the providers it really ran on, its precision and working size.
Timing an exported file on ONNX Runtime or TensorRT needs neither torch nor onnx (the runtime install); the pytorch
backend and ``--random`` exports do, and say so when they are missing.
"""
from __future__ import annotations

import importlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ftadapt.bench.random_models import WEIGHTS_NOTE, export_random_model, random_checkpoints
from ftadapt.bench.report import environment
from ftadapt.bench.runners import Runner, SegmenterRunner, TorchRunner, device_used_bytes
from ftadapt.devices import Device, DeviceError, DeviceLike, resolve
from ftadapt.errors import FtadaptError, UsageError
from ftadapt.runtime.onnx_file import read_model_file

DEFAULT_RUNS = {"tiny": 30, "deeplabv2-r101": 5}  # on a CPU; 50 on a GPU
GPU_BATCHES, CPU_BATCHES = (1, 2, 4, 8), (1,)
BACKENDS = ("onnxruntime", "pytorch", "tensorrt")
TIMING = ("wall clock per call: host uint8 frames in, host int32 label maps out (pre-processing, transfers, "
          "inference, upsampling, argmax), after warm-up; decoding excluded")
_OOM_WORDS = ("out of memory", "failed to allocate", "cannot allocate", "could not be allocated")


@dataclass(frozen=True)
class Target:
    """One exported file to time: ``label`` names it in the results; ``checkpoints`` rebuild its PyTorch module."""

    label: str
    path: Path
    checkpoints: tuple[Path, ...] = ()
    flip: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def random_frames(frame_size: tuple[int, int], count: int = 4, seed: int = 0) -> list[np.ndarray]:
    """``count`` uint8 RGB noise frames of ``frame_size`` (W, H). Shape: each (H, W, 3)."""
    rng = np.random.default_rng(seed)
    w, h = frame_size
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(count)]


def _percentiles(ms: np.ndarray, prefix: str = "") -> dict[str, float]:
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {f"{prefix}p50_ms": round(float(p50), 3), f"{prefix}p90_ms": round(float(p90), 3),
            f"{prefix}p99_ms": round(float(p99), 3), f"{prefix}mean_ms": round(float(ms.mean()), 3)}


def latency_stats(seconds: Sequence[float], batch: int = 1) -> dict[str, Any]:
    """Percentiles (numpy's linear interpolation) and mean of the per-call times in milliseconds, the same per frame
    (a call of ``batch`` frames divided by ``batch``), and frames per second (frames / total time)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    stats: dict[str, Any] = {"runs": len(ms), "batch": batch, **_percentiles(ms)}
    if batch > 1:
        stats.update(_percentiles(ms / batch, "per_frame_"))
    stats["fps"] = round(batch * len(ms) / float(ms.sum() / 1000.0), 3)
    return stats


def time_runner(runner: Runner, frames: Sequence[np.ndarray], *, batch: int = 1, warmup: int, runs: int,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Call ``runner`` on batches of ``batch`` frames rotated from ``frames``: ``warmup`` untimed calls, then ``runs``
    calls timed with ``clock``. Returns ``latency_stats``, the samples (ms) and, when the runner measures it, the
    device time per call (CUDA events) with its percentiles."""
    batches = [np.stack([frames[(i * batch + k) % len(frames)] for k in range(batch)]) for i in range(len(frames))]
    for i in range(warmup):
        runner(batches[i % len(batches)])
    times, device = [], []
    for i in range(runs):
        inputs = batches[i % len(batches)]
        t0 = clock()
        runner(inputs)
        times.append(clock() - t0)
        device.append(runner.device_ms())
    out = {**latency_stats(times, batch), "warmup": warmup, "samples_ms": [round(t * 1000.0, 4) for t in times]}
    if all(d is not None for d in device):
        out["device_time"] = _percentiles(np.asarray(device, dtype=np.float64))
    return out


def time_segmenter(seg: Any, frames: Sequence[np.ndarray], *, warmup: int, runs: int) -> dict[str, Any]:
    """``time_runner`` of a ``Segmenter`` one frame at a time (what a camera application does)."""
    return time_runner(SegmenterRunner(seg, owned=False), frames, batch=1, warmup=warmup, runs=runs)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that a batch did not fit (torch, ONNX Runtime, TensorRT, numpy spell it differently)."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or any(
        word in str(exc).lower() for word in _OOM_WORDS)


def sweep(runner: Runner, frames: Sequence[np.ndarray], batches: Sequence[int], *, warmup: int, runs: int,
          clock: Callable[[], float] = time.perf_counter) -> list[dict[str, Any]]:
    """``time_runner`` at each batch size in order; the first that runs out of memory is reported as not run and the
    larger ones are not tried. Peak allocator memory per batch where the runner has one."""
    rows: list[dict[str, Any]] = []
    for batch in batches:
        runner.reset_peak()
        try:
            row = time_runner(runner, frames, batch=batch, warmup=warmup, runs=runs, clock=clock)
        except (MemoryError, RuntimeError, FtadaptError) as exc:
            if not out_of_memory(exc):
                raise
            rows.append({"batch": batch, "status": f"not run: out of memory at batch {batch} ({exc}); larger "
                                                  "batches not tried"})
            break
        peak = runner.peak_bytes()
        if peak is not None:
            row["peak_allocated_mib"] = round(peak / 2**20, 1)
        rows.append(row)
    return rows


def _pytorch_runners(target: Target, device: Device, cuda_graph: bool) -> Iterator[Runner | tuple[str, str]]:
    """The exported graph's own module, rebuilt from the target's checkpoints, eager (then CUDA-graphed)."""
    if not target.checkpoints:
        yield ("eager", "not run: no --checkpoints to rebuild the exported module from (pass the member checkpoint "
                        "folders the file was exported from)")
        return
    from ftadapt.export.rebuild import rebuild_graph

    info = read_model_file(target.path).info
    if info.precision == "fp16" and not device.is_cuda:
        yield ("eager", "not run: the FP16 module runs in PyTorch on CUDA only (--device cuda:N)")
        return
    if device.is_cuda:
        import torch

        if not torch.cuda.is_available():
            yield ("eager", "not run: no CUDA device visible to torch")
            return
        torch.backends.cudnn.benchmark = True  # the fastest cuDNN algorithms for the one frame shape, as TensorRT
    graph = rebuild_graph(info, target.checkpoints, device=str(device), source=str(target.path))
    yield TorchRunner(graph, str(device), precision=info.precision)
    if cuda_graph:
        yield (TorchRunner(graph, str(device), precision=info.precision, cuda_graph=True) if device.is_cuda
               else ("cuda-graph", "not run: CUDA graphs need a CUDA device"))


def _segmenter_runners(target: Target, backend: str, device: Device, *, batches: Sequence[int],
                       frame_size: tuple[int, int], threads: int | None, cuda_graph: bool,
                       engine_cache: Path | None) -> Iterator[Runner | tuple[str, str]]:
    """ONNX Runtime on ``device``, or TensorRT with a profile fixed at the frame size and batches up to the largest."""
    from ftadapt.runtime import BackendUnavailable, EngineError, OnnxRuntimeOptions, Segmenter, TensorRTOptions

    variants = [("eager", False)] + ([("cuda-graph", True)] if cuda_graph and backend == "tensorrt" else [])
    for name, graphed in variants:
        if backend == "tensorrt" and device.is_cpu:
            yield (name, "not run: TensorRT needs a CUDA device (--device cuda:N)")
            continue
        if backend == "onnxruntime":
            options: dict[str, Any] = {"onnxruntime": OnnxRuntimeOptions(threads=threads)}
        else:
            options = {"max_batch": max(batches), "max_frame": frame_size, "min_frame": frame_size,
                       "tensorrt": TensorRTOptions(engine_cache=engine_cache, cuda_graph=graphed, device_timing=True)}
        try:
            seg = Segmenter(target.path, backend, device=device, **options)
        except (BackendUnavailable, EngineError, DeviceError, ImportError) as exc:
            yield (name, f"not run: {exc}")
            continue
        yield SegmenterRunner(seg, variant=name)


def open_runners(target: Target, backend: str, device: DeviceLike,
                 **options: Any) -> Iterator[Runner | tuple[str, str]]:
    """The runners of ``backend`` for ``target`` on ``device`` (resolved: cpu or cuda:N), one per variant, each
    created when the previous one has been timed (and closed by the caller), or (variant, "not run: reason")."""
    device = resolve(device)
    if backend == "pytorch":
        return _pytorch_runners(target, device, options["cuda_graph"])
    return _segmenter_runners(target, backend, device, **options)


def _time_target(target: Target, backend: str, *, device: Device, frames: Sequence[np.ndarray],
                 batches: Sequence[int], warmup: int, runs: int, **options: Any) -> list[dict[str, Any]]:
    """Every row of one (file, backend): per variant, a row per batch size (or one "not run" row)."""
    info = read_model_file(target.path).info
    base = {"model": target.label, "file": str(target.path), "backend": backend, "precision": info.precision,
            "working_size": list(info.working_size), "frame_size": [frames[0].shape[1], frames[0].shape[0]],
            "members": len(info.members), "flip": target.flip, **target.extra}
    used_before = device_used_bytes(device)
    rows = []
    for runner in open_runners(target, backend, device, batches=batches, frame_size=tuple(base["frame_size"]),
                               **options):
        if isinstance(runner, tuple):
            rows.append({**base, "variant": runner[0], "status": runner[1]})
            continue
        try:
            timed = sweep(runner, frames, batches, warmup=warmup, runs=runs)
            used_after = device_used_bytes(device)
            described = runner.describe()
        finally:
            runner.close()
        growth = None if used_before is None or used_after is None else round((used_after - used_before) / 2**20, 1)
        for row in timed:
            rows.append({**base, "variant": runner.variant, **described, "device_memory_growth_mib": growth, **row})
            if "device_time" not in row and "status" not in row and device.is_cuda:
                rows[-1]["device_time"] = "not measured: ONNX Runtime exposes no CUDA events around its run"
        print(f"[latency] {target.label} {backend} {runner.variant}: " + ", ".join(
            f"batch {r['batch']} p50 {r['p50_ms']} ms" if "p50_ms" in r else r["status"] for r in timed),
            file=sys.stderr, flush=True)
    return rows


def _targets(work: Path, models: Sequence[Path], checkpoints: Sequence[Path], random: Sequence[str], *,
             members: int, precisions: Sequence[str], flip: bool, working_size: tuple[int, int]) -> list[Target]:
    """The files to time: each ``--model`` (with ``--checkpoints``) and each random-init export."""
    targets = [Target(Path(m).name, Path(m), tuple(checkpoints)) for m in models]
    for model in random:
        ckpts = tuple(random_checkpoints(work, model, members))
        for precision in precisions:
            for flipped in (False, True) if flip else (False,):
                path = export_random_model(work, model, working_size, precision, flipped, members)
                label = f"{members}x {model}" if members > 1 else model
                targets.append(Target(label, path, ckpts, flipped, {"weights": WEIGHTS_NOTE}))
    return targets


def _require(what: str, extra: str, instead: str, *modules: str) -> None:
    """UsageError naming the extra to install when one of ``modules`` cannot be imported: ``what`` needs them."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UsageError(f"{what} needs {module}, which cannot be imported here ({exc}); pip install "
                             f"'ftadapt[{extra}]', or {instead}") from None


def measure_latency(*, models: Sequence[Path] = (), checkpoints: Sequence[Path] = (), random: Sequence[str] = (),
                    members: int = 1, precisions: Sequence[str] = ("fp32",), flip: bool = False,
                    backends: Sequence[str] = BACKENDS, device: DeviceLike = "auto",
                    frame_size: tuple[int, int] = (2048, 1024), working_size: tuple[int, int] = (1024, 512),
                    batches: Sequence[int] | None = None, warmup: int | None = None, runs: int | None = None,
                    threads: int | None = None, cuda_graph: bool = False, engine_cache: Path | None = None,
                    workdir: Path | None = None) -> dict[str, Any]:
    """Latency of every (file, backend, variant, batch size); see the module docstring. Returns the report.

    ``device`` as ``ftadapt.devices`` spells it (auto: the first CUDA device when the NVIDIA driver reports one).
    ONNX Runtime and TensorRT need no torch; the pytorch backend and ``random`` exports do (UsageError otherwise).
    """
    if "pytorch" in backends:
        _require("--backends pytorch", "train", "leave pytorch out of --backends", "torch")
    if random:
        _require("--random (a random-init model exported here)", "train,export",
                 "time an exported file with --model", "torch", "onnx")
    device = resolve(device)
    if threads is not None and "pytorch" in backends:
        import torch

        torch.set_num_threads(threads)
    batches = tuple(batches or (GPU_BATCHES if device.is_cuda else CPU_BATCHES))
    warmup = (10 if device.is_cuda else 2) if warmup is None else warmup
    frames = random_frames(frame_size)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ftadapt-latency-") as tmp:
        work = Path(workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        targets = _targets(work, models, checkpoints, random, members=members, precisions=precisions, flip=flip,
                           working_size=working_size)
        for target in targets:
            n = runs or (50 if device.is_cuda else DEFAULT_RUNS.get(target.label, 10))
            for backend in backends:
                rows += _time_target(target, backend, device=device, frames=frames, batches=batches, warmup=warmup,
                                     runs=n, threads=threads, cuda_graph=cuda_graph, engine_cache=engine_cache)
    _flip_ratios(rows)
    return {"benchmark": "latency", "environment": environment(str(device)), "device": str(device),
            "batches": list(batches), "timing": TIMING, "results": rows}


def _flip_ratios(rows: list[dict[str, Any]]) -> None:
    """``p50_ratio_to_plain`` on every flip-fused row: its p50 over the plain graph's, same model and settings."""
    key = ("model", "backend", "variant", "precision", "batch")
    plain = {tuple(r.get(k) for k in key): r for r in rows if not r["flip"] and "p50_ms" in r}
    for row in rows:
        match = plain.get(tuple(row.get(k) for k in key))
        if row["flip"] and "p50_ms" in row and match is not None:
            row["p50_ratio_to_plain"] = round(row["p50_ms"] / match["p50_ms"], 3)


__all__ = ["BACKENDS", "Target", "latency_stats", "time_runner", "time_segmenter", "sweep", "out_of_memory",
           "open_runners", "measure_latency", "random_frames"]


if __name__ == "__main__":  # python -m ftadapt.bench.latency: the same as `ftadapt bench latency`
    from ftadapt.cli import main

    main(["bench", "latency", *sys.argv[1:]])
