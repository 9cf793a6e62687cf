"""``report.md``: the one file a person opens to see what the demo did, and ``results.json`` beside it.

Every number in the report comes from the stage records of this demo run (``demo.json``); the sentences that
compare methods are derived from those numbers, whichever way they come out.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from click import echo

from ftadapt.demo.settings import CURVES_FILE, DEMO_METHODS, DEPLOYED, ENSEMBLE, FIGURES, GRID_FILE
from ftadapt.fsutil import write_text_atomic


def report_stage(out: Path, settings: dict, stages: dict[str, dict]) -> dict:
    """Write ``results.json`` (every per-class result, readable by ``ftadapt report``) and ``report.md``."""
    results = table_results(stages)
    write_text_atomic(out / "results.json", json.dumps({"results": results}, indent=2) + "\n", overwrite=True)
    text = "\n".join([_head(settings, stages), _results_section(out, results), _deployment_section(stages),
                      _bench_section(stages["bench"]), _feature_section(stages["analysis"]["features"]),
                      _grid_section(stages["analysis"]["grid"]), _training_section(out, stages["train"]),
                      _files_section()])
    write_text_atomic(out / "report.md", text, overwrite=True)
    echo(f"   {out / 'report.md'}")
    return {"outputs": ["report.md", "results.json"]}


def table_results(stages: dict[str, dict]) -> dict[str, dict]:
    """The rows of the report's table, in order: the three runs, the two ensembles, the deployed graph."""
    return {**stages["train"]["results"], **stages["ensemble"]["results"], DEPLOYED: stages["deploy"]["deployed"]}


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{round(value, 2) + 0.0:+.2f}"


def _head(settings: dict, stages: dict[str, dict]) -> str:
    data, train = stages["data"], stages["train"]
    steps = {run["step"] for run in train["runs"].values()}
    return (f"# ftadapt demo report\n\nWhat `ftadapt demo` did (seed {settings['seed']}, ftadapt {settings['ftadapt']}"
            f"): the tiny DeepLab-v2 (random init, no ImageNet weights) trained for {', '.join(map(str, steps))} "
            f"steps with each of {', '.join(DEMO_METHODS)} on the synthetic two-domain street scenes — "
            f"{data['n_source']} rendered source images in the GTA5 layout, {data['n_target_train']} photographed "
            f"target images in the Cityscapes layout (unlabelled in training) — and evaluated on "
            f"{data['n_target_val']} target val images, on the CPU. Every number below was measured in this run; "
            "none is the paper's. The models are tiny and the runs short, so this shows the pipeline at work and "
            "what to look at, not the paper's result; each method was trained once (one seed), so differences "
            "of a few points may be run-to-run noise.\n")


def _results_section(out: Path, results: dict[str, dict]) -> str:
    from ftadapt.evaluation.report import deltas, markdown, read_results

    rows, notes = read_results(out / "results.json")
    text = markdown(rows, deltas(rows, "source-only"), "source-only", notes)
    miou = {name: r["miou"] for name, r in results.items()}
    lines = [f"- {m} vs source-only: {_signed(_minus(miou[m], miou['source-only']))} mIoU"
             for m in DEMO_METHODS[1:]]
    members = [miou[m] for m in ENSEMBLE if miou[m] is not None]
    if members and miou["ensemble"] is not None:
        lines.append(f"- the ensemble vs its better member: {_signed(miou['ensemble'] - max(members))} mIoU "
                     f"(with flip: {_signed(_minus(miou['ensemble+flip'], max(members)))})")
    better = _classes_better(results["clan-norm"], results["source-only"])
    if better:
        lines.append(f"- clan-norm's IoU is higher than source-only's in {better[0]} of {better[1]} classes")
    return ("## 1. Accuracy on the target (the paper's Table 1 shape)\n\nIoU per class and mIoU in percent on the "
            "synthetic target val set, AdaptSegNet protocol at the demo's size. Rows: the three training runs; "
            f"`ensemble` = 0.5 {ENSEMBLE[0]} + 0.5 {ENSEMBLE[1]}, probability fusion; `ensemble+flip` = the paper's "
            f"flip fusion; `{DEPLOYED}` = the exported FP16 graph of `ensemble` as deployed (ONNX Runtime, its own "
            f"in-graph pre-processing). `-`: class absent from ground truth and prediction.\n\n{text}\n"
            + "\n".join(lines) + "\n\n`ftadapt report results.json` prints the same table (add `--paper` for the "
            "paper's rows on the real benchmark).\n")


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _classes_better(a: dict, b: dict) -> tuple[int, int] | None:
    pairs = [(x, y) for x, y in zip(a["per_class_iou"], b["per_class_iou"]) if x is not None and y is not None]
    return (sum(x > y for x, y in pairs), len(pairs)) if pairs else None


