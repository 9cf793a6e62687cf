"""The demo's stages that compute: the data, the three training runs, the ensemble and its exports, the deployment
through the runtime, and the parity gate. Each returns the JSON-ready record the demo keeps in ``demo.json`` (paths
relative to the demo folder, which may move), with the ``outputs`` a rerun checks before reusing it."""
from __future__ import annotations

import time
from pathlib import Path

from click import echo

from ftadapt.demo.settings import DEMO_METHODS, DemoSettings, data_root, members
from ftadapt.demo.state import DemoStopped
from ftadapt.errors import DatasetError


def data_stage(out: Path, settings: DemoSettings) -> dict:
    """The synthetic two-domain dataset in ``out/data``, checked by the dataset doctor."""
    from ftadapt.data.check import check_dataset, format_report
    from ftadapt.data.synthetic import write_synthetic

    layout = write_synthetic(out / "data", n_source=settings.n_source, n_target_train=settings.n_target_train,
                             n_target_val=settings.n_target_val, source_size=settings.source_size,
                             target_size=settings.target_size, seed=settings.seed, overwrite=True, progress=True)
    echo(f"   source (GTA5 layout)       {layout.gta5_root}  {layout.n_source} images")
    echo(f"   target (Cityscapes layout) {layout.cityscapes_root}  {layout.n_target_train} train, "
         f"{layout.n_target_val} val")
    for kind, root in (("gta5", layout.gta5_root), ("cityscapes", layout.cityscapes_root)):
        report = check_dataset(kind, root, progress=False)
        echo(format_report(report))
        if not report.usable:
            raise DatasetError(f"the synthetic {kind} set failed the dataset doctor; this is a bug, please report it")
    return {"gta5": "data/gta5", "cityscapes": "data/cityscapes", "n_source": layout.n_source,
            "n_target_train": layout.n_target_train, "n_target_val": layout.n_target_val, "outputs": ["data"]}


def _train_run(out: Path, method: str, data: dict, settings: DemoSettings):
    """Train ``method`` into ``out/runs/METHOD``, or continue the demo's earlier run there: a finished one is reused
    as it is, a stopped one resumes from its last checkpoint, one that never saved a checkpoint starts again. Returns
    the ``TrainResult`` and how the run got there ("trained", "resumed from step N", "finished earlier")."""
    from ftadapt.checkpoint import read_meta
    from ftadapt.fsutil import remove_entry
    from ftadapt.run_folder import latest_checkpoint
    from ftadapt.training import resolve_config, train

    run_dir = out / "runs" / method
    steps = settings.steps
    overrides = {**settings.train_overrides(), "method": method,
                 "data.source": f"gta5:{data_root(out, data, 'gta5')}",
                 "data.target": f"cityscapes:{data_root(out, data, 'cityscapes')}"}
    previous = latest_checkpoint(run_dir)
    if previous is None and run_dir.exists():  # the demo's own run, stopped before its first checkpoint
        remove_entry(run_dir)
    start = read_meta(previous)["step"] if previous is not None else 0
    how = "trained" if start == 0 else ("finished earlier" if start >= steps else f"resumed from step {start}")
    if 0 < start < steps:
        echo(f"   {method}: resuming the stopped run from step {start}")
    cfg = resolve_config(overrides, out=run_dir, resume=previous is not None)
    return train(cfg, out=run_dir, resume=previous is not None, progress=True), how


def train_stage(out: Path, data: dict, settings: DemoSettings) -> dict:
    """The three runs, each evaluated on the synthetic target val set, side by side."""
    from ftadapt.evaluation import ADAPTSEGNET, LabelledSplit, evaluate, predictors
    from ftadapt.evaluation.tables import format_comparison

    runs, models, steps = {}, [], settings.steps
    for method in DEMO_METHODS:
        started = time.perf_counter()
        result, how = _train_run(out, method, data, settings)
        if result.stopped_by is not None:
            raise DemoStopped(f"{result.stopped_by} stopped the {method} run after step {result.step} of {steps} "
                              f"(checkpoint {result.checkpoint})")
        runs[method] = {"run": f"runs/{method}", "checkpoint": str(Path(result.checkpoint).relative_to(out)),
                        "step": result.step, "steps": steps, "how": how,
                        "seconds": round(time.perf_counter() - started, 1)}
        models.append(predictors.checkpoint(result.checkpoint, name=method, device="cpu"))
    results = evaluate(models, LabelledSplit.from_root(data_root(out, data, "cityscapes"), "val"),
                       ADAPTSEGNET.at(settings.target_size), progress=False)
    for method, run in runs.items():
        echo(f"   {method:<12} step {run['step']} of {steps} ({run['how']}, {run['seconds']:.1f} s), mIoU "
             f"{results[method].miou * 100:.2f}  -> {out / run['checkpoint']}")
    echo(format_comparison(results, delta=("clan-norm", "source-only")))
    return {"runs": runs, "results": {m: r.to_dict() for m, r in results.items()},
            "outputs": [run["run"] for run in runs.values()]}


