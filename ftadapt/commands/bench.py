"""``ftadapt bench <name>``: the user benchmarks — ``accuracy`` (the deployed mIoU beside PyTorch's, gated),
``latency``, ``train-step`` and ``gpu`` (the GPU check) — each printing its figures as JSON (``--json FILE`` keeps a
copy). The measuring lives in ``ftadapt.bench``; these commands only parse and print. The investigations behind
design decisions are apart: ``python -m ftadapt.commands.investigate``.
"""
from __future__ import annotations

import os
from pathlib import Path

import click

from ftadapt.commands.common import (
    SIZE,
    DatasetSpecType,
    check_json,
    device_option,
    emit,
    overwrite_option,
    prints_report,
)
from ftadapt.commands.train import config_options, config_overrides, explicit
from ftadapt.config import METHODS


@click.group("bench")
def bench() -> None:
    """Benchmarks that print figures as JSON."""


@bench.command("train-step")
@click.option("--method", type=click.Choice(METHODS), default=None, help="[clan-norm]")
@click.option("--model", default=None, help="Registered model, e.g. tiny (default), deeplabv2-r101.")
@click.option("--source-size", type=SIZE, default=None, help="Source batch size W×H [160x96; the paper: 1280x720].")
@click.option("--target-size", type=SIZE, default=None, help="Target batch size W×H [128x64; the paper: 1024x512].")
@device_option(" (config key device)")
@config_options
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True, help="Timed steps.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Untimed steps first (cuDNN autotuning, allocator growth, compilation, CUDA-graph capture).")
@click.option("--profile", type=click.IntRange(min=0), default=0, show_default=True,
              help="Profile this many more steps: device-busy share, kernel launches, kernel time by category.")
@click.option("--data", type=click.Choice(["memory", "synthetic"]), default="memory", show_default=True,
              help="memory: fixed batches in host memory (compute only); synthetic: a synthetic dataset through the "
                   "real loaders (reports the data-loading share; data.num_workers per domain).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op CPU threads [torch's default]; 1 avoids spin-waiting on a busy CPU.")
@prints_report
def train_step(method, model, source_size, target_size, device, config_file, sets, steps, warmup, profile, data,
               threads) -> dict:
    """Steps/s, peak memory and data-loading share of the real training step.

    Speed options are config keys, set as for `ftadapt train`:
    \b
    ftadapt bench train-step --method clan-norm --model deeplabv2-r101 --source-size 1280x720 \\
        --target-size 1024x512 --steps 20 --device cuda --set speed.amp=bf16 --set speed.channels_last=true
    """
    from ftadapt.bench.train_step import BENCH_DEFAULTS, bench_train_step, format_report
    from ftadapt.config import build_config

    overrides = config_overrides(config_file, sets, method=method, model=model, device=explicit("device", device),
                                 **{"data.source_size": source_size, "data.target_size": target_size})
    cfg = build_config({**BENCH_DEFAULTS, **overrides})
    report = bench_train_step(cfg, steps=steps, warmup=warmup, data=data, threads=threads, profile=profile)
    click.echo(format_report(report), err=True)
    return report


