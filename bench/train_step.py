"""Training-step throughput: ``ftadapt bench train-step`` (and ``bench_train_step`` for scripts) prints JSON.

It times the real step — the :class:`~ftadapt.training.step.TrainStep` that ``build_train_step`` makes for the
training loop, with the same optimizers, autocast, channels_last, cuDNN and the other ``speed`` options of the config,
single process — on one of two inputs:

- ``data="memory"``: one fixed source batch (random image, random labels) and one target batch at the protocol sizes,
  kept in (pinned) host memory and copied to the device every step as the loop does. No decoding, no random rescale:
  this is the compute of a step.
- ``data="synthetic"``: a small synthetic dataset (6 frames per domain) written into a temporary folder — at the
  protocol sizes, or at ``raw_sizes`` (e.g. GTA5's 1914×1052 and Cityscapes' 2048×1024, so that decoding and the
  protocol resize cost what they cost on the real data) — and read through the real loaders (``endless_batches``,
  CLAN augmentation including the ×1.1 / ×0.8 rescale) with ``data.num_workers`` each. ``data_share`` is then the
  fraction of the wall time the loop waited for a batch, as ``time/data_share`` in a run's metrics.

The config is a resolved :class:`TrainConfig`: ``build_config({**BENCH_DEFAULTS, **overrides})`` (the bench's own
defaults are a tiny model at small sizes). After ``warmup`` steps (cuDNN autotuning, allocator growth, torch.compile,
CUDA-graph capture) it runs ``steps`` timed steps (stopping early after ``max_seconds``), synchronising the device only
at both ends. With ``data="synthetic"`` the warm-up first runs one step at each of CLAN's rescaled input sizes (×1.1,
×0.8, ×1), so that no autotuning, compilation or capture of a new shape lands in the timed steps. Reported: steps/s
over the wall time, steps/s with the data waits taken out (``compute_steps_per_s``), the data share, the peak memory
(CUDA: ``max_memory_allocated`` over the timed steps; CPU: the process's peak RSS, everything it ever held included),
G's FLOPs and unfused memory traffic per step with the rates they imply (``step_profile.model_cost``), and the last
step's losses. ``profile`` > 0 then profiles that many more steps (``step_profile.profile_steps``: device-busy share,
launches, kernel time by category, top kernels; a profiler that fails leaves ``{"error": …}`` and the timing).
"""
from __future__ import annotations

import contextlib
import dataclasses
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ftadapt.bench.report import host_info, torch_info
from ftadapt.bench.step_profile import model_cost, profile_steps
from ftadapt.config import TrainConfig
from ftadapt.data.loader import endless_batches
from ftadapt.data.transforms import scaled_size
from ftadapt.errors import UsageError
from ftadapt.labels import NUM_CLASSES
from ftadapt.protocol import RANDOM_SCALES
from ftadapt.training.step import Readback, TrainStep, build_train_step

DATA_MODES = ("memory", "synthetic")
RAW_SIZES = ((1914, 1052), (2048, 1024))  # GTA5 and Cityscapes files (W×H), before the protocol resize
# The bench's own config defaults, applied before the user's keys: build_config({**BENCH_DEFAULTS, **overrides}).
# ``steps`` needs no value: the bench sets the schedule horizon to the number of steps it runs.
BENCH_DEFAULTS: dict[str, Any] = {"method": "clan-norm", "model": "tiny", "data.source_size": (160, 96),
                                  "data.target_size": (128, 64), "data.num_workers": 2, "seed": 0}


