"""Runtime latency: ``ftadapt bench runtime-latency [--json OUT]`` prints a JSON report.

Per-frame latency (p50 / p90 / p99, mean) and frames per second of ``Segmenter`` — what an application sees: numpy
frame in, label map out, pre-processing, upsampling and argmax included — for each ``--model`` exported as one FP32
member at ``--working-size`` (default 1024×512, the paper's Cityscapes input) and fed ``--frame-size`` frames (default
2048×1024, a Cityscapes camera frame). The members are random-init checkpoints: latency does not depend on the weight
values (no data-dependent operators), and the report says so. Frames are random uint8 noise, rotated (never zeros).
Warm-up calls (session initialisation, first-run allocations) are excluded from the statistics.

By default: the ONNX Runtime CPU backend on the ``tiny`` model and on DeepLab-v2 ResNet-101. ``bench/gpu_runtime.py``
reuses these helpers for ONNX Runtime CUDA and TensorRT on an NVIDIA machine.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ftadapt.bench.report import host_info
from ftadapt.runtime import Segmenter

DEFAULT_RUNS = {"tiny": 30, "deeplabv2-r101": 5}
WEIGHTS_NOTE = "random-init checkpoints (latency does not depend on weight values)"


def export_random_model(work: Path, model: str, working_size: tuple[int, int], precision: str = "fp32",
                        flip: bool = False) -> Path:
    """A one-member ONNX export of a random-init ``model`` under ``work`` (reused when present); with ``flip`` the
    member also runs on the mirrored frame inside the graph (the paper's flip fusion)."""
    out = work / f"{model}-{working_size[0]}x{working_size[1]}-{precision}{'-flip' if flip else ''}.onnx"
    if out.is_file():
        return out
    import torch

    from ftadapt.checkpoint import save_checkpoint
    from ftadapt.ensemble import load_ensemble
    from ftadapt.export.onnx_export import export_onnx
    from ftadapt.models.registry import create_model

    ckpt = work / f"{model}-random"
    if not ckpt.is_dir():
        torch.manual_seed(0)
        net = create_model(model)
        save_checkpoint(ckpt, model_state=net.state_dict(), model_config=net.config,
                        meta={"method": "random-init", "metrics": {}})
    export_onnx(load_ensemble([str(ckpt)], flip=flip), out, precision=precision, working_size=working_size,
                verify=False, progress=False)
    return out


def random_frames(frame_size: tuple[int, int], count: int = 4, seed: int = 0) -> list[np.ndarray]:
    """``count`` uint8 RGB noise frames of ``frame_size`` (W, H). Shape: each (H, W, 3)."""
    rng = np.random.default_rng(seed)
    w, h = frame_size
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(count)]


def latency_stats(seconds: list[float]) -> dict[str, float]:
    """Percentiles and mean in milliseconds, and frames per second (runs / total time)."""
    ms = np.asarray(seconds) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"runs": len(seconds), "p50_ms": round(float(p50), 3), "p90_ms": round(float(p90), 3),
            "p99_ms": round(float(p99), 3), "mean_ms": round(float(ms.mean()), 3),
            "fps": round(len(seconds) / float(np.sum(seconds)), 3)}


def time_segmenter(seg: Segmenter, frames: list[np.ndarray], *, warmup: int, runs: int) -> dict[str, Any]:
    """Call ``seg`` on the rotating ``frames``: ``warmup`` untimed calls, then ``runs`` timed ones."""
    for i in range(warmup):
        seg(frames[i % len(frames)])
    times = []
    for i in range(runs):
        frame = frames[i % len(frames)]
        t0 = time.perf_counter()
        seg(frame)
        times.append(time.perf_counter() - t0)
    return {**latency_stats(times), "warmup": warmup}


def bench_model(work: Path, model: str, *, working_size: tuple[int, int], frame_size: tuple[int, int],
                warmup: int, runs: int, threads: int | None, flip: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    path = export_random_model(work, model, working_size, flip=flip)
    export_s = time.perf_counter() - t0
    with Segmenter(path, backend="onnxruntime", device="cpu", threads=threads) as seg:
        row = {"model": model, "flip": flip, "backend": seg.backend, "providers": list(seg.providers),
               "working_size": list(working_size), "frame_size": list(frame_size), "threads": threads or "default",
               "export_or_reuse_s": round(export_s, 2)}
        row.update(time_segmenter(seg, random_frames(frame_size), warmup=warmup, runs=runs))
    return row


def machine() -> dict[str, Any]:
    import onnxruntime

    return host_info(numpy=np.__version__, onnxruntime=onnxruntime.__version__)


def measure_runtime_latency(*, models: tuple[str, ...] = tuple(DEFAULT_RUNS),
                            working_size: tuple[int, int] = (1024, 512), frame_size: tuple[int, int] = (2048, 1024),
                            warmup: int = 2, runs: int | None = None, threads: int | None = None,
                            workdir: Path | None = None, flip: bool = False) -> dict[str, Any]:
    """Latency of one random-init FP32 member of each of ``models`` through the ONNX Runtime CPU backend; with
    ``flip`` each model also as the flip-fused graph (the members run on the frame and its mirror image), with the
    ratio flip / plain."""
    with tempfile.TemporaryDirectory(prefix="ftadapt-runtime-bench-") as tmp:
        work = workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for model in models:
            for flipped in (False, True) if flip else (False,):
                rows.append(bench_model(work, model, working_size=working_size, frame_size=frame_size, warmup=warmup,
                                        runs=runs or DEFAULT_RUNS.get(model, 10), threads=threads, flip=flipped))
                if flipped:
                    rows[-1]["p50_ratio_to_plain"] = round(rows[-1]["p50_ms"] / rows[-2]["p50_ms"], 3)
                print(json.dumps(rows[-1]), flush=True)
    return {"benchmark": "runtime_latency", "weights": WEIGHTS_NOTE, "machine": machine(), "results": rows,
            "timing": "wall clock per Segmenter call (numpy frame in, int32 label map out), after warm-up"}


if __name__ == "__main__":  # python -m ftadapt.bench.runtime_latency: the same as `ftadapt bench runtime-latency`
    import sys

    from ftadapt.cli import main

    main(["bench", "runtime-latency", *sys.argv[1:]])
