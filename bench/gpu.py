"""One run on whatever NVIDIA GPU is here, at most ``--budget-s`` seconds (default 300), one JSON file.

    ftadapt bench gpu [--out DIR] [--budget-s 300] [--compile] [--only ITEM[,ITEM]] [--skip ITEM[,ITEM]]
    bench/gpu_check.sh                 # installs the project without network, runs this, writes $OUT or ./gpu-results
    ftadapt bench gpu --device cpu --tiny --out /tmp/g   # the same script, seconds, on a CPU (tests)
    python -m ftadapt.bench.gpu ...    # the same, and also takes argparse's spelling --only ITEM ITEM ...

Items, in order (each one guarded: a failure is recorded and the next one runs; an item that does not fit in the
time left is skipped with a note; ``gpu_bench.json`` is rewritten after every item, so a killed run keeps its
results):

1. ``train_bf16_channels_last``: clan-norm training steps/s at the paper's sizes (DeepLab-v2 R101, source 1280×720,
   target 1024×512, batch 1) — the real ``TrainStep`` from ``build_train_step`` with bf16 autocast, channels_last,
   cuDNN benchmark, fused optimizers, in-memory batches — the peak memory, G's achieved TFLOP/s, and a profile of a
   few more steps (device-busy share, kernel launches, kernel time by category, top kernels). The target: ≥ 28
   steps/s on one H100.
Every training item is a config (``build_config`` over ``bench.train_step.BENCH_DEFAULTS``, ``speed.*`` keys) timed
by ``bench_train_step``.
2. ``train_bf16_cudagraphs`` and 3. ``train_bf16_compile`` (only with ``--compile``): item 1 with the ``compile``
   config key at "reduce-overhead" (torch.compile + CUDA graphs) and "default"; compilation (one graph per input
   shape) is in ``warmup_s``; both profiled.
4. ``train_fp32_channels_last``: item 1 in fp32 (cuDNN convolutions may use TF32, PyTorch's default; recorded).
5. ``train_bf16_loader``: item 1 fed by the real loaders (synthetic frames at GTA5's and Cityscapes' file sizes,
   resized to the protocol, CLAN augmentation, several workers per domain; every rescaled shape warmed up first):
   steps/s end to end and the share of time spent waiting for data.
6. ``train_bf16_contiguous``: item 1 without channels_last (what the memory format is worth).
7. ``runtime``: ``ftadapt.bench.gpu_runtime.measure_runtime_gpu`` (ONNX Runtime CPU/CUDA, TensorRT) when present.
8. ``export_parity``: the exported random-init R101 graph in ONNX Runtime (CPU) against the same graph in PyTorch
   on the GPU (fp32, TF32 off) on two synthetic 2048×1024 street scenes: max |Δprob| and label agreement.
9. ``deploy_check``: the same exported file, FP32 and FP16, through the runtime as an application runs it
   (``gpu_runtime.deployment_check``): ONNX Runtime CUDA must really get ``CUDAExecutionProvider`` first (the item
   fails otherwise), and TensorRT (when installed) builds a static engine; labels against ONNX Runtime CPU.
10. ``ensemble_latency``: the exported 3-member R101 ensemble at 1024×512 on 2048×1024 frames, FP32 and FP16, in
    PyTorch eager and CUDA-graphed, ONNX Runtime CUDA and TensorRT: end-to-end and device latency, next to the
    physical floor (``gpu_ensemble``); target ≤ 8 ms for FP16 on an H100.
11. ``fp16_parity``: that FP16 file through ``bench accuracy`` on the synthetic val set: FP16 vs FP32 label agreement
    and ΔmIoU per backend. Both need minutes: ``--only ensemble_latency,fp16_parity --budget-s 900``.
"""
from __future__ import annotations

import datetime
import gc
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftadapt.bench import gpu_ensemble
from ftadapt.bench.report import environment
from ftadapt.bench.train_step import BENCH_DEFAULTS, RAW_SIZES, bench_train_step
from ftadapt.config import build_config
from ftadapt.devices import DeviceError, DeviceLike, parse_device, torch_device
from ftadapt.errors import UsageError
from ftadapt.fsutil import check_target, write_text_atomic