def _deployment_section(stages: dict[str, dict]) -> str:
    exports, deploy = stages["ensemble"]["exports"], stages["deploy"]
    rows = ["| graph | file | verification | max abs Δprob | label agreement | identical labels |",
            "|---|---|---|---:|---:|---:|"]
    for precision, e in exports.items():
        v = e["verification"]
        rows.append(f"| {precision.upper()} | `{e['file']}` ({e['mib']} MiB) | {v['status']} | "
                    f"{_number(v['max_abs_prob'], '.3g')} | {_percent(v['label_agreement'])} | "
                    f"{_percent(v['identical_labels'])} |")
    lat, deployed = deploy["latency"], deploy["deployed"]["miou"]
    return ("## 2. Deployment\n\nEach export is checked against the PyTorch FP32 ensemble by ONNX Runtime on random "
            "frames (the gates of DESIGN §7):\n\n" + "\n".join(rows) + "\n\n"
            f"The FP16 graph through `ftadapt.runtime.Segmenter` (backend {deploy['backend']}, providers "
            f"{', '.join(deploy['providers'])}) on the {deploy['frames']} val frames: mIoU {deployed:.2f} against "
            f"{deploy['pytorch_miou']:.2f} for the PyTorch FP32 ensemble ({_signed(deployed - deploy['pytorch_miou'])}"
            f"); per-frame latency p50 {lat['p50_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms, {lat['fps']:.1f} frames/s "
            "on this machine's CPU. Label PNGs and colour overlays: `deployed-predictions/`.\n")


def _bench_section(bench: dict[str, Any]) -> str:
    gap = bench["protocol_gap"] or {}
    differing = bench["onnxruntime_differing_percent"]
    return ("The parity gate (`ftadapt bench accuracy --backends pytorch,onnxruntime`) scored the same FP16 file with "
            "its PyTorch module (the reference) and with ONNX Runtime on every val frame: "
            f"**{bench['verdict']}**; ONNX Runtime's mIoU differs by {_signed(bench['onnxruntime_delta_miou'])} and "
            f"its labels in {_number(differing, '.4f')} % of the pixels. The training protocol's pre-processing "
            "(PIL bicubic resize) against the graph's own (bilinear) moves the mIoU by "
            f"{_signed(gap.get('protocol_minus_deployed'))}. Its report and figures: `bench-accuracy/report.md`; "
            "its rows in the paper's Table 1 layout (`ftadapt report`): `table1.md`, `table1.csv`.\n")


def _number(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.4f} %"


def _feature_section(features: dict[str, Any]) -> str:
    from ftadapt.analysis.feature_space import FIGURES as FEATURE_FIGURES

    names = [m["name"] for m in features["models"]]
    res = features["results"]
    rows = ["| model | mean norm, source | mean norm, target | target / source | mean gap |",
            "|---|---:|---:|---:|---:|"]
    for name in names:
        s, t = res[name]["mean_norm"]["source"], res[name]["mean_norm"]["target"]
        rows.append(f"| {name} | {_number(s)} | {_number(t)} | {_number(_ratio(t, s))} | "
                    f"{_number(res[name]['mean_gap'])} |")
    gaps = ["| class | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    gaps += [f"| {c} | " + " | ".join(_number(res[n]["classes"][c]["gap"]) for n in names) + " |"
             for c in features["classes"]]
    src, tgt = features["source"], features["target"]
    pictures = "\n\n".join(f"![{key}]({FIGURES}/{file})" for key, file in FEATURE_FIGURES.items()
                           if file in features["figures"].values())
    return (f"## 3. Feature space (the paper's Figures 1 and 3)\n\nThe layer4 features (what the norm loss acts on) "
            f"of {src['images']} source and {tgt['images']} target val images, each position labelled by the ground "
            f"truth downsampled to the feature grid; up to {features['points_per_class']} positions per class and "
            "domain sampled (the same positions for every model), embedded per model with PCA and t-SNE: 'x' "
            "source, '.' target, classes in the Cityscapes colours. Then the distribution of the per-position "
            f"norms per domain.\n\n{pictures}\n\n" + "\n".join(rows) + "\n\n"
            + "\n".join(_feature_observations(names, res, features["classes"])) + "\n\nThe domain gap of a class "
            "is the distance between its source and target feature centroids in units of the pooled within-domain "
            "RMS spread: 0 = aligned; scaling all features leaves it unchanged, so a larger norm alone does not "
            "lower it. Mean norms and gaps use every labelled position of the images read, not only the sampled "
            "ones. Per class:\n\n" + "\n".join(gaps) + "\n\nAll numbers: `figures/features.json`; every plotted "
            "point: `figures/embedding.csv`.\n")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _feature_observations(names: list[str], res: dict, classes: list[str]) -> list[str]:
    base = names[0]
    lines = []
    for name in names[1:]:
        ratio = _ratio(res[name]["mean_norm"]["target"], res[base]["mean_norm"]["target"])
        lower = sum(1 for c in classes if None not in (res[name]["classes"][c]["gap"], res[base]["classes"][c]["gap"])
                    and res[name]["classes"][c]["gap"] < res[base]["classes"][c]["gap"])
        both = sum(1 for c in classes if None not in (res[name]["classes"][c]["gap"], res[base]["classes"][c]["gap"]))
        lines.append(f"- {name}: mean target norm {_number(ratio)}× {base}'s; mean gap "
                     f"{_number(res[name]['mean_gap'])} against {_number(res[base]['mean_gap'])}; a lower gap "
                     f"than {base} in {lower} of {both} classes")
    ranked = sorted((n for n in names if res[n]["mean_gap"] is not None), key=lambda n: res[n]["mean_gap"])
    if ranked:
        lines.append(f"- best aligned on average (lowest mean gap): {ranked[0]}")
    return lines


