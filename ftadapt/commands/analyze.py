"""``ftadapt analyze features`` (what adaptation did to the feature space: the paper's Figures 1 and 3, with the
numbers behind them) and ``ftadapt visualize`` (prediction grids: the paper's Figures 4 and 5)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ftadapt.commands.common import (
    SIZE,
    DatasetSpecType,
    check_json,
    device_option,
    echo,
    emit,
    json_option,
    labelled_path,
    overwrite_option,
)
from ftadapt.commands.predictors import predictor_options, predictor_request
from ftadapt.config import SEED_MAX


@click.group()
def analyze() -> None:
    """Analyses of trained models, in numbers and pictures."""


@analyze.command("features")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, metavar="[NAME=]DIR",
              help="A checkpoint folder (or run folder: its newest checkpoint), optionally named for the panels; "
                   "repeatable: one panel per checkpoint.")
@click.option("--source", type=DatasetSpecType(("gta5", "synthia")), required=True, metavar="gta5:ROOT",
              help="The labelled source (gta5 or synthia).")
@click.option("--target", type=DatasetSpecType(("cityscapes",)), required=True, metavar="cityscapes:ROOT",
              help="The target, with labels (its --target-split).")
@click.option("--target-split", default="val", show_default=True, help="Cityscapes split of --target.")
@click.option("--classes", default=None, metavar="NAMES",
              help="Comma-separated classes to measure and plot, e.g. road,building,traffic_sign [all 19].")
@click.option("--plot-classes", default=None, metavar="NAMES",
              help="The classes of the scatter plots, among --classes [the --classes]; a few keep them readable.")
@click.option("--images", type=click.IntRange(1), default=130, show_default=True,
              help="Images per domain (a seeded choice; the paper used 130).")
@click.option("--points", type=click.IntRange(2), default=150, show_default=True,
              help="Feature vectors sampled per class and domain for the embeddings (numbers use every position).")
@click.option("--method", type=click.Choice(["pca", "tsne", "both"]), default="both", show_default=True,
              help="Embedding of the scatter plots.")
@click.option("--source-size", type=SIZE, default=None, help="Source input size W×H [the dataset's protocol size].")
@click.option("--target-size", type=SIZE, default="1024x512", show_default=True, help="Target input size W×H.")
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=0, show_default=True,
              help="Image choice, point sampling and embeddings.")
@device_option()
@click.option("--threads", type=click.IntRange(1), default=None,
              help="Threads of the embeddings [every core]; on a busy machine 1 can be several times faster.")
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True,
              help="Image-decoding processes (0: decode in this process).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the figures, features.json and embedding.csv (added to an existing folder; earlier "
                   "files of these names need --overwrite).")
@json_option("the numbers")
@overwrite_option("earlier figures, features.json and embedding.csv in --out, and the JSON file")
def features(**opts: Any) -> None:
    """Layer4 features of source vs target, class by class: scatter plots (PCA, t-SNE), norm distributions, and per
    class the mean feature norm per domain and the domain gap (0 = aligned).

    \b
    ftadapt analyze features --checkpoint source-only=runs/so --checkpoint norm-only=runs/norm \\
        --source gta5:data/GTA5 --target cityscapes:data/Cityscapes --classes road,building,traffic_sign \\
        --out analysis/
    """
    from ftadapt.analysis.feature_space import (
        DomainSpec,
        analyze_features,
        check_out,
        format_feature_table,
        load_models,
    )
    from ftadapt.labels import class_ids
    from ftadapt.machine import check_memory
    from ftadapt.run_folder import resolve_checkpoint

    check_memory({"--source-size": opts["source_size"], "--target-size": opts["target_size"]})
    classes = class_ids(opts["classes"]) if opts["classes"] else None
    plot_classes = class_ids(opts["plot_classes"]) if opts["plot_classes"] else None
    methods = ("pca", "tsne") if opts["method"] == "both" else (opts["method"],)
    specs = [labelled_path(spec) for spec in opts["checkpoints"]]
    inputs = [opts["source"][1], opts["target"][1], *(resolve_checkpoint(path) for _, path in specs)]
    check_out(opts["out_dir"], methods, inputs=inputs, overwrite=opts["overwrite"])  # before anything is loaded
    check_json(opts["json_out"], opts["overwrite"], inputs, beside=[("--out", opts["out_dir"])])
    models = load_models(specs, opts["device"])
    source = DomainSpec(*opts["source"], size=opts["source_size"])
    target = DomainSpec(*opts["target"], split=opts["target_split"], size=opts["target_size"])
    payload = analyze_features(models, source, target, out=opts["out_dir"], classes=classes,
                               plot_classes=plot_classes, images=opts["images"],
                               methods=methods, points=opts["points"], seed=opts["seed"], workers=opts["workers"],
                               threads=opts["threads"], overwrite=opts["overwrite"])
    echo(format_feature_table(payload), opts["json_out"])
    figures = ", ".join(str(opts["out_dir"] / f) for f in payload["figures"].values())
    echo(f"figures: {figures}", opts["json_out"])
    emit(payload, opts["json_out"], overwrite=opts["overwrite"])


@click.command("visualize")
@predictor_options
@click.option("--data", type=DatasetSpecType(("cityscapes",)), required=True, metavar="cityscapes:ROOT",
              help="The Cityscapes root whose --split frames are shown.")
@click.option("--split", default="val", show_default=True, help="Cityscapes split of --data.")
@click.option("--frame", "frames", multiple=True, metavar="ID",
              help="A frame to show (its Cityscapes frame id, or any part of it naming one frame); repeatable.")
@click.option("--frames", "count", type=click.IntRange(1), default=4, show_default=True,
              help="Without --frame: this many frames, spread evenly over the split.")
@click.option("--errors", is_flag=True, help="Add an error map after each prediction (wrong red, ignored grey).")
@click.option("--size", type=SIZE, default="1024x512", show_default=True, help="Model input size W×H.")
@click.option("--tile-width", type=click.IntRange(64, 4096), default=480, show_default=True,
              help="Width of each picture in the grid, in pixels.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The picture to write, in the format its suffix names: .png, .jpg/.jpeg, .tif/.tiff, .pdf or "
                   ".svg.")
@json_option("the per-frame numbers")
@overwrite_option("the picture and the JSON file")
def visualize(**opts: Any) -> None:
    """A grid of image, ground truth and each predictor's colourised prediction for chosen target frames, each with
    its per-frame mIoU.

    \b
    ftadapt visualize --checkpoint runs/source-only --checkpoint runs/clan-norm --data cityscapes:data/Cityscapes \\
        --frames 4 --errors --out grid.png
    ftadapt visualize --ensemble runs/norm:0.5 --ensemble runs/clan:0.5 --onnx ens.onnx --data cityscapes:ROOT \\
        --frame frankfurt_000000_000294 --out grid.png
    """
    from ftadapt.analysis.grid import pick_frames, write_grid
    from ftadapt.analysis.plotting import figure_format
    from ftadapt.evaluation import ADAPTSEGNET, LabelledSplit
    from ftadapt.evaluation.predictors import build, close_all
    from ftadapt.fsutil import check_target
    from ftadapt.machine import check_memory

    request = predictor_request(opts)
    if not request.names_any:
        raise click.UsageError("say what to show: --checkpoint DIR, --ensemble DIR:WEIGHT (repeatable), --onnx FILE "
                               "or --pred-dir DIR")
    figure_format(opts["out_file"], what="--out")
    check_memory({"--size": opts["size"]})
    out = opts["out_file"]
    inputs = [opts["data"][1], *request.inputs()]
    check_target(out, overwrite=opts["overwrite"], inputs=inputs, what="--out")
    check_json(opts["json_out"], opts["overwrite"], inputs, beside=[("--out", out)])
    whole = LabelledSplit.from_root(opts["data"][1], opts["split"])
    split = pick_frames(whole, opts["frames"], opts["count"])
    if not opts["frames"] and opts["count"] > len(split.frames):
        echo(f"note: --frames {opts['count']}, but {whole.where} has {len(whole.frames)}: showing all of them",
             opts["json_out"])
    predictors, _ = build(request)
    try:
        payload = write_grid(predictors, split, ADAPTSEGNET.at(opts["size"]), out, errors=opts["errors"],
                             tile_width=opts["tile_width"], overwrite=opts["overwrite"])
    finally:
        close_all(predictors)
    echo(_grid_table(payload), opts["json_out"])
    echo(f"wrote {out}", opts["json_out"])
    emit(payload, opts["json_out"], overwrite=opts["overwrite"])


def _grid_table(payload: dict[str, Any]) -> str:
    """Per-frame mIoU (percent) of each predictor, one line per frame."""
    names = payload["predictors"]
    head = "frame (per-frame mIoU)"
    width = max(len(head), *(len(f) for f in payload["frames"]))
    lines = [f"{head:<{width}}" + "".join(f"  {n:>{max(len(n), 6)}}" for n in names)]
    for frame in payload["frames"]:
        cells = [payload["per_frame"][frame][n]["miou"] for n in names]
        lines.append(f"{frame:<{width}}" + "".join(f"  {'-' if v is None else f'{v:.1f}':>{max(len(n), 6)}}"
                                                   for v, n in zip(cells, names)))
    return "\n".join(lines)


__all__ = ["analyze", "visualize"]
