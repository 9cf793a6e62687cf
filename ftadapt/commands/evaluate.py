"""``ftadapt eval``: mIoU of any predictors — checkpoints, an ensemble and its members, exported files, prediction
PNGs — scored side by side in one pass over a labelled Cityscapes split.

Every predictor is named by an explicit option and every one given is evaluated; nothing is guessed from which
options appear together.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ftadapt.commands.common import SIZE, DatasetSpecType, check_json, echo, emit, json_option, overwrite_option
from ftadapt.commands.predictors import predictor_options, predictor_request

_WHAT = ("say what to evaluate: --checkpoint DIR, --ensemble DIR:WEIGHT (repeatable), --onnx FILE or --pred-dir DIR; "
         "with --data cityscapes:ROOT (or --gt-dir CITYSCAPES/gtFine/val for prediction PNGs)")


@click.command("eval")
@predictor_options
@click.option("--data", type=DatasetSpecType(("cityscapes",)), default=None, metavar="cityscapes:ROOT",
              help="The Cityscapes root whose --split is evaluated.")
@click.option("--gt-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Instead of --data for prediction PNGs: the gtFine/<split> folder.")
@click.option("--split", default="val", show_default=True, help="Cityscapes split of --data.")
@click.option("--protocol", type=click.Choice(["adaptsegnet", "maxsquare"]), default="adaptsegnet", show_default=True,
              help="adaptsegnet: upsample to the full-resolution ground truth (the papers' tables); maxsquare: ground "
                   "truth downsampled to the input size (MaxSquare's variant, higher, labelled).")
@click.option("--size", type=SIZE, default="1024x512", show_default=True, help="Model input size W×H.")
@click.option("--save-pred", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write <frame>.png (trainIds) and <frame>_color.png of the one model evaluated here (a folder "
                   "outside the inputs).")
@click.option("--allow-missing", is_flag=True,
              help="Evaluate the matched frames when some are missing or differ in size (listed and skipped) instead "
                   "of failing.")
@click.option("--synthia", "synthia_subsets", is_flag=True,
              help="Also report mIoU16 and mIoU13 (SYNTHIA → Cityscapes).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decoding threads [default: CPU cores].")
@json_option()
@overwrite_option("earlier --save-pred files of the same frames, and the JSON file")
def evaluate_cmd(**opts: Any) -> None:
    """mIoU on the AdaptSegNet protocol (one confusion matrix over the split, full-resolution ground truth).

    \b
    ftadapt eval --checkpoint runs/clan-norm --data cityscapes:data/Cityscapes [--flip] [--protocol maxsquare]
    ftadapt eval --ensemble runs/norm-only:0.7 --ensemble converted/clan:0.3 --data cityscapes:data/Cityscapes \\
        [--fusion logits | --flip]
    ftadapt eval --onnx ens.onnx --checkpoint runs/norm-only --data cityscapes:data/Cityscapes
    ftadapt eval --pred-dir preds/ --gt-dir Cityscapes/gtFine/val [--json result.json]
    """
    from ftadapt.evaluation import evaluate, get_protocol
    from ftadapt.evaluation.evaluate import problem_report
    from ftadapt.evaluation.predictors import build, close_all
    from ftadapt.machine import check_memory

    request = predictor_request(opts)
    if not request.names_any:
        raise click.UsageError(_WHAT)
    check_memory({"--size": opts["size"]})
    inputs = _inputs(opts, request)
    check_json(opts["json_out"], opts["overwrite"], inputs, beside=[("--save-pred", opts["save_pred"])])
    split = _split(opts)  # usage errors first, then the data, before any model is loaded
    predictors, kinds = build(request)
    try:
        protocol = get_protocol(opts["protocol"], opts["size"])
        results = evaluate(_saving(predictors, kinds, opts, inputs), split, protocol, workers=opts["workers"],
                           allow_missing=opts["allow_missing"], synthia_subsets=opts["synthia_subsets"])
    finally:
        close_all(predictors)
    for result in results.values():
        for line in problem_report(result.missing or {}):
            click.echo(f"warning: {line} (skipped)", err=True)
    table, payload = _report(results, kinds)
    echo(table, opts["json_out"])
    emit(payload, opts["json_out"], overwrite=opts["overwrite"])


def _inputs(opts: dict[str, Any], request) -> list[Path]:
    """What an evaluation reads (no output may lie in it): the data and the predictors' files."""
    return [Path(p) for p in (opts["data"][1] if opts["data"] else None, opts["gt_dir"]) if p is not None] + \
        request.inputs()


