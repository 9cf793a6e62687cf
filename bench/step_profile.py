"""Where a training step's time goes, for ``bench_train_step``: the arithmetic it must do and a kernel breakdown.

- ``model_cost`` counts, for G's forward and backward per step on the meta device (no memory, no compute; the
  discriminator and the losses, a few per cent, are left out), the convolution/matmul FLOPs and the bytes every
  operator reads and writes when each runs as its own kernel (eager PyTorch; a view moves nothing). A measured
  steps/s then becomes achieved TFLOP/s and GB/s — how far a GPU is from its tensor-core and memory peaks, and how
  much of the traffic operator fusion (torch.compile) could remove.
- ``profile_steps`` runs a few steps under ``torch.profiler`` and ``summarize`` turns the events into per-step figures:
  wall time, device-busy time (the union of kernel intervals) and its share of the wall time, kernel launches, time per
  kernel category and the top kernels. A busy share well below 1 means the GPU waits for the host (Python dispatch
  and kernel launches: CUDA graphs / torch.compile help); close to 1 means the kernels themselves are the cost.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# Checked in order, substrings of the lower-cased kernel name; the first match names the category.
KERNEL_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("triton (torch.compile)", ("triton_",)),
    ("convolution", ("implicit_gemm", "implicit_convolve", "conv", "wgrad", "dgrad", "fprop", "winograd")),
    ("gemm", ("gemm", "cutlass", "cublas")),
    ("batch_norm", ("batch_norm", "bn_fw", "bn_bw", "welford")),
    ("upsample", ("upsample",)),
    ("softmax/loss", ("softmax", "nll_loss", "cross_entropy", "binary_cross")),
    ("optimizer", ("fused_sgd", "adam", "sgd", "multi_tensor_apply")),
    ("copy/memset/layout", ("memcpy", "memset", "copy", "nchwtonhwc", "nhwctonchw")),
    ("reduce", ("reduce",)),
    ("elementwise", ("elementwise", "vectorized", "unrolled")),
)
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx", "cudaGraphLaunch")
TOP_KERNELS = 15


@dataclass(frozen=True)
class DeviceEvent:
    """One kernel, copy or memset on the device: name and [start, end) in microseconds."""

    name: str
    start_us: float
    end_us: float


def kernel_category(name: str) -> str:
    """The category of a device kernel by its name (see ``KERNEL_CATEGORIES``); "other" when nothing matches."""
    low = name.lower()
    return next((cat for cat, keys in KERNEL_CATEGORIES if any(k in low for k in keys)), "other")


def busy_time_us(events: Iterable[DeviceEvent]) -> float:
    """Length of the union of the events' intervals: the time at least one kernel was running."""
    total, end = 0.0, float("-inf")
    for ev in sorted(events, key=lambda e: e.start_us):
        if ev.end_us <= end:
            continue
        total += ev.end_us - max(ev.start_us, end)
        end = ev.end_us
    return total


def _top(totals: dict[str, list[float]], per_step: float, category: bool) -> list[dict[str, Any]]:
    top = sorted(totals.items(), key=lambda kv: -kv[1][1])[:TOP_KERNELS]
    return [{"name": name[:160], **({"category": kernel_category(name)} if category else {}),
             "calls_per_step": n * per_step, "ms_per_step": round(ms * per_step, 3)} for name, (n, ms) in top]


def _add(totals: dict[str, list[float]], name: str, ms: float) -> None:
    entry = totals.setdefault(name, [0.0, 0.0])
    entry[0] += 1
    entry[1] += ms


