"""``ftadapt demo``: every stage that exists, on the built-in synthetic data, on a CPU, in a few minutes.

Stages: (1) write the synthetic two-domain dataset and run the dataset doctor on it; (2) train the tiny DeepLab-v2
with ``source-only``, ``norm-only`` and ``clan-norm`` and compare their per-class IoU on the synthetic target val set;
(3) evaluate the 0.5/0.5 ensemble of the two adapted runs beside its members, with probability fusion and with the
paper's flip fusion, and export the first as one ONNX graph in FP32 and FP16, each verified against PyTorch; (4) run
the FP16 graph through ``ftadapt.runtime.Segmenter`` on the val frames, write colour overlays, report backend,
providers and latency, and score the deployed predictions with the same evaluator to show the deployed mIoU next to
PyTorch's; (5) ``ftadapt bench accuracy`` of the FP16 graph with the PyTorch and ONNX Runtime backends (the parity
gate, per-class deltas, ``bench-accuracy/`` with report.md and figures) and its results as the paper's Table 1
(``ftadapt report``).

The demo owns its output folder: it marks it with ``ftadapt-demo.json`` and reruns into a marked folder replace the
earlier demo's outputs there; any other existing, non-empty folder is refused unless ``--overwrite`` is given.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import click

from ftadapt.errors import DatasetError, OutputError

DEMO_METHODS = ("source-only", "norm-only", "clan-norm")
DEMO_MARKER = "ftadapt-demo.json"  # marks a folder as the demo's own: a rerun may replace what it wrote there
# The tiny model starts from random weights (no ImageNet init), so it needs a larger lr than the paper's 2.5e-4
# fine-tuning rate; everything else keeps the paper's defaults.
DEMO_STEPS = 300
DEMO_OVERRIDES = {
    "model": "tiny", "device": "cpu", "optim.lr": 1e-2, "optim.d_lr": 1e-4, "checkpoint_every": 0, "log_every": 50,
    "data.source_size": (320, 180), "data.target_size": (256, 128), "eval.size": (256, 128),
    "data.num_workers": 0, "tensorboard": False, "check_data": False,
}


def _stage(title: str) -> float:
    click.secho(f"\n== {title}", bold=True)
    return time.perf_counter()


def _done(start: float) -> None:
    click.echo(f"   ({time.perf_counter() - start:.1f} s)")


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default="ftadapt-demo",
              show_default=True, help="Folder for the synthetic data and every artefact the demo produces.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True,
              help="Run in an existing folder that is not an earlier demo's output, replacing data/, runs/, "
                   "ensemble-*.onnx and deployed-predictions/ there (an earlier demo's folder needs no flag).")
def demo(out_dir: Path, seed: int, overwrite: bool) -> None:
    """Run every stage on built-in synthetic data, on the CPU."""
    run_demo(out_dir, seed=seed, overwrite=overwrite)


def claim_folder(out: Path, *, overwrite: bool = False) -> None:
    """Make ``out`` the demo's folder: absent, empty or an earlier demo's (its marker), or any folder with
    ``overwrite``; never a link or a folder written only whole (``ftadapt.fsutil.check_target``). Writes the marker
    first, so that an interrupted demo can be rerun into it."""
    from ftadapt.fsutil import check_target, write_text_atomic

    check_target(out, overwrite=overwrite, what="--out", merge=True)
    marker = out / DEMO_MARKER
    if out.is_dir() and any(out.iterdir()) and not marker.is_file() and not overwrite:
        raise OutputError(f"--out {out} exists and is not an earlier demo's output (no {DEMO_MARKER}); choose another "
                          "folder, or pass --overwrite to run the demo in it anyway (it replaces data/, runs/, "
                          "ensemble-*.onnx and deployed-predictions/ there)")
    write_text_atomic(marker, '{"written_by": "ftadapt demo"}\n', overwrite=True)


def run_demo(out: Path, *, seed: int = 0, steps: int = DEMO_STEPS, overwrite: bool = False) -> dict:
    """Run the demo into ``out`` (see ``claim_folder``; an earlier demo there is replaced) and return its figures."""
    from ftadapt.data.check import check_dataset, format_report
    from ftadapt.data.synthetic import write_synthetic

    out = Path(out)
    claim_folder(out, overwrite=overwrite)
    figures: dict = {}

    t = _stage("1. synthetic data + dataset doctor")
    layout = write_synthetic(out / "data", seed=seed, overwrite=True, progress=True)
    click.echo(f"   source (GTA5 layout)       {layout.gta5_root}  {layout.n_source} images")
    click.echo(f"   target (Cityscapes layout) {layout.cityscapes_root}  {layout.n_target_train} train, "
               f"{layout.n_target_val} val")
    for kind, root in (("gta5", layout.gta5_root), ("cityscapes", layout.cityscapes_root)):
        report = check_dataset(kind, root, progress=False)
        click.echo(format_report(report))
        if not report.usable:
            raise DatasetError(f"the synthetic {kind} set failed the dataset doctor; this is a bug, please report it")
    _done(t)

    t = _stage(f"2. train the tiny DeepLab-v2 with {', '.join(DEMO_METHODS)} ({steps} steps each) and evaluate")
    figures["train"] = _train_and_compare(out / "runs", layout, seed=seed, steps=steps)
    _done(t)

    t = _stage("3. ensemble of the adapted runs (0.5 norm-only + 0.5 clan-norm, with and without flip): evaluate, "
               "export FP32 + FP16")
    figures["ensemble"], onnx_paths = _ensemble_and_export(out, layout)
    _done(t)

    t = _stage("4. deploy the FP16 graph with ftadapt.runtime.Segmenter and score its predictions")
    figures["runtime"] = _deploy(out, layout, onnx_paths["fp16"], pytorch_miou=figures["ensemble"]["ensemble_miou"])
    _done(t)

    t = _stage("5. ftadapt bench accuracy of the FP16 graph (ONNX Runtime against its PyTorch module), ftadapt report")
    figures["bench_accuracy"] = _bench_accuracy_and_report(out, layout, onnx_paths["fp16"])
    _done(t)
    click.echo(f"\ndemo finished: everything is in {out}")
    return figures


def _train_and_compare(runs: Path, layout, *, seed: int, steps: int) -> dict:
    from ftadapt.config import build_config
    from ftadapt.evaluation import ADAPTSEGNET, LabelledSplit, evaluate
    from ftadapt.evaluation.pytorch import ModelPredictor
    from ftadapt.evaluation.tables import format_comparison
    from ftadapt.fsutil import refuse_existing, remove_entry
    from ftadapt.training import train

    predictors, lines = [], []
    for method in DEMO_METHODS:
        cfg = build_config({**DEMO_OVERRIDES, "method": method, "steps": steps, "seed": seed,
                            "data.source": f"gta5:{layout.gta5_root}",
                            "data.target": f"cityscapes:{layout.cityscapes_root}"})
        run_dir = runs / method
        if os.path.lexists(run_dir):  # an earlier demo's run (claim_folder): start afresh rather than refuse
            refuse_existing(run_dir, overwrite=True)  # a link is never followed
            remove_entry(run_dir)
        started = time.perf_counter()
        result = train(cfg, out=run_dir, progress=True)
        lines.append((method, time.perf_counter() - started, result.checkpoint))
        predictors.append(ModelPredictor.from_checkpoint(result.checkpoint, name=method, device="cpu"))
    results = evaluate(predictors, LabelledSplit.from_root(layout.cityscapes_root, "val"),
                       ADAPTSEGNET.at(DEMO_OVERRIDES["eval.size"]), progress=False)
    for method, seconds, checkpoint in lines:
        click.echo(f"   {method:<12} {steps} steps in {seconds:.1f} s, mIoU {results[method].miou * 100:.2f}  "
                   f"-> {checkpoint}")
    click.echo(format_comparison(results, delta=("clan-norm", "source-only")))
    return {m: {"miou": r.miou * 100, "checkpoint": str(runs / m)} for m, r in results.items()}


def _ensemble_and_export(out: Path, layout) -> tuple[dict, dict[str, Path]]:
    from ftadapt.ensemble import load_ensemble
    from ftadapt.evaluation import ADAPTSEGNET, LabelledSplit, evaluate
    from ftadapt.evaluation.pytorch import EnsemblePredictor
    from ftadapt.evaluation.tables import best_of, format_comparison
    from ftadapt.export.onnx_export import export_onnx

    runs = out / "runs"
    size = DEMO_OVERRIDES["eval.size"]
    members = [f"{runs / 'norm-only'}:0.5", f"{runs / 'clan-norm'}:0.5"]
    ensemble = load_ensemble(members)
    fused = EnsemblePredictor(ensemble, device="cpu")
    flipped = EnsemblePredictor(load_ensemble(members, flip=True), name="ensemble+flip", device="cpu")
    results = evaluate([*fused.member_predictors(), fused, flipped],
                       LabelledSplit.from_root(layout.cityscapes_root, "val"), ADAPTSEGNET.at(size), progress=False)
    best = best_of({k: v for k, v in results.items() if not k.startswith("ensemble")})
    click.echo(format_comparison(results, delta=("ensemble", best)))
    paths = {}
    for precision in ("fp32", "fp16"):
        exported = export_onnx(ensemble, out / f"ensemble-{precision}.onnx", precision=precision, working_size=size,
                               progress=False, overwrite=True)  # the demo's own folder (claim_folder)
        click.echo(f"   {exported.path}  ({exported.path.stat().st_size / 2**20:.1f} MiB, "
                   f"{exported.export_seconds:.1f} s)  {exported.verification.summary()}")
        paths[precision] = exported.path
    return {"ensemble_miou": results["ensemble"].miou * 100, "ensemble_flip_miou": results["ensemble+flip"].miou * 100,
            "members_miou": {k: v.miou * 100 for k, v in results.items() if not k.startswith("ensemble")}}, paths


def _deploy(out: Path, layout, onnx_path: Path, *, pytorch_miou: float) -> dict:
    from ftadapt.bench.latency import time_segmenter
    from ftadapt.evaluation.folder import evaluate_pred_dir
    from ftadapt.imageio import read_rgb
    from ftadapt.runtime import Segmenter
    from ftadapt.runtime.predict import collect_sources, predict_files

    val = sorted((layout.cityscapes_root / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
    pred_dir = out / "deployed-predictions"
    with Segmenter(onnx_path) as seg:
        click.echo(f"   backend {seg.backend}, providers {', '.join(seg.providers)}")
        for note in seg.notes:
            click.echo(f"   note: {note}")
        predict_files(seg, collect_sources(val), pred_dir, progress=False, overwrite=True)
        stats = time_segmenter(seg, [read_rgb(p) for p in val], warmup=2, runs=3 * len(val))
    click.echo(f"   {len(val)} val frames -> {pred_dir} (label PNGs + *_color.png overlays)")
    click.echo(f"   per-frame latency p50 {stats['p50_ms']:.1f} ms, p90 {stats['p90_ms']:.1f} ms, "
               f"{stats['fps']:.1f} frames/s")
    deployed = evaluate_pred_dir(pred_dir, layout.cityscapes_root / "gtFine" / "val", progress=False)
    click.echo(f"   mIoU: PyTorch FP32 ensemble {pytorch_miou:.2f}, deployed FP16 graph {deployed.miou * 100:.2f} "
               f"(delta {round(deployed.miou * 100 - pytorch_miou, 2) + 0.0:+.2f})")  # + 0.0: no "-0.00"
    return {"backend": seg.backend, "providers": list(seg.providers), "latency": stats,
            "deployed_miou": deployed.miou * 100}


def _bench_accuracy_and_report(out: Path, layout, onnx_path: Path) -> dict:
    """``ftadapt bench accuracy --backends pytorch,onnxruntime`` of the FP16 file (members matched in ``out/runs`` by
    sha256) into ``out/bench-accuracy``, then its results as the paper's Table 1 (``ftadapt report``) in
    ``out/table1.md`` and ``.csv``."""
    from ftadapt.bench.accuracy import GateFailed, measure_accuracy
    from ftadapt.bench.outputs import RESULTS_FILE, write_out_dir
    from ftadapt.bench.tables import accuracy_summary
    from ftadapt.evaluation.report import csv_text, deltas, markdown, read_results
    from ftadapt.fsutil import write_text_atomic

    results = measure_accuracy(onnx_path, layout.cityscapes_root, backends=("pytorch", "onnxruntime"),
                               checkpoints=[out / "runs"], device="cpu", progress=False)
    click.echo(accuracy_summary(results))
    folder = out / "bench-accuracy"
    written = write_out_dir(folder, results, overwrite=True)  # the demo's own folder (claim_folder): replaced whole
    click.echo(f"   -> {folder}/: {', '.join(written['files'])}")
    rows, notes = read_results(f"FP16 graph={folder / RESULTS_FILE}")
    delta_rows = deltas(rows, "FP16 graph pytorch")
    write_text_atomic(out / "table1.md", markdown(rows, delta_rows, "FP16 graph pytorch", notes), overwrite=True)
    write_text_atomic(out / "table1.csv", csv_text(rows, delta_rows), overwrite=True)
    click.echo(markdown(rows, [], None, notes) + f"   -> {out / 'table1.md'}, {out / 'table1.csv'}")
    if not results["verdict"]["passed"]:
        raise GateFailed(f"the demo's parity gate: {results['verdict']['line']}; this is a bug, please report it")
    return {"verdict": results["verdict"]["line"], "onnxruntime_delta_miou": results["backends"]["onnxruntime"][
        "delta_miou"], "protocol_gap": results["protocol_gap"]}