def _saving(predictors: list, kinds: dict[str, str], opts: dict[str, Any], inputs: list[Path]) -> list:
    """``--save-pred``: the one model predictor wrapped to write its predictions there."""
    folder = opts["save_pred"]
    if folder is None:
        return predictors
    models = [p for p in predictors if kinds[p.name] != "predictions"]
    if len(models) != 1:
        raise click.UsageError(f"--save-pred writes the predictions of one model; {len(models)} are evaluated here "
                               f"({', '.join(p.name for p in models) or 'none'})")
    from ftadapt.evaluation.folder import SavingPredictions
    from ftadapt.fsutil import check_target

    check_target(folder, overwrite=opts["overwrite"], inputs=inputs, what="--save-pred", kind="merge")
    return [SavingPredictions(p, folder, overwrite=opts["overwrite"]) if p is models[0] else p for p in predictors]


def _split(opts: dict[str, Any]):
    """The labelled split: the --data root (checked by the dataset doctor when models read its images), or the
    --gt-dir folder for prediction PNGs alone."""
    from ftadapt.evaluation import LabelledSplit

    models = [f"--{flag}" for flag, key in (("checkpoint", "checkpoints"), ("ensemble", "members"),
                                            ("onnx", "onnx_files")) if opts[key]]
    if opts["data"] is None:
        if models or opts["gt_dir"] is None:
            needs = "--data cityscapes:ROOT" + ("" if models else " (or --gt-dir CITYSCAPES/gtFine/<split>)")
            raise click.UsageError(f"{', '.join(models) or '--pred-dir'}: evaluating also needs {needs}")
        return LabelledSplit.from_gt_dir(opts["gt_dir"])
    if opts["gt_dir"] is not None:
        raise click.UsageError("give the ground truth once: --data cityscapes:ROOT or --gt-dir, not both")
    root = opts["data"][1]
    if not models:
        return LabelledSplit.from_gt_dir(root / "gtFine" / opts["split"])
    from ftadapt.data.check import require_usable

    allow = ("size-mismatch",) if opts["allow_missing"] else ()
    require_usable("cityscapes", root, [opts["split"]], allow=allow,
                   skip_hint="" if allow else " (--allow-missing skips frames whose label and image sizes differ)")
    return LabelledSplit.from_root(root, opts["split"])


def _report(results: dict, kinds: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The table and the JSON: one result alone; an ensemble beside its members, with deltas against the best
    member; any other set side by side, with deltas of the last against the first."""
    from ftadapt.evaluation.tables import best_of, format_comparison, format_result

    if len(results) == 1:
        (result,) = results.values()
        return format_result(result), result.to_dict()
    if set(kinds.values()) == {"member", "ensemble"}:
        (ensemble,) = (name for name, kind in kinds.items() if kind == "ensemble")
        best = best_of({k: v for k, v in results.items() if k != ensemble})
        payload = {"members": {k: v.to_dict() for k, v in results.items() if k != ensemble},
                   "ensemble": results[ensemble].to_dict(), "delta_vs": best}
        return format_comparison(results, delta=(ensemble, best)), payload
    names = list(results)
    return (format_comparison(results, delta=(names[-1], names[0])),
            {"results": {k: v.to_dict() for k, v in results.items()}, "delta": [names[-1], names[0]]})