def _grid_section(grid: dict[str, Any]) -> str:
    names = grid["predictors"]
    rows = ["| frame | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for frame in grid["frames"]:
        rows.append(f"| {frame} | " + " | ".join(_number(grid["per_frame"][frame][n]["miou"], ".1f") for n in names)
                    + " |")
    return (f"## 4. Predictions (the paper's Figures 4 and 5)\n\n{len(grid['frames'])} target val frames spread over "
            f"the split: image, ground truth (black = ignored), then each model's prediction with its per-frame "
            f"mIoU.\n\n![predictions]({FIGURES}/{GRID_FILE})\n\n" + "\n".join(rows) + "\n\nMore frames, error "
            "maps or other models: `ftadapt visualize` (e.g. `ftadapt visualize --checkpoint runs/source-only "
            "--checkpoint runs/clan-norm --data cityscapes:data/cityscapes --size 256x128 --errors --out grid.png`)."
            "\n")


def _training_section(out: Path, train: dict) -> str:
    from ftadapt.analysis.curves import read_curves

    rows = ["| method | steps | how | wall time of its last session (s) | last segmentation loss | last mean "
            "feature norm, source / target |", "|---|---:|---|---:|---:|---|"]
    for method, run in train["runs"].items():
        curves = read_curves(out / run["run"])

        def last(key: str, curves: dict = curves) -> str:
            return _number(curves[key][1][-1], ".3g") if key in curves else "-"

        rows.append(f"| {method} | {run['step']} of {run['steps']} | {run['how']} | {run['seconds']:.1f} | "
                    f"{last('loss/seg')} | {last('feat_norm/src')} / {last('feat_norm/tgt')} |")
    return (f"## 5. Training\n\nThe loss terms and the mean layer4 feature norm per domain as each run logged them "
            f"(`runs/<method>/metrics.jsonl`). The feature-norm loss is λ_norm·Δr² times its damping at every step "
            "by construction (it asks each norm to grow by Δr over its own current value), so its curve shows the "
            "schedule; what it does shows in the norms.\n\n"
            f"![training curves]({FIGURES}/{CURVES_FILE})\n\n" + "\n".join(rows) + "\n")


def _files_section() -> str:
    rows = [("`data/`", "the synthetic dataset (GTA5 + Cityscapes layouts)"),
            ("`runs/<method>/`", "each training run: config, metrics, checkpoints"),
            ("`results.json`", "every per-class result of section 1 (`ftadapt report results.json`)"),
            ("`ensemble-fp32.onnx`, `ensemble-fp16.onnx`", "the exported ensemble (`ftadapt inspect FILE`)"),
            ("`deployed-predictions/`", "the deployed graph's label PNGs and overlays"),
            ("`bench-accuracy/`", "the parity gate's results.json, report.md and figures"),
            ("`table1.md`, `table1.csv`", "the parity gate's results as the paper's Table 1"),
            ("`figures/`", "the figures above, `features.json`, `embedding.csv`"),
            ("`demo.json`", "the record of every stage (a rerun reuses it)")]
    return "## Files\n\n| path | what |\n|---|---|\n" + "".join(f"| {path} | {what} |\n" for path, what in rows)
