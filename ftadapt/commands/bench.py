"""``ftadapt bench <name>``: every benchmark, each printing its figures as JSON (``--json FILE`` keeps a copy).

Each one is also ``python -m ftadapt.bench.<module>`` with the same options. The measuring lives in ``ftadapt.bench``;
these commands only parse and print.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from ftadapt.commands.common import SIZE, SizeType, check_json, emit, overwrite_option
from ftadapt.commands.train import config_options, config_overrides
from ftadapt.config import METHODS


def _reports(func):
    """A benchmark that returns its report: printed to stdout and, with ``--json FILE``, written there — a file that
    the output rule checks before the measuring starts (``--overwrite`` replaces it)."""
    @functools.wraps(func)
    def run(json_out: str | None, overwrite: bool, **options) -> None:
        check_json(json_out, overwrite)
        emit(func(**options), json_out, always=True, overwrite=overwrite)

    run = click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
                       help="Also write the report to this file (it is always printed to stdout).")(run)
    return overwrite_option()(run)


@click.group("bench")
def bench() -> None:
    """Benchmarks that print figures as JSON."""


@bench.command("train-step")
@click.option("--method", type=click.Choice(METHODS), default=None, help="[clan-norm]")
@click.option("--model", default=None, help="Registered model, e.g. tiny (default), deeplabv2-r101.")
@click.option("--source-size", type=SIZE, default=None, help="Source batch size W×H [160x96; the paper: 1280x720].")
@click.option("--target-size", type=SIZE, default=None, help="Target batch size W×H [128x64; the paper: 1024x512].")
@click.option("--device", default=None, help="auto (default), cpu, cuda or cuda:N.")
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
@_reports
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

    overrides = config_overrides(config_file, sets, method=method, model=model, device=device,
                                 **{"data.source_size": source_size, "data.target_size": target_size})
    cfg = build_config({**BENCH_DEFAULTS, **overrides})
    report = bench_train_step(cfg, steps=steps, warmup=warmup, data=data, threads=threads, profile=profile)
    click.echo(format_report(report), err=True)
    return report


@bench.command("eval-speed")
@click.option("--n", type=click.IntRange(min=1), default=500, show_default=True, help="Number of pairs.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True, help="Timed runs (best reported).")
@click.option("--naive-n", type=click.IntRange(min=0), default=None,
              help="Pairs for the naive loop [default: all n; 0 skips it].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Folder for the generated pairs [default: $XDG_CACHE_HOME/ftadapt/eval_speed].")
@_reports
def eval_speed(n, workers, repeat, naive_n, seed, cache) -> dict:
    """Prediction-folder evaluation on Cityscapes-size pairs against a naive loop."""
    from ftadapt.bench.eval_speed import measure_eval_speed

    return measure_eval_speed(n=n, workers=workers, repeat=repeat, naive_n=naive_n, seed=seed, cache=cache)


@bench.command("export-speed")
@click.option("--model", default="deeplabv2-r101", show_default=True, help="Registered model of the members.")
@click.option("--members", type=click.IntRange(min=1), multiple=True, default=(1, 3), show_default=True,
              help="Ensemble sizes to export, repeatable.")
@click.option("--precision", "precisions", type=click.Choice(["fp32", "fp16"]), multiple=True,
              default=("fp32", "fp16"), show_default=True)
@click.option("--working-size", type=SizeType(minimum=8), default="1024x512", show_default=True)
@click.option("--frame-size", type=SIZE, default="2048x1024", show_default=True, help="Latency frames W×H.")
@click.option("--frames", type=click.IntRange(min=1), default=2, show_default=True,
              help="Frames for latency and pre-processing.")
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed passes over the latency frames.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="A trained model for the pre-processing parity.")
@click.option("--skip", multiple=True, type=click.Choice(["export", "latency", "preprocess"]))
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep checkpoints and ONNX files here.")
@_reports
def export_speed(**options) -> dict:
    """Export time and size, ONNX Runtime vs PyTorch latency, in-graph vs PIL pre-processing."""
    from ftadapt.bench.export_speed import measure_export

    return measure_export(**options)


@bench.command("runtime-latency")
@click.option("--model", "models", multiple=True, default=("tiny", "deeplabv2-r101"), show_default=True,
              help="Registered models, repeatable.")
@click.option("--working-size", type=SIZE, default="1024x512", show_default=True, help="W×H the members run at.")
@click.option("--frame-size", type=SIZE, default="2048x1024", show_default=True, help="W×H of the input frames.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Timed calls per model [tiny 30, deeplabv2-r101 5, others 10].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep (and reuse) checkpoints and ONNX files here.")
@click.option("--flip", is_flag=True, help="Also time each model exported with flip fusion (the ratio to plain).")
@_reports
def runtime_latency(**options) -> dict:
    """Per-frame latency of the runtime (ONNX Runtime CPU) on random-init exported members."""
    from ftadapt.bench.runtime_latency import measure_runtime_latency

    return measure_runtime_latency(**options)


@bench.command("gpu-runtime")
@click.option("--model-path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="An exported .onnx [export a random-init one].")
@click.option("--model", default="deeplabv2-r101", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--cpu-runs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None)
@_reports
def gpu_runtime(model_path, **options) -> dict:
    """Runtime latency on an NVIDIA machine: ONNX Runtime CPU vs CUDA vs TensorRT (what is installed)."""
    from ftadapt.bench.gpu_runtime import measure_runtime_gpu

    return measure_runtime_gpu(model_path, **options)


@bench.command("loader-speed")
@click.option("--samples", type=click.IntRange(min=1), default=24, show_default=True,
              help="Samples timed per domain.")
@click.option("--steps-per-s", type=click.FloatRange(min=0, min_open=True), default=28.0, show_default=True,
              help="Training speed the loaders must keep up with (batch 1).")
@_reports
def loader_speed(samples, steps_per_s) -> dict:
    """One loader worker's cost per training sample, and the workers a training speed needs."""
    from ftadapt.bench.loader_speed import measure_loading

    return measure_loading(samples, steps_per_s)


