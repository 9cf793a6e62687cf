"""The deployed ensemble on a GPU: two items of the GPU check (``ftadapt bench gpu``), each one call.

``ensemble_latency``: the exported 3-member DeepLab-v2 R101 ensemble (random-init members: latency does not depend on
weights) at the 1024×512 working size on 2048×1024 frames, FP32 and FP16, through ``ftadapt.bench.latency``: PyTorch
running the exported graph's module eager and CUDA-graphed, ONNX Runtime CUDA and TensorRT (plain and CUDA-graphed)
when installed — end-to-end p50/p90/p99 per frame, the device time (CUDA events) and memory. Beside each FP16 figure
the physical floor: the members' counted forward FLOPs (2 per multiply-accumulate) at the dense FP16 tensor-core peak
of an H100 (989.4 TFLOP/s) and of this GPU when its peak is known, and the ratio to it. The target: the FP16
ensemble end to end in at most 8 ms on an H100.

``fp16_parity``: the same FP16 file on the synthetic Cityscapes-layout val set through ``ftadapt bench accuracy``
(``ftadapt.bench.accuracy``): PyTorch FP32 (the reference), PyTorch FP16, ONNX Runtime CUDA and TensorRT — FP16 vs
FP32 label agreement and ΔmIoU. With random-init members the agreement is the meaningful figure (the mIoU of random
weights is near zero); run ``ftadapt bench accuracy`` on Cityscapes with trained members for the real one.

On a CPU (``--device cpu --tiny``) both run as a structural dry run with the tiny model; the GPU-only rows say "not
run" with their reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# Dense FP16 tensor-core peaks in TFLOP/s (NVIDIA data sheets, without sparsity), matched against the GPU's name.
PEAK_FP16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
                    ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.2))
H100_TFLOPS = 989.4
TARGET_FP16_MS = 8.0
MEMBERS = 3
PAPER_SIZES = {"model": "deeplabv2-r101", "working_size": (1024, 512), "frame_size": (2048, 1024)}
TINY_SIZES = {"model": "tiny", "working_size": (128, 64), "frame_size": (256, 128)}


def peak_tflops(gpu_name: str) -> float | None:
    """The dense FP16 peak of a GPU by name (the first entry whose key is in the name), None when unknown."""
    return next((peak for key, peak in PEAK_FP16_TFLOPS if key in gpu_name), None)


def physical_floor(model: str, working_size: tuple[int, int], members: int, gpu_name: str | None) -> dict[str, Any]:
    """The least time ``members`` forwards of ``model`` at ``working_size`` can take at a GPU's FP16 peak."""
    from ftadapt.bench.step_profile import model_cost

    flops = model_cost(model, [working_size], backward=False)["flops"]
    peak = peak_tflops(gpu_name or "")
    return {"member_forward_tflop": round(flops / 1e12, 4), "members": members,
            "floor_ms_h100": round(members * flops / (H100_TFLOPS * 1e12) * 1e3, 3),
            "gpu": gpu_name, "gpu_peak_fp16_tflops": peak,
            "floor_ms_this_gpu": None if peak is None else round(members * flops / (peak * 1e12) * 1e3, 3),
            "counted": "convolution FLOPs of the members' forward (torch FlopCounterMode, 2 per MAC); resize, softmax "
                       "and argmax are memory-bound and not counted"}


def _gpu_name(device: str) -> str | None:
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None


def ensemble_latency(work: Path, device: str, *, tiny: bool, runs: int = 30) -> dict[str, Any]:
    """The ``ensemble_latency`` item (see the module docstring)."""
    from ftadapt.bench.latency import measure_latency

    sizes, cuda = TINY_SIZES if tiny else PAPER_SIZES, device.startswith("cuda")
    report = measure_latency(random=(sizes["model"],), members=MEMBERS, precisions=("fp32", "fp16"),
                             backends=("pytorch", "onnxruntime", "tensorrt"), device=device,
                             frame_size=sizes["frame_size"], working_size=sizes["working_size"], batches=(1,),
                             warmup=10 if cuda else 1, runs=runs if cuda else 3, cuda_graph=True,
                             engine_cache=work / "engines", workdir=work)
    floor = physical_floor(sizes["model"], sizes["working_size"], MEMBERS, _gpu_name(device))
    this_gpu = floor["floor_ms_this_gpu"]
    for row in report["results"]:
        if "p50_ms" in row and this_gpu:
            row["p50_over_floor"] = round(row["p50_ms"] / this_gpu, 2)
    fp16 = [r for r in report["results"] if r["precision"] == "fp16" and "p50_ms" in r]
    best = min(fp16, key=lambda r: r["p50_ms"]) if fp16 else None
    report["floor"] = floor
    report["fp16_target"] = {
        "target_ms_on_h100": TARGET_FP16_MS, "gpu": floor["gpu"],
        "best": None if best is None else {k: best[k] for k in ("backend", "variant", "p50_ms", "p99_ms")},
        "meets_target": None if best is None or tiny else best["p50_ms"] <= TARGET_FP16_MS,
        "best_over_floor": None if best is None or not this_gpu else round(best["p50_ms"] / this_gpu, 2)}
    return report


def fp16_parity(work: Path, device: str, *, tiny: bool) -> dict[str, Any]:
    """The ``fp16_parity`` item (see the module docstring): bench accuracy of the FP16 ensemble on synthetic val."""
    from ftadapt.bench.accuracy import measure_accuracy
    from ftadapt.bench.random_models import export_random_model, random_checkpoints
    from ftadapt.data.synthetic import write_synthetic

    sizes = TINY_SIZES if tiny else PAPER_SIZES
    data = work / ("synthetic-tiny" if tiny else "synthetic-2048")
    if not data.is_dir():
        write_synthetic(data, n_source=1, n_target_train=1, n_target_val=4 if tiny else 8,
                        target_size=sizes["frame_size"], seed=0)
    path = export_random_model(work, sizes["model"], sizes["working_size"], "fp16", members=MEMBERS)
    report = measure_accuracy(path, data / "cityscapes", checkpoints=random_checkpoints(work, sizes["model"], MEMBERS),
                              device=device, engine_cache=work / "engines", progress=False)
    report["weights"] = "random-init members: label agreement is meaningful, mIoU is not"
    return report


def headline(item: dict[str, Any]) -> dict[str, Any]:
    """The few figures of either item for the GPU check's log line."""
    if "fp16_target" in item:
        return {"fp16_target": item["fp16_target"], "floor_ms_h100": item["floor"]["floor_ms_h100"]}
    rows = item.get("backends", {})
    return {"verdict": item.get("verdict", {}).get("line"),
            "differing_percent": {n: (r.get("agreement") or {}).get("differing_percent") for n, r in rows.items()
                                  if r.get("status") == "ran" and r.get("agreement")},
            "delta_miou": {n: r.get("delta_miou") for n, r in rows.items() if r.get("status") == "ran"}}


__all__ = ["ensemble_latency", "fp16_parity", "physical_floor", "peak_tflops", "headline", "PEAK_FP16_TFLOPS"]