def ensemble_stage(out: Path, data: dict, settings: DemoSettings) -> dict:
    """The 0.5/0.5 ensemble of the adapted runs beside its members (probability fusion and the paper's flip fusion),
    and the first exported in FP32 and FP16, each verified against PyTorch."""
    from ftadapt.evaluation import ADAPTSEGNET, LabelledSplit, evaluate, predictors
    from ftadapt.evaluation.tables import best_of, format_comparison
    from ftadapt.export.onnx_export import export_onnx

    size = settings.target_size
    *member_runs, fused = predictors.ensemble(members(out), device="cpu", with_members=True)
    flipped = predictors.ensemble(members(out), flip=True, device="cpu", name="ensemble+flip")
    val = LabelledSplit.from_root(data_root(out, data, "cityscapes"), "val")
    results = evaluate([*member_runs, fused, *flipped], val, ADAPTSEGNET.at(size), progress=False)
    best = best_of({k: v for k, v in results.items() if not k.startswith("ensemble")})
    echo(format_comparison(results, delta=("ensemble", best)))
    exports = {}
    for precision in ("fp32", "fp16"):
        exported = export_onnx(fused.module, out / f"ensemble-{precision}.onnx", precision=precision,
                               working_size=size, progress=False, overwrite=True)  # the demo's own file
        echo(f"   {exported.path}  ({exported.path.stat().st_size / 2**20:.1f} MiB, "
             f"{exported.export_seconds:.1f} s)  {exported.verification.summary()}")
        exports[precision] = {"file": exported.path.name, "mib": round(exported.path.stat().st_size / 2**20, 2),
                              "verification": exported.verification.to_dict(),
                              "summary": exported.verification.summary()}
    return {"results": {k: v.to_dict() for k, v in results.items() if k.startswith("ensemble")},
            "members": [i.name for i in fused.module.infos], "exports": exports,
            "outputs": [e["file"] for e in exports.values()]}


def deploy_stage(out: Path, data: dict, ensemble: dict) -> dict:
    """The FP16 graph through ``ftadapt.runtime.Segmenter`` on the val frames: label PNGs and overlays, backend,
    providers and latency, and the deployed predictions scored like any other."""
    from ftadapt.bench.latency import time_segmenter
    from ftadapt.evaluation.folder import evaluate_pred_dir
    from ftadapt.imageio import read_rgb
    from ftadapt.runtime import Segmenter
    from ftadapt.runtime.predict import collect_sources, predict_files

    pytorch_miou = ensemble["results"]["ensemble"]["miou"]
    val = sorted((data_root(out, data, "cityscapes") / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
    pred_dir = out / "deployed-predictions"
    with Segmenter(out / ensemble["exports"]["fp16"]["file"]) as seg:
        echo(f"   backend {seg.backend}, providers {', '.join(seg.providers)}")
        for note in seg.notes:
            echo(f"   note: {note}")
        predict_files(seg, collect_sources(val), pred_dir, progress=False, overwrite=True)
        stats = time_segmenter(seg, [read_rgb(p) for p in val], warmup=2, runs=3 * len(val))
    echo(f"   {len(val)} val frames -> {pred_dir} (label PNGs + *_color.png overlays)")
    echo(f"   per-frame latency p50 {stats['p50_ms']:.1f} ms, p90 {stats['p90_ms']:.1f} ms, "
         f"{stats['fps']:.1f} frames/s")
    deployed = evaluate_pred_dir(pred_dir, data_root(out, data, "cityscapes") / "gtFine" / "val", progress=False)
    echo(f"   mIoU: PyTorch FP32 ensemble {pytorch_miou:.2f}, deployed FP16 graph {deployed.miou * 100:.2f} "
         f"(delta {round(deployed.miou * 100 - pytorch_miou, 2) + 0.0:+.2f})")  # + 0.0: no "-0.00"
    return {"backend": seg.backend, "providers": list(seg.providers), "notes": list(seg.notes), "latency": stats,
            "frames": len(val), "deployed": deployed.to_dict(), "pytorch_miou": pytorch_miou,
            "outputs": [pred_dir.name]}


def bench_stage(out: Path, data: dict, ensemble: dict) -> dict:
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
    echo(accuracy_summary(results))
    folder = out / "bench-accuracy"
    written = write_out_dir(folder, results, overwrite=True)  # the demo's own folder: replaced whole
    echo(f"   -> {folder}/: {', '.join(written['files'])}")
    rows, notes = read_results(folder / RESULTS_FILE, label="FP16 graph")
    delta_rows = deltas(rows, "FP16 graph pytorch")
    write_text_atomic(out / "table1.md", markdown(rows, delta_rows, "FP16 graph pytorch", notes), overwrite=True)
    write_text_atomic(out / "table1.csv", csv_text(rows, delta_rows), overwrite=True)
    echo(markdown(rows, [], None, notes) + f"   -> {out / 'table1.md'}, {out / 'table1.csv'}")
    if not results["verdict"]["passed"]:
        raise GateFailed(f"the demo's parity gate: {results['verdict']['line']}; this is a bug, please report it")
    ort = results["backends"]["onnxruntime"]
    return {"verdict": results["verdict"]["line"], "onnxruntime_delta_miou": ort["delta_miou"],
            "onnxruntime_differing_percent": (ort.get("agreement") or {}).get("differing_percent"),
            "protocol_gap": results["protocol_gap"], "files": written["files"],
            "outputs": ["bench-accuracy", "table1.md", "table1.csv"]}