@bench.command("conv-speed")
@click.option("--device", default="cuda", show_default=True, help="cuda, cuda:N or cpu.")
@click.option("--iters", type=click.IntRange(min=1), default=20, show_default=True, help="Timed passes per variant.")
@_reports
def conv_speed(device, iters) -> dict:
    """DeepLab-v2's dilated convolutions: as cuDNN runs them, with space_to_batch, and undilated."""
    from ftadapt.bench.conv_speed import measure_dilated_convs

    return measure_dilated_convs(device, iters=iters)


@bench.command("gpu")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for gpu_bench.json [$OUT or ./gpu-results].")
@click.option("--budget-s", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Wall-clock budget of the whole run.")
@click.option("--device", default="cuda", show_default=True, help="cuda, cuda:N, or cpu (a structural dry run).")
@click.option("--tiny", is_flag=True, help="The tiny model at tiny sizes (a quick check).")
@click.option("--compile", "compile_model", is_flag=True,
              help="Also time torch.compile with and without CUDA graphs (minutes of compilation).")
@click.option("--only", multiple=True, metavar="ITEM[,ITEM]", help="Run only these items (repeatable).")
@click.option("--skip", multiple=True, metavar="ITEM[,ITEM]", help="Items to leave out (repeatable).")
@overwrite_option("OUT/gpu_bench.json of an earlier run")
def gpu(out, budget_s, device, tiny, compile_model, only, skip, overwrite) -> None:
    """The GPU check: every item that fits in the budget, one JSON file (see ftadapt.bench.gpu)."""
    from ftadapt.bench.gpu import RESULT_FILE, run_all

    out = out or Path(os.environ.get("OUT") or "gpu-results")
    only, skip = ([item for words in given for item in words.split(",") if item] for given in (only, skip))
    report = run_all(out, budget_s=budget_s, device=device, tiny=tiny, compile_model=compile_model, skip=tuple(skip),
                     only=tuple(only), overwrite=overwrite)
    emit(report.get("summary", report), None, always=True)
    click.echo(f"[gpu-bench] wrote {out / RESULT_FILE}", err=True)