def _list_of(choices: tuple[str, ...]):
    """A click callback: "a,b,c" → ("a", "b", "c"), each one of ``choices``."""
    def convert(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        unknown = [v for v in items if v not in choices]
        if unknown or not items:
            raise click.BadParameter(f"{value!r}: expected a comma-separated list of {', '.join(choices)}")
        return items
    return convert


def _batches(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        batches = tuple(int(v) for v in value.split(","))
    except ValueError:
        batches = ()
    if not batches or min(batches) < 1:
        raise click.BadParameter(f"{value!r}: expected batch sizes such as 1,2,4,8", ctx, param)
    return batches


def _outputs(func):
    """``--out DIR``, ``--json FILE`` and ``--overwrite`` of the accuracy and latency benches."""
    func = overwrite_option("an existing --out folder or --json file (the new one is complete before the old one "
                            "goes)")(func)
    func = click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
                        help="Also write the results to this file (they are always printed to stdout).")(func)
    return click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Write results.json, report.md and PNG figures into this new folder (whole or not at "
                             "all).")(func)


def _check_outputs(out: Path | None, json_out: str | None, overwrite: bool, inputs: list) -> None:
    """The output rule for --out and --json, before any measuring."""
    from ftadapt.fsutil import check_target

    if out is not None:
        check_target(out, overwrite=overwrite, inputs=inputs, what="--out", kind="folder")
    check_json(json_out, overwrite, inputs, beside=[("--out", out)])


def _finish(results: dict, out: Path | None, json_out: str | None, overwrite: bool) -> None:
    """Print the JSON, write --json and --out."""
    emit(results, json_out, always=True, overwrite=overwrite)
    if out is not None:
        from ftadapt.bench.outputs import write_out_dir

        written = write_out_dir(out, results, overwrite=overwrite)
        click.echo(f"wrote {out}/: {', '.join(written['files'])}", err=True)


@bench.command("accuracy")
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The .onnx file written by `ftadapt export`.")
@click.option("--data", type=DatasetSpecType(("cityscapes",)), required=True, metavar="cityscapes:ROOT",
              help="The Cityscapes root (leftImg8bit/ + gtFine/).")
@click.option("--split", default="val", show_default=True)
@click.option("--backends", default="pytorch,onnxruntime,tensorrt", show_default=True,
              callback=_list_of(("pytorch", "onnxruntime", "tensorrt")), help="Comma-separated.")
@click.option("--checkpoints", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Checkpoint, run or runs folders holding the file's members (matched by sha256), repeatable; "
                   "needed by the pytorch backend.")
@device_option()
@click.option("--tolerance", type=click.FloatRange(min=0), default=None,
              help="Largest |ΔmIoU| against pytorch, in mIoU points [0.1 for an FP16 file, 0.01 for FP32].")
@click.option("--min-identical", type=click.FloatRange(0, 100), default=None,
              help="Smallest share of labels identical to pytorch's, in percent [99.99 for an FP32 file; none for "
                   "FP16].")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N frames of the split.")
@click.option("--engine-cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="TensorRT engine cache folder.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decoding threads [CPU cores].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads of PyTorch and ONNX Runtime [their defaults]; 1 avoids spin-waiting on a busy CPU.")
@_outputs
def accuracy(model, data, out, json_out, overwrite, **options) -> None:
    """The deployed model's mIoU beside PyTorch's: one pass over the split, every backend on every frame, per-class
    deltas, labels that differ, and a pass/fail gate (exit 1 when a backend fails it or none can be compared).

    \b
    ftadapt bench accuracy --model ens16.onnx --data cityscapes:data/Cityscapes --checkpoints runs/ \\
        --device cuda:0 --out parity/
    """
    from ftadapt.bench.accuracy import GateFailed, measure_accuracy
    from ftadapt.bench.tables import accuracy_summary

    _check_outputs(out, json_out, overwrite, [model, data[1], *options["checkpoints"]])
    results = measure_accuracy(model, data[1], **options)
    click.echo(accuracy_summary(results), err=True)
    _finish(results, out, json_out, overwrite)
    verdict = results["verdict"]
    if not verdict["passed"]:
        fix = (" — pass --checkpoints (the member checkpoints) for the pytorch reference, or --device cuda:N for "
               "TensorRT" if verdict["status"] == "not compared" else "")
        raise GateFailed(f"parity gate: {verdict['line']}{fix}")


@bench.command("latency")
@click.option("--model", "models", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An exported .onnx to time, repeatable (its precision is the file's).")
@click.option("--checkpoints", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The --model files' member checkpoints (matched by sha256), for the pytorch backend; repeatable.")
@click.option("--random", "random_models", multiple=True, metavar="MODEL",
              help="A registered model (tiny, deeplabv2-r101, …) exported here with random-init weights, repeatable "
                   "[tiny and deeplabv2-r101 when no --model is given].")
@click.option("--members", type=click.IntRange(min=1), default=1, show_default=True,
              help="--random: members in the ensemble.")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16"]),
              help="--random: export precisions, repeatable [fp32].")
@click.option("--flip", is_flag=True, help="--random: also the flip-fused graph (the ratio to the plain one).")
@click.option("--working-size", type=SIZE, default="1024x512", show_default=True, help="--random: W×H members run at.")
@click.option("--frame-size", type=SIZE, default="2048x1024", show_default=True, help="W×H of the camera frames.")
@click.option("--backends", default="onnxruntime,pytorch,tensorrt", show_default=True,
              callback=_list_of(("onnxruntime", "pytorch", "tensorrt")), help="Comma-separated.")
@device_option()
@click.option("--batches", callback=_batches, default=None, help="Batch sizes, e.g. 1,2,4,8 [GPU 1,2,4,8; CPU 1].")
@click.option("--warmup", type=click.IntRange(min=0), default=None, help="Untimed calls first [GPU 10, CPU 2].")
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Timed calls per batch size [GPU 50; CPU tiny 30, deeplabv2-r101 5, others 10].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads of PyTorch and ONNX Runtime.")
@click.option("--cuda-graph", is_flag=True, help="Also PyTorch and TensorRT replayed as CUDA graphs (GPU).")
@click.option("--engine-cache", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep (and reuse) the random-init checkpoints and exports here.")
@_outputs
def latency(models, random_models, precisions, out, json_out, overwrite, **options) -> None:
    """End-to-end latency per backend, precision and batch size (host frames in, host label maps out), p50/p90/p99
    after warm-up, frames/s, and on GPUs the device time and memory.

    \b
    ftadapt bench latency --model ens16.onnx --checkpoints runs/ --device cuda:0 --cuda-graph --out latency/
    ftadapt bench latency --random deeplabv2-r101 --members 3 --precision fp16 --device cuda:0
    """
    from ftadapt.bench.latency import measure_latency
    from ftadapt.machine import check_memory

    batch = max(options["batches"] or (1,))
    check_memory({"--working-size": options["working_size"]}, batch=batch * options["members"])
    check_memory({"--frame-size": options["frame_size"]}, batch=batch)
    _check_outputs(out, json_out, overwrite, [*models, *options["checkpoints"]])
    random_models = random_models or (() if models else ("tiny", "deeplabv2-r101"))
    results = measure_latency(models=models, random=random_models, precisions=precisions or ("fp32",), **options)
    _finish(results, out, json_out, overwrite)


@bench.command("gpu")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for gpu_bench.json [$OUT or ./gpu-results].")
@click.option("--budget-s", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Wall-clock budget of the whole run.")
@device_option("; auto needs a GPU here, cpu is a structural dry run that measures nothing of a GPU")
@click.option("--tiny", is_flag=True, help="The tiny model at tiny sizes (a quick check).")
@click.option("--compile", "compile_model", is_flag=True,
              help="Also time torch.compile with and without CUDA graphs (minutes of compilation).")
@click.option("--only", multiple=True, metavar="ITEM[,ITEM]", help="Run only these items (repeatable).")
@click.option("--skip", multiple=True, metavar="ITEM[,ITEM]", help="Items to leave out (repeatable).")
@overwrite_option("OUT/gpu_bench.json of an earlier run")
def gpu(out, budget_s, device, tiny, compile_model, only, skip, overwrite) -> None:
    """The GPU check: every item that fits in the budget, one JSON file (see ftadapt.bench.gpu). Exit 1 when it
    measured nothing (no GPU)."""
    from ftadapt.bench.gpu import RESULT_FILE, run_all
    from ftadapt.errors import FtadaptError

    out = out or Path(os.environ.get("OUT") or "gpu-results")
    only, skip = ([item for words in given for item in words.split(",") if item] for given in (only, skip))
    report = run_all(out, budget_s=budget_s, device=device, tiny=tiny, compile_model=compile_model, skip=tuple(skip),
                     only=tuple(only), overwrite=overwrite)
    emit(report.get("summary", report), None, always=True)
    click.echo(f"[gpu-bench] wrote {out / RESULT_FILE}", err=True)
    if "error" in report:
        raise FtadaptError(f"the GPU check did not run: {report['error']}")