def memory_batches(size: tuple[int, int], labelled: bool, pin: bool, seed: int, scale: float = 1.0) -> dict:
    """One batch of size 1 as the loader would give it: BGR − mean scale image (rescaled by ``scale``), trainIds 0–18
    with some 255 at the nominal ``size`` (labels are never rescaled)."""
    w, h = size
    sw, sh = scaled_size(size, scale)
    g = torch.Generator().manual_seed(seed)
    batch = {"image": torch.randn(1, 3, sh, sw, generator=g) * 60.0}
    if labelled:
        label = torch.randint(0, NUM_CLASSES, (1, h, w), generator=g)
        label[:, : h // 10] = 255
        batch["label"] = label
    if pin:
        batch = {k: v.pin_memory() for k, v in batch.items()}
    return batch


class _Repeat:
    """An endless iterator of the same batch (the ``memory`` input)."""

    def __init__(self, batch: dict) -> None:
        self.batch = batch

    def __next__(self) -> dict:
        return self.batch


@contextlib.contextmanager
def synthetic_training_sets(source_size: tuple[int, int], target_size: tuple[int, int],
                            raw_sizes: tuple[tuple[int, int], tuple[int, int]], frames: int, seed: int):
    """The training datasets (GTA5 source, Cityscapes train target, CLAN augmentation) over a temporary synthetic set
    of ``frames`` files per domain written at ``raw_sizes`` and loaded at the protocol sizes."""
    from ftadapt.data.cityscapes import Cityscapes
    from ftadapt.data.gta5 import GTA5
    from ftadapt.data.synthetic import write_synthetic

    with tempfile.TemporaryDirectory(prefix="ftadapt-bench-") as tmp:
        layout = write_synthetic(Path(tmp) / "data", n_source=frames, n_target_train=frames, n_target_val=1,
                                 source_size=raw_sizes[0], target_size=raw_sizes[1], seed=seed)
        yield (GTA5(layout.gta5_root, size=source_size, augment="clan"),
               Cityscapes(layout.cityscapes_root, split="train", size=target_size, augment="clan", with_labels=False))


@contextlib.contextmanager
def _synthetic_batches(source_size: tuple[int, int], target_size: tuple[int, int], num_workers: int, seed: int,
                       raw_sizes: tuple[tuple[int, int], tuple[int, int]]):
    """Real loaders over a synthetic set written at ``raw_sizes`` and loaded at the protocol sizes."""
    with synthetic_training_sets(source_size, target_size, raw_sizes, 6, seed) as (src, tgt), \
            endless_batches(src, batch_size=1, num_workers=num_workers, seed=seed) as s, \
            endless_batches(tgt, batch_size=1, num_workers=num_workers, seed=seed + 1) as t:
        yield s, t


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train_step(cfg: TrainConfig, *, steps: int = 10, warmup: int = 2, data: str = "memory",
                     threads: int | None = None, raw_sizes: tuple[tuple[int, int], tuple[int, int]] | None = None,
                     max_seconds: float | None = None, profile: int = 0, progress: bool = True) -> dict[str, Any]:
    """Time ``steps`` training steps of ``cfg`` (method, model, sizes, ``speed`` options, device, seed,
    ``data.num_workers``) after ``warmup`` untimed ones, then profile ``profile`` more; see the module docstring.
    ``threads`` sets torch's intra-op threads (on a busy CPU, 1 avoids spin-waits). Returns a JSON-ready dict."""
    if data not in DATA_MODES:
        raise UsageError(f"data={data!r}: expected one of {', '.join(DATA_MODES)}")
    if steps < 1 or warmup < 0 or profile < 0:
        raise UsageError(f"steps={steps}, warmup={warmup}, profile={profile}: need at least one timed step, "
                         "warmup ≥ 0 and profile ≥ 0")
    if cfg.data.batch_size != 1:
        raise UsageError(f"data.batch_size={cfg.data.batch_size}: bench train-step times batches of 1 (the paper's)")
    scales = [scale for _, scale in RANDOM_SCALES] + [1.0] if data == "synthetic" else []
    # The schedule's horizon: every step the bench runs, plus one, so that no learning rate reaches 0.
    cfg = dataclasses.replace(cfg, steps=len(scales) + warmup + steps + profile + 1, stop_at=0)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = cfg.speed.cudnn_benchmark
    counters_before = _compile_counters() if cfg.speed.compile != "off" else {}
    t_build = time.perf_counter()
    step_fn = build_train_step(cfg)
    if step_fn.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(step_fn.device)
    build_s = time.perf_counter() - t_build
    shape_warmup_s = _shape_warmup(step_fn, scales)
    raw = (raw_sizes or (cfg.data.source_size, cfg.data.target_size)) if data == "synthetic" else None
    with _inputs(cfg, data, raw, pin=step_fn.device.type == "cuda") as (src_iter, tgt_iter):
        timing = _time_steps(step_fn, src_iter, tgt_iter, first=len(scales), warmup=warmup, steps=steps,
                             max_seconds=max_seconds, progress=progress)
        memory = _memory_report(step_fn.device)
        breakdown = (_profile(step_fn, src_iter, tgt_iter, timing, first=len(scales) + warmup + timing.timed,
                              steps=profile) if profile else None)
    report = _report(cfg, step_fn, timing, data=data, raw=raw, warmup=warmup, build_s=build_s,
                     shape_warmup_s=shape_warmup_s)
    report.update(memory)
    if breakdown is not None:
        report["profile"] = breakdown
    if cfg.speed.compile != "off":
        after = _compile_counters()
        report["compile_counters"] = {k: n - counters_before.get(k, 0) for k, n in after.items()
                                      if n != counters_before.get(k, 0)}
    report["machine"] = {**host_info(), **torch_info(step_fn.device)}
    return report


def _shape_warmup(step_fn: TrainStep, scales: list[float]) -> float:
    """One step at each of ``scales`` (every rescaled shape autotuned / compiled / captured before the timing);
    returns the seconds it took."""
    cfg, pin, seed = step_fn.cfg, step_fn.device.type == "cuda", step_fn.cfg.seed
    start = time.perf_counter()
    for i, scale in enumerate(scales):
        step_fn(i, memory_batches(cfg.data.source_size, True, pin, seed, scale),
                memory_batches(cfg.data.target_size, False, pin, seed + 1, scale)
                if step_fn.method.uses_target else None)
    _sync(step_fn.device)
    return time.perf_counter() - start


def _inputs(cfg: TrainConfig, data: str, raw: tuple[tuple[int, int], tuple[int, int]] | None, *, pin: bool):
    """The (source, target) batch iterators of ``data`` as a context manager."""
    if data == "memory":
        return contextlib.nullcontext((_Repeat(memory_batches(cfg.data.source_size, True, pin, cfg.seed)),
                                       _Repeat(memory_batches(cfg.data.target_size, False, pin, cfg.seed + 1))))
    return _synthetic_batches(cfg.data.source_size, cfg.data.target_size, cfg.data.num_workers, cfg.seed, raw)


@dataclass
class _Timing:
    """What the timed steps measured; ``pending`` is the last step's readback, not yet waited for."""

    warmup_s: float
    wall_s: float
    data_s: float
    timed: int
    numbers: dict[str, float]
    pending: Readback


def _time_steps(step_fn: TrainStep, src_iter, tgt_iter, *, first: int, warmup: int, steps: int,
                max_seconds: float | None, progress: bool) -> _Timing:
    """``warmup`` untimed then ``steps`` timed steps from step ``first``; the host waits for a step's losses one step
    later, as the training loop does, and the device is synchronised only at the ends."""
    dev, uses_target, cfg = step_fn.device, step_fn.method.uses_target, step_fn.cfg
    data_s = warmup_s = 0.0
    timed, pending = 0, None
    bar = tqdm(total=warmup + steps, disable=not progress, unit="step", desc=f"{cfg.method} {cfg.model}",
               file=sys.stderr)
    start = time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(dev)
            warmup_s = time.perf_counter() - start
            data_s, start = 0.0, time.perf_counter()
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
        tick = time.perf_counter()
        src_batch = next(src_iter)
        tgt_batch = next(tgt_iter) if uses_target else None
        data_s += time.perf_counter() - tick
        result = step_fn(first + i, src_batch, tgt_batch)
        if pending is not None:  # the loop's one-step-late finite check: the host runs at most a step ahead
            pending.numbers(None)
        pending = result.readback
        bar.update(1)
        if i >= warmup:
            timed += 1
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
    numbers = pending.numbers(None)
    _sync(dev)
    wall_s = time.perf_counter() - start
    bar.close()
    return _Timing(warmup_s, wall_s, data_s, timed, numbers, pending)


def _profile(step_fn: TrainStep, src_iter, tgt_iter, timing: _Timing, *, first: int, steps: int) -> dict[str, Any]:
    """``profile_steps`` over ``steps`` more steps, or ``{"error": …}`` when the profiler fails."""
    pending = timing.pending

    def run_step(i: int) -> None:  # as timed: the host waits for a step's losses one step later
        nonlocal pending
        result = step_fn(i, next(src_iter), next(tgt_iter) if step_fn.method.uses_target else None)
        pending.numbers(None)
        pending = result.readback

    try:
        return profile_steps(run_step, first, steps, step_fn.device)
    except Exception as exc:  # a profiler failure (CUPTI, say) must not lose the timing
        return {"error": f"{type(exc).__name__}: {exc}"}


def _report(cfg: TrainConfig, step_fn: TrainStep, timing: _Timing, *, data: str, raw: tuple | None, warmup: int,
            build_s: float, shape_warmup_s: float) -> dict[str, Any]:
    """The JSON report of the timing (memory, profile and machine are added by the caller)."""
    speed, source_size, target_size = cfg.speed, cfg.data.source_size, cfg.data.target_size
    timed, wall_s = timing.timed, timing.wall_s
    cost = model_cost(cfg.model, [source_size] + [target_size] * step_fn.method.uses_target,
                      torch.bfloat16 if speed.amp == "bf16" else torch.float32)
    flops, traffic = cost["flops"], cost["bytes"]
    return {
        "benchmark": "train_step", "method": cfg.method, "model": cfg.model, "source_size": list(source_size),
        "target_size": list(target_size), "batch_size": 1, "amp": speed.amp, "channels_last": speed.channels_last,
        "compile": speed.compile, "cudnn_benchmark": speed.cudnn_benchmark, "data": data,
        "num_workers": cfg.data.num_workers if data == "synthetic" else 0, "device": str(step_fn.device),
        "raw_sizes": [list(x) for x in raw] if raw is not None else None,
        "warmup_steps": warmup, "warmup_s": round(timing.warmup_s, 3), "shape_warmup_s": round(shape_warmup_s, 3),
        "build_s": round(build_s, 3), "timed_steps": timed, "wall_s": round(wall_s, 3),
        "steps_per_s": timed / wall_s, "compute_steps_per_s": timed / max(wall_s - timing.data_s, 1e-9),
        "step_ms": 1000.0 * wall_s / timed, "data_share": timing.data_s / wall_s,
        "model_tflop_per_step": flops / 1e12, "model_tflops_achieved": flops * timed / wall_s / 1e12,
        "model_unfused_gb_per_step": traffic / 1e9, "model_unfused_gbps_achieved": traffic * timed / wall_s / 1e9,
        "model_cost_note": "G forward + backward, both domains, nominal sizes (no rescale): conv/matmul FLOPs and the "
                           "bytes its operators read + write when each is its own kernel (bf16 with amp, else fp32); "
                           "discriminator and losses (a few per cent) not counted",
        "losses": dict(timing.numbers),
    }


_COMPILE_COUNTERS = {"stats": ("unique_graphs", "calls_captured"), "frames": ("total", "ok"),
                     "inductor": ("cudagraph_skips", "cudagraph_recorded_non_static_inputs", "fxgraph_cache_hit",
                                  "fxgraph_cache_miss"), "graph_break": ()}


def _compile_counters() -> dict[str, int]:
    """What torch.compile has done in this process so far: graphs compiled (one per input shape), graph breaks, and
    whether CUDA graphs were skipped (``cudagraph_skips``) — the figures that say whether a compiled timing means
    anything. Take the difference of two calls for one benchmark."""
    from torch._dynamo.utils import counters

    return {f"{group}.{key}": n for group, keys in _COMPILE_COUNTERS.items()
            for key, n in counters[group].items() if not keys or key in keys}


def _memory_report(dev: torch.device) -> dict[str, Any]:
    if dev.type == "cuda":
        return {"peak_memory_mib": torch.cuda.max_memory_allocated(dev) / 2**20,
                "peak_reserved_mib": torch.cuda.max_memory_reserved(dev) / 2**20,
                "peak_memory_kind": "torch.cuda.max_memory_allocated over the timed steps"}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"peak_memory_mib": rss_kib / 1024, "peak_memory_kind": "peak RSS of the whole process (ru_maxrss)"}


def format_report(report: dict[str, Any]) -> str:
    """Two lines for people."""
    w, h = report["source_size"]
    tw, th = report["target_size"]
    return (f"{report['method']} {report['model']} {w}x{h}/{tw}x{th} amp={report['amp']} "
            f"channels_last={report['channels_last']} on {report['device']} ({report['data']} data): "
            f"{report['steps_per_s']:.3f} steps/s ({report['step_ms']:.1f} ms/step, compute "
            f"{report['compute_steps_per_s']:.3f} steps/s, data share {100 * report['data_share']:.1f} %)\n"
            f"peak memory {report['peak_memory_mib']:.0f} MiB ({report['peak_memory_kind']}); "
            f"{report['timed_steps']} timed steps after {report['warmup_steps']} warm-up; "
            f"G {report['model_tflop_per_step']:.3g} TFLOP and {report['model_unfused_gb_per_step']:.3g} GB "
            f"(unfused) per step → {report['model_tflops_achieved']:.3g} TFLOP/s, "
            f"{report['model_unfused_gbps_achieved']:.3g} GB/s")


__all__ = ["bench_train_step", "format_report", "BENCH_DEFAULTS", "DATA_MODES", "RAW_SIZES", "memory_batches",
           "synthetic_training_sets"]
