"""Investigations: measurements that informed a design decision once and can be repeated, kept apart from the
user benchmarks of ``ftadapt bench`` (accuracy, latency, train-step, gpu) and from its help list.

    python -m ftadapt.commands.investigate eval-speed [--n 500] [--json OUT]
    python -m ftadapt.commands.investigate export-speed [--skip latency] [--json OUT]
    python -m ftadapt.commands.investigate loader-speed [--samples 24] [--json OUT]

Each prints its report as JSON; the measuring lives in ``ftadapt.bench.investigations``.
"""
from __future__ import annotations

from pathlib import Path

import click

from ftadapt.commands.common import SIZE, SizeType, prints_report
from ftadapt.config import SEED_MAX


@click.group("investigate", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def investigations() -> None:
    """Measurements behind design decisions (not user benchmarks: see `ftadapt bench`)."""

@investigations.command("eval-speed")
@click.option("--n", type=click.IntRange(min=1), default=500, show_default=True, help="Number of pairs.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True, help="Timed runs (best reported).")
@click.option("--naive-n", type=click.IntRange(min=0), default=None,
              help="Pairs for the naive loop [default: all n; 0 skips it].")
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=0, show_default=True)
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Folder for the generated pairs [default: $XDG_CACHE_HOME/ftadapt/eval_speed].")
@prints_report
def eval_speed(n, workers, repeat, naive_n, seed, cache) -> dict:
    """Prediction-folder evaluation on Cityscapes-size pairs against a naive loop."""
    from ftadapt.bench.investigations.eval_speed import measure_eval_speed

    return measure_eval_speed(n=n, workers=workers, repeat=repeat, naive_n=naive_n, seed=seed, cache=cache)



@investigations.command("export-speed")
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
@prints_report
def export_speed(**options) -> dict:
    """Export time and size, ONNX Runtime vs PyTorch latency, in-graph vs PIL pre-processing."""
    from ftadapt.bench.investigations.export_speed import measure_export
    from ftadapt.machine import check_memory

    check_memory({"--working-size": options["working_size"]}, batch=max(options["members"]))
    check_memory({"--frame-size": options["frame_size"]})
    return measure_export(**options)


@investigations.command("loader-speed")
@click.option("--samples", type=click.IntRange(min=1), default=24, show_default=True,
              help="Samples timed per domain.")
@click.option("--steps-per-s", type=click.FloatRange(min=0, min_open=True), default=28.0, show_default=True,
              help="Training speed the loaders must keep up with (batch 1).")
@prints_report
def loader_speed(samples, steps_per_s) -> dict:
    """One loader worker's cost per training sample, and the workers a training speed needs."""
    from ftadapt.bench.investigations.loader_speed import measure_loading

    return measure_loading(samples, steps_per_s)


def main(argv: list[str] | None = None) -> None:
    """Run an investigation with the CLI's error handling (``python -m ftadapt.commands.investigate``)."""
    from ftadapt.cli import run_group

    run_group(investigations, argv, prog_name="python -m ftadapt.commands.investigate")


if __name__ == "__main__":
    main()