TARGET_BF16_STEPS_PER_S = 28.0  # one H100: 100k steps in under an hour
# Config keys of the two modes (sizes W×H).
PAPER = {"model": "deeplabv2-r101", "data.source_size": (1280, 720), "data.target_size": (1024, 512)}
TINY = {"model": "tiny", "data.source_size": (160, 96), "data.target_size": (128, 64)}
RESULT_FILE = "gpu_bench.json"
# Ways of running the same bf16 step on in-memory batches; the target is judged on the fastest.
BF16_MODES = ("train_bf16_channels_last", "train_bf16_cudagraphs", "train_bf16_compile")


@dataclass
class Item:
    """One measurement: ``run(seconds_left)`` returns its result dict; skipped when less than ``needs_s`` is left
    (and on a CPU dry run when ``cuda_only`` names what needs the CUDA device)."""

    name: str
    needs_s: float
    run: Callable[[float], dict[str, Any]]
    cuda_only: str = ""


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _train_item(name: str, sizes: dict, device: torch.device, speed: dict[str, Any], *, measure_s: float,
                warmup: int, data: str = "memory", workers: int = 0, raw_sizes: tuple | None = None,
                profile: int = 0, setup_s: float = 20.0) -> Item:
    """``bench_train_step`` of clan-norm at ``sizes`` (config keys) with the config keys ``speed`` (``speed.*``)."""
    cfg = build_config({**BENCH_DEFAULTS, "method": "clan-norm", **sizes, "device": str(device),
                        "data.num_workers": workers, **speed})

    def run(left_s: float) -> dict[str, Any]:
        return bench_train_step(cfg, steps=100_000, warmup=warmup, data=data, raw_sizes=raw_sizes, profile=profile,
                                max_seconds=min(measure_s, max(1.0, (left_s - setup_s) / 2)), progress=False)

    return Item(name, needs_s=measure_s + setup_s, run=run)


def _runtime_item(out: Path, tiny: bool) -> Item:
    def run(left_s: float) -> dict[str, Any]:
        try:
            from ftadapt.bench.gpu_runtime import measure_runtime_gpu
        except ImportError as exc:
            return {"skipped": f"ftadapt.bench.gpu_runtime is not available ({exc})"}
        options: dict[str, Any] = {"workdir": out / "work", "cpu_runs": 2, "runs": 20}
        if tiny:
            options.update(model="tiny", working_size=(128, 64), frame_size=(256, 128))
        return measure_runtime_gpu(**options)

    return Item("runtime", needs_s=30.0 if tiny else 120.0, run=run)


def export_parity(work: Path, device: torch.device, *, model: str, working_size: tuple[int, int],
                  frame_size: tuple[int, int], frames: int = 2) -> dict[str, Any]:
    """ONNX Runtime (CPU) vs the same graph in PyTorch on ``device`` (fp32, TF32 off), random-init ``model``."""
    import numpy as np
    import onnxruntime as ort

    from ftadapt.bench.random_models import export_random_model, random_checkpoints
    from ftadapt.ensemble import load_ensemble
    from ftadapt.export.onnx_graph import build_graph
    from ftadapt.export.verify import verification_frames
    from ftadapt.runtime.onnx_file import read_model_file

    t0 = time.perf_counter()
    path = export_random_model(work, model, working_size)  # shared with the runtime item (reused when present)
    graph = build_graph(load_ensemble([str(random_checkpoints(work, model)[0])]), working_size=working_size).to(device)
    session = ort.InferenceSession(str(read_model_file(path).path), providers=["CPUExecutionProvider"])
    batch = verification_frames([frame_size], per_size=frames)[0]
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.inference_mode():
            probs = graph.fused_probs(torch.from_numpy(batch).to(device)).float().cpu().numpy()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    (labels,) = session.run(["labels"], {"image": batch})
    chosen = np.take_along_axis(probs, labels[:, None].astype(np.int64), axis=1)[:, 0]
    differ = labels != probs.argmax(axis=1)
    ties = differ & (probs.max(axis=1) - chosen <= 1e-4)
    return {"reference": f"pytorch fp32 on {device} (TF32 off)", "runtime": "onnxruntime CPUExecutionProvider",
            "model": f"{model} random-init (weights do not matter for parity)", "frames": frames,
            "frame_size": list(frame_size), "identical_labels": float(1 - differ.mean()),
            "label_agreement_ties_excused": float(1 - (differ & ~ties).mean()),
            "seconds": round(time.perf_counter() - t0, 2)}


