"""``ftadapt demo``: every stage that exists, on the built-in synthetic data, on a CPU, in a few minutes, ending in
one report a person opens to see what happened (``DIR/report.md``).

Stages: (1) write the synthetic two-domain dataset and run the dataset doctor on it; (2) train the tiny DeepLab-v2
with ``source-only``, ``norm-only`` and ``clan-norm`` and compare their per-class IoU on the synthetic target val set;
(3) evaluate the 0.5/0.5 ensemble of the two adapted runs beside its members, with probability fusion and with the
paper's flip fusion, and export the first as one ONNX graph in FP32 and FP16, each verified against PyTorch; (4) run
the FP16 graph through ``ftadapt.runtime.Segmenter`` on the val frames, write colour overlays, report backend,
providers and latency, and score the deployed predictions with the same evaluator to show the deployed mIoU next to
PyTorch's; (5) the feature space of the three runs (the paper's Figures 1 and 3), a prediction grid (Figures 4 and
5) and the training curves; (6) ``ftadapt bench accuracy`` of the FP16 graph with the PyTorch and ONNX Runtime
backends (the parity gate, per-class deltas, ``bench-accuracy/`` with its own report and figures) and its results as
the paper's Table 1 (``ftadapt report``); (7) ``report.md`` with all of it.

The demo owns its output folder (``demo_state``): it is resumable and stops as a whole on Ctrl-C or SIGTERM; run it
again and it reuses what finished and resumes the training run that was stopped. Any other non-empty folder is
refused unless ``--overwrite`` is given.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ftadapt.commands.demo_state import DemoState, DemoStopped, stop_on_signals
from ftadapt.errors import DatasetError

DEMO_METHODS = ("source-only", "norm-only", "clan-norm")
# The tiny model starts from random weights (no ImageNet init), so it needs a larger lr than the paper's 2.5e-4
# fine-tuning rate; everything else keeps the paper's defaults.
DEMO_STEPS = 300
DEMO_OVERRIDES = {
    "model": "tiny", "device": "cpu", "optim.lr": 1e-2, "optim.d_lr": 1e-4, "checkpoint_every": 0, "log_every": 10,
    "data.source_size": (320, 180), "data.target_size": (256, 128), "eval.size": (256, 128),
    "data.num_workers": 0, "tensorboard": False, "check_data": False,
}
ENSEMBLE = ("norm-only", "clan-norm")  # members, weight 0.5 each
# Everything the demo writes in its folder (``--overwrite`` removes these and nothing else).
DEMO_ENTRIES = ("data", "runs", "results.json", "ensemble-fp32.onnx", "ensemble-fp16.onnx", "deployed-predictions",
                "figures", "bench-accuracy", "table1.md", "table1.csv", "report.md")


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default="ftadapt-demo",
              show_default=True, help="Folder for the synthetic data and every artefact the demo produces.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=DEMO_STEPS, show_default=True,
              help="Training steps of each method.")
@click.option("--overwrite", is_flag=True,
              help="Start afresh: remove an earlier demo's files in --out (by default a rerun continues it).")
def demo(out_dir: Path, seed: int, steps: int, overwrite: bool) -> None:
    """Run every stage on built-in synthetic data, on the CPU, and write OUT/report.md.

    Ctrl-C or SIGTERM stops the whole demo; running it again reuses what finished and resumes the rest.
    """
    try:
        run_demo(out_dir, seed=seed, steps=steps, overwrite=overwrite)
    except DemoStopped as exc:
        click.echo(f"\n{exc}", err=True)
        sys.exit(130)


def run_demo(out: Path, *, seed: int = 0, steps: int = DEMO_STEPS, overwrite: bool = False) -> dict:
    """Run (or continue) the demo in ``out`` and return every stage's record (also in ``out/demo.json``); raises
    ``DemoStopped`` when a signal stops it."""
    from ftadapt import __version__
    from ftadapt.commands import demo_report

    out = Path(out)
    state = DemoState.open(out, {"seed": seed, "steps": steps, "ftadapt": __version__}, entries=DEMO_ENTRIES,
                           overwrite=overwrite)
    try:
        with stop_on_signals():
            data = state.run("data", "1. synthetic data + dataset doctor", lambda: _data(out, seed))
            train = state.run("train", f"2. train the tiny DeepLab-v2 with {', '.join(DEMO_METHODS)} ({steps} steps "
                              "each) and evaluate", lambda: _train_and_compare(out, data, seed=seed, steps=steps))
            ensemble = state.run("ensemble", f"3. ensemble of the adapted runs (0.5 {ENSEMBLE[0]} + 0.5 "
                                 f"{ENSEMBLE[1]}, with and without flip): evaluate, export FP32 + FP16",
                                 lambda: _ensemble_and_export(out, data))
            state.run("deploy", "4. deploy the FP16 graph with ftadapt.runtime.Segmenter and score its predictions",
                      lambda: _deploy(out, data, ensemble))
            state.run("analysis", "5. feature space, prediction grid and training curves",
                      lambda: demo_report.analysis_stage(out, data, train, ensemble, seed=seed))
            state.run("bench", "6. ftadapt bench accuracy of the FP16 graph (ONNX Runtime against its PyTorch "
                      "module), ftadapt report", lambda: _bench_accuracy_and_report(out, data, ensemble))
            state.run("report", "7. report", lambda: demo_report.report_stage(out, state.settings, state.stages))
    except DemoStopped as exc:
        raise state.stopped(str(exc) or "stopped") from None
    except KeyboardInterrupt:
        raise state.stopped("interrupted (SIGINT)") from None
    click.echo(f"\ndemo finished: everything is in {out}\nreport: {out / 'report.md'}")
    return state.stages


def _data(out: Path, seed: int) -> dict:
    from ftadapt.data.check import check_dataset, format_report
    from ftadapt.data.synthetic import write_synthetic

    layout = write_synthetic(out / "data", seed=seed, overwrite=True, progress=True)
    click.echo(f"   source (GTA5 layout)       {layout.gta5_root}  {layout.n_source} images")
    click.echo(f"   target (Cityscapes layout) {layout.cityscapes_root}  {layout.n_target_train} train, "
               f"{layout.n_target_val} val")
    for kind, root in (("gta5", layout.gta5_root), ("cityscapes", layout.cityscapes_root)):
        report = check_dataset(kind, root, progress=False)
        click.echo(format_report(report))
        if not report.usable:
            raise DatasetError(f"the synthetic {kind} set failed the dataset doctor; this is a bug, please report it")
    return {"gta5": "data/gta5", "cityscapes": "data/cityscapes",  # relative to the demo folder, which may move
            "n_source": layout.n_source, "n_target_train": layout.n_target_train,
            "n_target_val": layout.n_target_val, "outputs": ["data"]}


def data_root(out: Path, data: dict, kind: str) -> Path:
    """Where the data stage put the ``kind`` ("gta5" or "cityscapes") dataset of the demo in ``out``."""
    return out / data[kind]


def _train_run(out: Path, method: str, data: dict, *, seed: int, steps: int):
    """Train ``method`` into ``out/runs/METHOD``, or continue the demo's earlier run there: a finished one is reused
    as it is, a stopped one resumes from its last checkpoint, one that never saved a checkpoint starts again. Returns
    the ``TrainResult`` and how the run got there ("trained", "resumed from step N", "finished earlier")."""
    import json
    import shutil

    from ftadapt.checkpoint import META_FILE, latest_checkpoint
    from ftadapt.training import resolve_config, train

    run_dir = out / "runs" / method
    overrides = {**DEMO_OVERRIDES, "method": method, "steps": steps, "seed": seed,
                 "data.source": f"gta5:{data_root(out, data, 'gta5')}",
                 "data.target": f"cityscapes:{data_root(out, data, 'cityscapes')}"}
    previous = latest_checkpoint(run_dir)
    if previous is None and run_dir.exists():  # the demo's own run, stopped before its first checkpoint
        shutil.rmtree(run_dir)
    start = json.loads((previous / META_FILE).read_text())["step"] if previous is not None else 0
    how = "trained" if start == 0 else ("finished earlier" if start >= steps else f"resumed from step {start}")
    if 0 < start < steps:
        click.echo(f"   {method}: resuming the stopped run from step {start}")
    cfg = resolve_config(overrides, out=run_dir, resume=previous is not None)
    return train(cfg, out=run_dir, resume=previous is not None, progress=True), how


def _train_and_compare(out: Path, data: dict, *, seed: int, steps: int) -> dict:
    from ftadapt.evaluation import ADAPTSEGNET, LabelledSplit, evaluate
    from ftadapt.evaluation.pytorch import ModelPredictor
    from ftadapt.evaluation.tables import format_comparison

    runs, predictors = {}, []
    for method in DEMO_METHODS:
        started = time.perf_counter()
        result, how = _train_run(out, method, data, seed=seed, steps=steps)
        if result.stopped_by is not None:
            raise DemoStopped(f"{result.stopped_by} stopped the {method} run after step {result.step} of {steps} "
                              f"(checkpoint {result.checkpoint})")
        runs[method] = {"run": f"runs/{method}", "checkpoint": str(Path(result.checkpoint).relative_to(out)),
                        "step": result.step, "steps": steps, "how": how,
                        "seconds": round(time.perf_counter() - started, 1)}
        predictors.append(ModelPredictor.from_checkpoint(result.checkpoint, name=method, device="cpu"))
    results = evaluate(predictors, LabelledSplit.from_root(data_root(out, data, "cityscapes"), "val"),
                       ADAPTSEGNET.at(DEMO_OVERRIDES["eval.size"]), progress=False)
    for method, run in runs.items():
        click.echo(f"   {method:<12} step {run['step']} of {steps} ({run['how']}, {run['seconds']:.1f} s), mIoU "
                   f"{results[method].miou * 100:.2f}  -> {out / run['checkpoint']}")
    click.echo(format_comparison(results, delta=("clan-norm", "source-only")))
    return {"runs": runs, "results": {m: r.to_dict() for m, r in results.items()},
            "outputs": [run["run"] for run in runs.values()]}


def _ensemble_and_export(out: Path, data: dict) -> dict:
    from ftadapt.ensemble import load_ensemble
    from ftadapt.evaluation import ADAPTSEGNET, LabelledSplit, evaluate
    from ftadapt.evaluation.pytorch import EnsemblePredictor
    from ftadapt.evaluation.tables import best_of, format_comparison
    from ftadapt.export.onnx_export import export_onnx

    size = DEMO_OVERRIDES["eval.size"]
    members = [f"{out / 'runs' / m}:0.5" for m in ENSEMBLE]
    ensemble = load_ensemble(members)
    fused = EnsemblePredictor(ensemble, device="cpu")
    flipped = EnsemblePredictor(load_ensemble(members, flip=True), name="ensemble+flip", device="cpu")
    val = LabelledSplit.from_root(data_root(out, data, "cityscapes"), "val")
    results = evaluate([*fused.member_predictors(), fused, flipped], val, ADAPTSEGNET.at(size), progress=False)
    best = best_of({k: v for k, v in results.items() if not k.startswith("ensemble")})
    click.echo(format_comparison(results, delta=("ensemble", best)))
    exports = {}
    for precision in ("fp32", "fp16"):
        exported = export_onnx(ensemble, out / f"ensemble-{precision}.onnx", precision=precision, working_size=size,
                               progress=False, overwrite=True)  # the demo's own file (DemoState.open)
        click.echo(f"   {exported.path}  ({exported.path.stat().st_size / 2**20:.1f} MiB, "
                   f"{exported.export_seconds:.1f} s)  {exported.verification.summary()}")
        exports[precision] = {"file": exported.path.name, "mib": round(exported.path.stat().st_size / 2**20, 2),
                              "verification": exported.verification.to_dict(),
                              "summary": exported.verification.summary()}
    return {"results": {k: v.to_dict() for k, v in results.items() if k.startswith("ensemble")},
            "members": [m.name for m in ensemble.infos], "exports": exports,
            "outputs": [e["file"] for e in exports.values()]}


def _deploy(out: Path, data: dict, ensemble: dict) -> dict:
    from ftadapt.bench.latency import time_segmenter
    from ftadapt.evaluation.folder import evaluate_pred_dir
    from ftadapt.imageio import read_rgb
    from ftadapt.runtime import Segmenter
    from ftadapt.runtime.predict import collect_sources, predict_files

    pytorch_miou = ensemble["results"]["ensemble"]["miou"]
    val = sorted((data_root(out, data, "cityscapes") / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
    pred_dir = out / "deployed-predictions"
    with Segmenter(out / ensemble["exports"]["fp16"]["file"]) as seg:
        click.echo(f"   backend {seg.backend}, providers {', '.join(seg.providers)}")
        for note in seg.notes:
            click.echo(f"   note: {note}")
        predict_files(seg, collect_sources(val), pred_dir, progress=False, overwrite=True)
        stats = time_segmenter(seg, [read_rgb(p) for p in val], warmup=2, runs=3 * len(val))
    click.echo(f"   {len(val)} val frames -> {pred_dir} (label PNGs + *_color.png overlays)")
    click.echo(f"   per-frame latency p50 {stats['p50_ms']:.1f} ms, p90 {stats['p90_ms']:.1f} ms, "
               f"{stats['fps']:.1f} frames/s")
    deployed = evaluate_pred_dir(pred_dir, data_root(out, data, "cityscapes") / "gtFine" / "val", progress=False)
    click.echo(f"   mIoU: PyTorch FP32 ensemble {pytorch_miou:.2f}, deployed FP16 graph {deployed.miou * 100:.2f} "
               f"(delta {round(deployed.miou * 100 - pytorch_miou, 2) + 0.0:+.2f})")  # + 0.0: no "-0.00"
    return {"backend": seg.backend, "providers": list(seg.providers), "notes": list(seg.notes), "latency": stats,
            "frames": len(val), "deployed": deployed.to_dict(), "pytorch_miou": pytorch_miou,
            "outputs": [pred_dir.name]}


def _bench_accuracy_and_report(out: Path, data: dict, ensemble: dict) -> dict:
    """``ftadapt bench accuracy --backends pytorch,onnxruntime`` of the FP16 file (members matched in ``out/runs`` by
    sha256) into ``out/bench-accuracy``, then its results as the paper's Table 1 (``ftadapt report``) in
    ``out/table1.md`` and ``.csv``."""
    from ftadapt.bench.accuracy import GateFailed, measure_accuracy
    from ftadapt.bench.outputs import RESULTS_FILE, write_out_dir
    from ftadapt.bench.tables import accuracy_summary
    from ftadapt.evaluation.report import csv_text, deltas, markdown, read_results
    from ftadapt.fsutil import write_text_atomic

    results = measure_accuracy(out / ensemble["exports"]["fp16"]["file"], data_root(out, data, "cityscapes"),
                               backends=("pytorch", "onnxruntime"), checkpoints=[out / "runs"], device="cpu",
                               progress=False)
    click.echo(accuracy_summary(results))
    folder = out / "bench-accuracy"
    written = write_out_dir(folder, results, overwrite=True)  # the demo's own folder: replaced whole
    click.echo(f"   -> {folder}/: {', '.join(written['files'])}")
    rows, notes = read_results(folder / RESULTS_FILE, label="FP16 graph")
    delta_rows = deltas(rows, "FP16 graph pytorch")
    write_text_atomic(out / "table1.md", markdown(rows, delta_rows, "FP16 graph pytorch", notes), overwrite=True)
    write_text_atomic(out / "table1.csv", csv_text(rows, delta_rows), overwrite=True)
    click.echo(markdown(rows, [], None, notes) + f"   -> {out / 'table1.md'}, {out / 'table1.csv'}")
    if not results["verdict"]["passed"]:
        raise GateFailed(f"the demo's parity gate: {results['verdict']['line']}; this is a bug, please report it")
    ort = results["backends"]["onnxruntime"]
    return {"verdict": results["verdict"]["line"], "onnxruntime_delta_miou": ort["delta_miou"],
            "onnxruntime_differing_percent": (ort.get("agreement") or {}).get("differing_percent"),
            "protocol_gap": results["protocol_gap"], "files": written["files"],
            "outputs": ["bench-accuracy", "table1.md", "table1.csv"]}
