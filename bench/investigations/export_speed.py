"""Export benchmarks: ``python -m ftadapt.commands.investigate export-speed [--json OUT]`` prints a JSON report.

Sections (each can be skipped):

- ``export``: export time and file size of 1 and N members of ``--model`` (default DeepLab-v2 R101) at the working
  size, FP32 and FP16, without verification. Members are random-init checkpoints: time and size do not depend on the
  weights.
- ``latency``: ONNX Runtime (CPU provider) latency of the single-member FP32 graph against PyTorch eager running the
  very same module (``SegmentationGraph``) on the same frames in the same process; ratio = ORT / PyTorch.
- ``preprocess``: the in-graph bilinear resize against the training protocol's PIL BICUBIC, on synthetic street
  scenes at twice the working size: the input difference in intensity levels and, with ``--checkpoint`` (a trained
  model whose working size matches), the label agreement of the two pipelines and each one's mIoU on the scenes'
  ground truth.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ftadapt.bench.report import host_info, torch_info
from ftadapt.checkpoint import save_checkpoint
from ftadapt.data.synthetic import synthesize
from ftadapt.data.transforms import image_to_tensor, resize_image
from ftadapt.ensemble import Ensemble, load_ensemble
from ftadapt.evaluation.metrics import ConfusionMatrix
from ftadapt.export.onnx_export import export_onnx
from ftadapt.export.onnx_graph import build_graph
from ftadapt.labels import cityscapes_to_trainid
from ftadapt.models.registry import create_model
from ftadapt.runtime.onnx_file import read_model_file


def _members(root: Path, model: str, n: int) -> list[str]:
    """``n`` random-init checkpoint folders of ``model`` under ``root`` (created once, reused)."""
    specs = []
    for i in range(n):
        path = root / f"{model}-{i}"
        if not path.is_dir():
            torch.manual_seed(i)
            net = create_model(model)
            save_checkpoint(path, model_state=net.state_dict(), model_config=net.config,
                            meta={"method": "random-init", "metrics": {}})
        specs.append(f"{path}:1")
    return specs


def bench_export(root: Path, model: str, counts: list[int], precisions: list[str],
                 working_size: tuple[int, int]) -> list[dict[str, Any]]:
    rows = []
    for n in counts:
        t0 = time.perf_counter()
        ensemble = load_ensemble(_members(root / "ckpt", model, n))
        load_s = time.perf_counter() - t0
        for precision in precisions:
            out = root / f"{model}-x{n}-{precision}.onnx"
            t0 = time.perf_counter()
            result = export_onnx(ensemble, out, precision=precision, working_size=working_size, verify=False,
                                 progress=False, overwrite=True)  # timed anew in the benchmark's own work folder
            rows.append({"members": n, "precision": precision, "load_s": round(load_s, 2),
                         "export_s": round(result.export_seconds, 2), "total_s": round(time.perf_counter() - t0, 2),
                         "size_mib": round(result.size_bytes / 2**20, 1), "files": len(result.files)})
            print(json.dumps(rows[-1]), flush=True)
        del ensemble
    return rows


def _timed(fn, frames: list[np.ndarray], runs: int) -> list[float]:
    fn(frames[0])  # warm-up: allocation, first-run kernel selection
    times = []
    for _ in range(runs):
        for frame in frames:
            t0 = time.perf_counter()
            fn(frame)
            times.append(time.perf_counter() - t0)
    return times


def bench_latency(root: Path, model: str, working_size: tuple[int, int], frame_size: tuple[int, int],
                  n_frames: int, runs: int) -> dict[str, Any]:
    import onnxruntime as ort

    ensemble = load_ensemble(_members(root / "ckpt", model, 1))
    path = root / f"{model}-x1-fp32.onnx"
    if not path.is_file():
        export_onnx(ensemble, path, working_size=working_size, verify=False, progress=False)
    frames = [synthesize("target", "val", i, frame_size)[0][None] for i in range(n_frames)]
    session = ort.InferenceSession(str(read_model_file(path).path), providers=["CPUExecutionProvider"])
    graph = build_graph(ensemble, working_size=working_size)

    def torch_run(frame: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return graph(torch.from_numpy(frame)).numpy()

    def ort_run(frame: np.ndarray) -> np.ndarray:
        return session.run(["labels"], {"image": frame})[0]

    same = float(np.mean([np.mean(torch_run(f) == ort_run(f)) for f in frames]))
    t_torch, t_ort = _timed(torch_run, frames, runs), _timed(ort_run, frames, runs)
    med_torch, med_ort = statistics.median(t_torch), statistics.median(t_ort)
    return {"frame_size": f"{frame_size[0]}x{frame_size[1]}", "frames": n_frames, "runs": runs,
            "torch_ms": {"median": round(1e3 * med_torch, 1), "min": round(1e3 * min(t_torch), 1)},
            "ort_ms": {"median": round(1e3 * med_ort, 1), "min": round(1e3 * min(t_ort), 1)},
            "ort_over_torch": round(med_ort / med_torch, 3), "identical_labels": same,
            "providers": session.get_providers(), "torch_threads": torch.get_num_threads()}


def bench_preprocess(working_size: tuple[int, int], n_frames: int, checkpoint: Path | None) -> dict[str, Any]:
    """In-graph bilinear vs PIL BICUBIC at a 2× downscale (Cityscapes 2048×1024 → 1024×512 for the default)."""
    w, h = working_size
    scenes = [synthesize("target", "val", i, (2 * w, 2 * h)) for i in range(n_frames)]
    graph = build_graph(Ensemble([create_model("tiny")], [1.0]), working_size=working_size)  # preprocess only
    diffs = []
    for rgb, _ in scenes:
        ours = graph.preprocess(torch.from_numpy(rgb)[None])[0]
        pil = image_to_tensor(resize_image(Image.fromarray(rgb), working_size))
        diffs.append((ours - pil).abs().flatten())
    diff = torch.cat(diffs)
    report: dict[str, Any] = {"frame_size": f"{2 * w}x{2 * h}", "working_size": f"{w}x{h}", "frames": n_frames,
                              "input_abs_diff": {"mean": round(float(diff.mean()), 3),
                                                 "p99": round(float(diff.quantile(0.99)), 2),
                                                 "max": round(float(diff.max()), 2)}}
    if checkpoint is None:
        return report
    ensemble = load_ensemble([str(checkpoint)])
    graph = build_graph(ensemble, working_size=working_size)
    confusion = {"bilinear_graph": ConfusionMatrix(), "pil_bicubic": ConfusionMatrix()}
    same = total = 0
    with torch.inference_mode():
        for rgb, label_ids in scenes:
            image = torch.from_numpy(rgb)[None]
            graph_labels = graph(image)[0].numpy()
            pil = image_to_tensor(resize_image(Image.fromarray(rgb), working_size))[None]
            probs = ensemble.fused(pil)
            up = torch.nn.functional.interpolate(probs, size=rgb.shape[:2], mode="bilinear", align_corners=True)
            pil_labels = up.argmax(1)[0].numpy()
            gt = cityscapes_to_trainid(label_ids)
            confusion["bilinear_graph"].update(gt, graph_labels.astype(np.uint8))
            confusion["pil_bicubic"].update(gt, pil_labels.astype(np.uint8))
            same += int((graph_labels == pil_labels).sum())
            total += graph_labels.size
    report["checkpoint"] = str(checkpoint)
    report["label_agreement"] = same / total
    report["miou"] = {k: round(100 * c.miou(), 2) for k, c in confusion.items()}
    return report


def measure_export(*, model: str = "deeplabv2-r101", members: tuple[int, ...] = (1, 3),
                   precisions: tuple[str, ...] = ("fp32", "fp16"), working_size: tuple[int, int] = (1024, 512),
                   frame_size: tuple[int, int] = (2048, 1024), frames: int = 2, runs: int = 3,
                   checkpoint: Path | None = None, skip: tuple[str, ...] = (), workdir: Path | None = None) -> dict:
    """The sections of the module docstring not in ``skip``, as one JSON-ready report."""
    import onnxruntime

    report: dict[str, Any] = {"machine": {**host_info(onnxruntime=onnxruntime.__version__), **torch_info()},
                              "model": model, "working_size": list(working_size),
                              "note": "random-init members: export time, size and latency do not depend on weights"}
    with tempfile.TemporaryDirectory(prefix="ftadapt-bench-") as tmp:
        root = workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if "export" not in skip:
            report["export"] = bench_export(root, model, list(members), list(precisions), working_size)
        if "latency" not in skip:
            report["latency"] = bench_latency(root, model, working_size, frame_size, frames, runs)
            print(json.dumps(report["latency"]), flush=True)
    if "preprocess" not in skip:
        report["preprocess"] = bench_preprocess(working_size, frames, checkpoint)
    return report