def plan(out: Path, device: torch.device, *, tiny: bool, compile_model: bool) -> list[Item]:
    """The items of one run, most important first."""
    sizes, measure, warmup, profile = (TINY, 1.0, 1, 2) if tiny else (PAPER, 15.0, 6, 3)
    workers = 1 if tiny else max(1, min(6, ((os.cpu_count() or 2) - 2) // 2))
    compile_s = 30.0 if tiny else 240.0  # compiling R101's forward + backward for two input shapes
    work = out / "work"
    timing = {"measure_s": measure, "warmup": warmup}
    bf16 = {"speed.amp": "bf16", "speed.channels_last": True}
    items = [_train_item("train_bf16_channels_last", sizes, device, bf16, **timing, profile=profile)]
    if compile_model:
        items += [_train_item("train_bf16_cudagraphs", sizes, device, {**bf16, "speed.compile": "reduce-overhead"},
                              **timing, profile=profile, setup_s=compile_s),
                  _train_item("train_bf16_compile", sizes, device, {**bf16, "speed.compile": "default"}, **timing,
                              profile=profile, setup_s=compile_s)]
    items += [
        _train_item("train_fp32_channels_last", sizes, device, {"speed.channels_last": True}, **timing),
        _train_item("train_bf16_loader", sizes, device, bf16, **timing, data="synthetic", workers=workers,
                    raw_sizes=None if tiny else RAW_SIZES, setup_s=10.0 if tiny else 60.0),
        _train_item("train_bf16_contiguous", sizes, device, {"speed.amp": "bf16"}, **timing),
        _runtime_item(out, tiny),
        Item("export_parity", needs_s=10.0 if tiny else 30.0,
             run=lambda left: export_parity(work, device, model=sizes["model"],
                                            working_size=(128, 64) if tiny else (1024, 512),
                                            frame_size=(256, 128) if tiny else (2048, 1024))),
        _deploy_item(work, sizes["model"], tiny),
        Item("ensemble_latency", needs_s=60.0 if tiny else 420.0,
             run=lambda left: gpu_ensemble.ensemble_latency(work, str(device), tiny=tiny)),
        Item("fp16_parity", needs_s=60.0 if tiny else 240.0,
             run=lambda left: gpu_ensemble.fp16_parity(work, str(device), tiny=tiny)),
    ]
    return items


def _deploy_item(work: Path, model: str, tiny: bool) -> Item:
    working, frame = ((128, 64), (256, 128)) if tiny else ((1024, 512), (2048, 1024))

    def run(left_s: float) -> dict[str, Any]:
        from ftadapt.bench.gpu_runtime import deployment_check
        from ftadapt.bench.random_models import export_random_model

        return {p: deployment_check(export_random_model(work, model, working, p), frame, engine_cache=work / "engines")
                for p in ("fp32", "fp16")}

    return Item("deploy_check", needs_s=30.0 if tiny else 240.0, run=run, cuda_only="ONNX Runtime CUDA and TensorRT")


def run_all(out: Path, *, budget_s: float = 300.0, device: DeviceLike = "auto", tiny: bool = False,
            compile_model: bool = False, skip: tuple[str, ...] = (), only: tuple[str, ...] = (),
            overwrite: bool = False) -> dict[str, Any]:
    """Run the items that fit in ``budget_s`` seconds (all, or ``only`` these, minus ``skip``), writing
    ``out/gpu_bench.json`` after each (an earlier run's file only with ``overwrite``); return the report. ``device``
    "auto" means the GPU: without one the report is an error (nothing measured), never a CPU run that looks like a
    GPU check; "cpu" is the structural dry run."""
    started = time.monotonic()
    check_target(out, overwrite=overwrite, what="--out", kind="merge")
    check_target(out / RESULT_FILE, overwrite=overwrite, what="--out")
    out.mkdir(parents=True, exist_ok=True)
    try:
        dev = torch_device("cuda" if parse_device(device).type == "auto" else device)
    except DeviceError as exc:
        report = {"benchmark": "gpu", "error": f"{exc}; nothing measured",
                  "environment": environment(torch.device("cpu"))}
        write_text_atomic(out / RESULT_FILE, json.dumps(report, indent=2) + "\n", overwrite=True)
        return report
    report: dict[str, Any] = {
        "benchmark": "gpu", "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "budget_s": budget_s, "mode": "tiny" if tiny else "paper sizes", "environment": environment(dev),
        "target": {"train_bf16_channels_last_steps_per_s": TARGET_BF16_STEPS_PER_S, "on": "one H100"},
        "results": {}, "errors": {}, "skipped": {}, "item_seconds": {}}
    items = plan(out, dev, tiny=tiny, compile_model=compile_model)
    unknown = sorted(set(only) - {item.name for item in items})
    if unknown:
        raise UsageError(f"--only {' '.join(unknown)}: no such item in this run; items: "
                         f"{', '.join(item.name for item in items)} (train_bf16_cudagraphs and train_bf16_compile "
                         "need --compile)")
    for item in items:
        left = budget_s - (time.monotonic() - started)
        if item.name in skip or (only and item.name not in only):
            report["skipped"][item.name] = "--skip" if item.name in skip else "not in --only"
            continue
        if item.cuda_only and dev.type != "cuda":
            report["skipped"][item.name] = f"needs a CUDA device ({item.cuda_only})"
            continue
        if left < item.needs_s:
            report["skipped"][item.name] = f"time budget: {left:.0f} s left, the item needs about {item.needs_s:.0f} s"
            continue
        print(f"[gpu-bench] {item.name} ({left:.0f} s left)", flush=True)
        t0 = time.monotonic()
        try:
            result = item.run(left)
        except Exception as exc:  # one failure must not lose the other measurements
            report["errors"][item.name] = f"{type(exc).__name__}: {exc}\n" + "".join(
                traceback.format_exception(exc, limit=-4))
            print(f"[gpu-bench] {item.name} failed: {type(exc).__name__}: {exc}", flush=True)
        else:
            report["results"][item.name] = result
            print(json.dumps({item.name: _headline(result)}), flush=True)
        report["item_seconds"][item.name] = round(time.monotonic() - t0, 1)
        _release(dev)
        write_text_atomic(out / RESULT_FILE, json.dumps(report, indent=2, default=str) + "\n", overwrite=True)
    report["summary"] = _summary(report)
    report["total_s"] = round(time.monotonic() - started, 1)
    write_text_atomic(out / RESULT_FILE, json.dumps(report, indent=2, default=str) + "\n", overwrite=True)
    return report


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("steps_per_s", "compute_steps_per_s", "data_share", "peak_memory_mib", "timed_steps", "warmup_s",
            "model_tflops_achieved", "identical_labels", "label_agreement_ties_excused", "skipped")
    headline = {k: result[k] for k in keys if k in result}
    if result.get("benchmark") in ("latency", "accuracy"):
        headline.update(gpu_ensemble.headline(result))
    device_profile = (result.get("profile") or {}).get("device")
    if device_profile:
        headline["busy_share"] = device_profile["busy_share"]
        headline["kernels_per_step"] = device_profile["kernels_per_step"]
    return headline or {"keys": sorted(result)}


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    train = {name: {"steps_per_s": round(r["steps_per_s"], 3), "peak_memory_mib": round(r["peak_memory_mib"])}
             for name, r in report["results"].items() if name.startswith("train_")}
    summary: dict[str, Any] = {"train": train, "errors": sorted(report["errors"]), "skipped": sorted(report["skipped"])}
    # The target is for a bf16 step at the paper's sizes on in-memory batches, with whichever execution mode is fastest.
    bf16 = {name: train[name]["steps_per_s"] for name in BF16_MODES if name in train}
    if bf16 and report["mode"] == "paper sizes":
        best = max(bf16, key=bf16.get)
        summary["bf16_vs_target"] = (f"{best}: {bf16[best]:.2f} steps/s vs target {TARGET_BF16_STEPS_PER_S} on one "
                                     f"H100 (this GPU: {report['environment'].get('gpu', '?')})")
        summary["meets_target"] = bf16[best] >= TARGET_BF16_STEPS_PER_S
    return summary


def item_lists(argv: list[str]) -> list[str]:
    """argparse's ``--only A B C`` (how this script took item lists before it became ``ftadapt bench gpu``) as
    ``--only A --only B --only C``, so the old command lines keep working."""
    out: list[str] = []
    repeat = None
    for word in argv:
        if word.startswith("-"):
            repeat = word if word in ("--only", "--skip") else None
            out.append(word)
        elif repeat is not None and out[-1] != repeat:
            out += [repeat, word]
        else:
            out.append(word)
    return out


if __name__ == "__main__":  # python -m ftadapt.bench.gpu (bench/gpu_check.sh): the same as `ftadapt bench gpu`
    import sys

    from ftadapt.cli import main

    main(["bench", "gpu", *item_lists(sys.argv[1:])])
