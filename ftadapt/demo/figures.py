"""The demo's pictures: the feature space of the three runs (the paper's Figures 1 and 3), a prediction grid of the
runs, the ensemble and the deployed graph (Figures 4 and 5), and the training curves, under ``figures/``."""
from __future__ import annotations

from pathlib import Path

from click import echo

from ftadapt.demo.settings import (
    CURVES_FILE,
    DEMO_METHODS,
    DEPLOYED,
    FIGURES,
    GRID_FILE,
    GRID_FRAMES,
    PLOT_CLASSES,
    DemoSettings,
    data_root,
    members,
)


def figures_stage(out: Path, data: dict, train: dict, ensemble: dict, settings: DemoSettings) -> dict:
    """Feature-space figures of the three runs, a prediction grid of the runs, the ensemble and the deployed graph,
    and the training curves, under ``out/figures``."""
    from ftadapt.analysis.feature_space import DomainSpec, analyze_features, format_feature_table, load_models
    from ftadapt.labels import class_ids

    figures = out / FIGURES
    models = load_models([(m, out / train["runs"][m]["run"]) for m in DEMO_METHODS], "cpu")
    features = analyze_features(
        models, DomainSpec("gta5", data_root(out, data, "gta5"), size=settings.source_size),
        DomainSpec("cityscapes", data_root(out, data, "cityscapes"), "val", settings.target_size),
        out=figures, plot_classes=class_ids(PLOT_CLASSES), images=settings.analysis_images,
        points=settings.analysis_points, seed=settings.seed, threads=1, progress=False, overwrite=True)
    echo(format_feature_table(features))
    grid = _grid(out, data, train, ensemble, settings.target_size)
    _curves(out, train)
    written = [*features["figures"].values(), GRID_FILE, CURVES_FILE]
    for name in written:
        echo(f"   {figures / name}")
    return {"features": features, "grid": grid, "outputs": [f"{FIGURES}/{name}" for name in written]}


def _grid(out: Path, data: dict, train: dict, ensemble: dict, size: tuple[int, int]) -> dict:
    """The runs, their ensemble and the deployed FP16 graph on a few val frames."""
    from ftadapt.analysis.grid import pick_frames, write_grid
    from ftadapt.evaluation import ADAPTSEGNET, LabelledSplit, predictors

    shown = [predictors.checkpoint(out / train["runs"][m]["run"], name=m, device="cpu") for m in DEMO_METHODS]
    shown += predictors.ensemble(members(out), device="cpu")
    shown.append(predictors.exported(out / ensemble["exports"]["fp16"]["file"], name=DEPLOYED,
                                     backend="onnxruntime", device="cpu"))
    split = pick_frames(LabelledSplit.from_root(data_root(out, data, "cityscapes"), "val"), count=GRID_FRAMES)
    try:
        return write_grid(shown, split, ADAPTSEGNET.at(size), out / FIGURES / GRID_FILE, tile_width=size[0],
                          progress=False,
                          title="synthetic target val frames: ground truth and predictions (per-frame mIoU)",
                          overwrite=True)  # the demo's own folder
    finally:
        predictors.close_all(shown)


def _curves(out: Path, train: dict) -> None:
    from ftadapt.analysis.curves import curves_figure, read_curves
    from ftadapt.analysis.plotting import save_png

    runs = {m: read_curves(out / train["runs"][m]["run"]) for m in DEMO_METHODS}
    save_png(curves_figure(runs, title="training curves (from each run's metrics.jsonl)"), out / FIGURES / CURVES_FILE,
             overwrite=True)