def summarize(device_events: list[DeviceEvent], host_ops: list[tuple[str, float]], launches: int,
              launch_cpu_us: float, steps: int, wall_s: float) -> dict[str, Any]:
    """Per-step figures of ``steps`` profiled steps that took ``wall_s`` seconds; see the module docstring.

    ``host_ops``: (name, self CPU µs) of every operator the host dispatched; ``launches`` / ``launch_cpu_us``: the
    kernel-launch calls and the host time spent in them."""
    per_step = 1.0 / steps
    wall_ms = 1000.0 * wall_s * per_step
    host: dict[str, list[float]] = {}
    for name, self_us in host_ops:
        _add(host, name, self_us / 1000.0)
    report: dict[str, Any] = {"profiled_steps": steps, "wall_ms_per_step": round(wall_ms, 3),
                              "host_ops_per_step": round(len(host_ops) * per_step, 1),
                              "host_op_self_ms_per_step": round(sum(ms for _, ms in host.values()) * per_step, 3),
                              "top_host_ops": _top(host, per_step, category=False)[:10],
                              "launches_per_step": round(launches * per_step, 1),
                              "launch_cpu_ms_per_step": round(launch_cpu_us * per_step / 1000.0, 3)}
    if not device_events:
        report["device"] = None  # a CPU run: no device timeline
        return report
    busy_ms = busy_time_us(device_events) * per_step / 1000.0
    by_category: dict[str, float] = {}
    by_kernel: dict[str, list[float]] = {}
    for ev in device_events:
        ms = (ev.end_us - ev.start_us) / 1000.0
        cat = kernel_category(ev.name)
        by_category[cat] = by_category.get(cat, 0.0) + ms
        _add(by_kernel, ev.name, ms)
    report["device"] = {
        "kernels_per_step": round(len(device_events) * per_step, 1),
        "busy_ms_per_step": round(busy_ms, 3),
        "busy_share": round(busy_ms / wall_ms, 4) if wall_ms > 0 else None,
        "kernel_ms_per_step_by_category": {cat: round(ms * per_step, 3) for cat, ms in
                                           sorted(by_category.items(), key=lambda kv: -kv[1])},
        "top_kernels": _top(by_kernel, per_step, category=True),
    }
    return report


def profile_steps(run_step: Callable[[int], None], first_step: int, steps: int, device: torch.device) -> dict[str, Any]:
    """Run ``run_step(i)`` for ``steps`` steps from ``first_step`` under torch.profiler (CPU, plus CUDA on a GPU)
    and return ``summarize``'s figures. The device is synchronised before and after, not in between."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for i in range(first_step, first_step + steps):
            run_step(i)
        sync()
        wall_s = time.perf_counter() - start
    device_events, host_ops, launches, launch_us = [], [], 0, 0.0
    for ev in prof.events():
        if ev.device_type == DeviceType.CUDA:
            device_events.append(DeviceEvent(ev.name, ev.time_range.start, ev.time_range.end))
        elif ev.name in LAUNCH_CALLS:
            launches += 1
            launch_us += ev.time_range.end - ev.time_range.start
        elif ev.name.startswith("aten::"):
            host_ops.append((ev.name, ev.self_cpu_time_total))
    return summarize(device_events, host_ops, launches, launch_us, steps, wall_s)


class TrafficCounter(TorchDispatchMode):
    """Bytes of every tensor each dispatched operator reads or writes (inputs + outputs, in-place outputs included);
    views and detaches move nothing and count zero. What an unfused (eager) execution moves at least."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not (func.is_view or func is torch.ops.aten.detach.default):
            self.bytes += sum(t.numel() * t.element_size() for t in tree_flatten((args, kwargs, out))[0]
                              if isinstance(t, torch.Tensor))
        return out


def model_cost(model_name: str, sizes: Iterable[tuple[int, int]], dtype: torch.dtype = torch.float32, *,
               backward: bool = True) -> dict[str, float]:
    """FLOPs (convolutions, matmuls; 2 per multiply-accumulate) and unfused bytes of one forward + backward of the
    registered ``model_name`` per (W, H) input size, summed (batch 1, ``dtype`` weights and activations, every head's
    logits and the features in the loss, as in training), counted on the meta device; ``backward=False`` counts the
    forward alone in eval mode (inference). Returns ``{"flops": …, "bytes": …}``."""
    from torch.utils.flop_counter import FlopCounterMode

    from ftadapt.models.registry import create_model

    with torch.device("meta"):
        net = create_model(model_name).to(dtype)
    net.train(backward)
    flops, traffic = FlopCounterMode(display=False), TrafficCounter()
    with flops, traffic:
        for w, h in sizes:
            out = net(torch.empty(1, 3, h, w, device="meta", dtype=dtype))
            if backward:
                sum(x.float().sum() for x in (*out.logits, out.features)).backward()
    return {"flops": float(flops.get_total_flops()), "bytes": float(traffic.bytes)}


__all__ = ["DeviceEvent", "kernel_category", "busy_time_us", "summarize", "profile_steps", "model_cost",
           "TrafficCounter", "KERNEL_CATEGORIES"]
