"""The predictors a command scores or draws, named by one set of options shared by ``ftadapt eval`` and
``ftadapt visualize``: checkpoints, one ensemble (its members beside it), exported files and prediction folders, with
the head rule, flip, fusion, device and runtime backend that apply to them.

Torch-free to import (``ftadapt --help`` imports every command module); the predictors are built on demand.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ftadapt.commands.common import fusion_option

_OPTIONS = (
    click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(path_type=Path),
                 help="A checkpoint folder (or run folder: its newest checkpoint); repeatable."),
    click.option("--ensemble", "members", multiple=True, metavar="DIR:WEIGHT",
                 help="A member of one ensemble (checkpoint or run folder and weight), repeatable; the members are "
                      "scored beside the ensemble."),
    click.option("--onnx", "onnx_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
                 help="A file written by `ftadapt export`, run through ftadapt.runtime; repeatable."),
    click.option("--pred-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
                 help="A folder of trainId PNGs named by Cityscapes frame id (*_color.png ignored)."),
    click.option("--heads", type=click.Choice(["sum", "main"]), default=None,
                 help="Head rule of --checkpoint models: both heads summed (CLAN) or the main head [the model's own]."),
    click.option("--flip", is_flag=True,
                 help="Horizontal-flip TTA of --checkpoint models and of an ensemble's members (mean of the two "
                      "softmaxes; an ensemble then fuses the flip-averaged softmaxes, as the paper's evaluation)."),
    fusion_option,
    click.option("--device", default="auto", show_default=True, help="PyTorch models: auto, cpu, cuda or cuda:N."),
    click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto",
                 show_default=True, help="Runtime backend of --onnx files."),
)


def predictor_options(func):
    """Add the predictor options (``--checkpoint``, ``--ensemble``, ``--onnx``, ``--pred-dir``, ``--heads``,
    ``--flip``, ``--fusion``, ``--device``, ``--backend``) to a command."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def named_any(opts: dict[str, Any]) -> bool:
    """Whether the options name at least one predictor."""
    return bool(opts["checkpoints"] or opts["members"] or opts["onnx_files"] or opts["pred_dir"])


def check_predictor_options(opts: dict[str, Any]) -> None:
    """Usage errors of option combinations that cannot apply (a click.UsageError, exit 2)."""
    if opts["members"] and not opts["checkpoints"] and opts["heads"]:
        raise click.UsageError("--heads applies to --checkpoint models; an ensemble runs each member under its own "
                               "head rule")
    if opts["fusion"] != "probs" and not opts["members"]:
        raise click.UsageError("--fusion applies to an ensemble (--ensemble DIR:WEIGHT, repeatable)")
    if opts["members"]:
        from ftadapt.ensemble import check_mode
        from ftadapt.errors import UsageError

        try:
            check_mode(opts["fusion"], opts["flip"])
        except UsageError as exc:
            raise click.UsageError(str(exc)) from None


def build_predictors(opts: dict[str, Any]) -> tuple[list, dict[str, str]]:
    """The predictors the options name, in option order, and each one's kind (checkpoint, member, ensemble, onnx,
    predictions); a repeated name gets ``#2``, ``#3``."""
    out: list = []
    kinds: dict[str, str] = {}

    def add(predictor, kind: str) -> None:
        base, k = predictor.name, 2
        while predictor.name in kinds:
            predictor.name, k = f"{base}#{k}", k + 1
        kinds[predictor.name] = kind
        out.append(predictor)

    if opts["checkpoints"] or opts["members"]:
        from ftadapt.evaluation.pytorch import EnsemblePredictor, ModelPredictor

        for path in opts["checkpoints"]:
            add(ModelPredictor.from_checkpoint(path, rule=opts["heads"], flip=opts["flip"], device=opts["device"]),
                "checkpoint")
        if opts["members"]:
            from ftadapt.ensemble import load_ensemble

            ensemble = EnsemblePredictor(load_ensemble(list(opts["members"]), fusion=opts["fusion"],
                                                       flip=opts["flip"]), device=opts["device"])
            for member in ensemble.member_predictors():
                add(member, "member")
            add(ensemble, "ensemble")
    for path in opts["onnx_files"]:
        from ftadapt.evaluation.onnx import OnnxPredictor

        add(OnnxPredictor.open(path, backend=opts["backend"], device=runtime_device(opts["device"])), "onnx")
    if opts["pred_dir"]:
        from ftadapt.evaluation.folder import PredictionFolder

        add(PredictionFolder(opts["pred_dir"]), "predictions")
    return out, kinds


def predictor_inputs(opts: dict[str, Any]) -> list[Path]:
    """The files and folders the predictors read (no output may lie in them): prediction folders, exported files and
    the models (a run folder's newest checkpoint folder)."""
    given = [Path(p) for p in (opts["pred_dir"], *opts["onnx_files"]) if p is not None]
    if opts["checkpoints"] or opts["members"]:  # PyTorch models: torch is imported anyway
        from ftadapt.checkpoint import resolve_checkpoint
        from ftadapt.ensemble import MemberSpec

        given += [resolve_checkpoint(p) for p in [*opts["checkpoints"],
                                                  *(MemberSpec.parse(m).path for m in opts["members"])]]
    return given


def close_all(predictors: list) -> None:
    """Release what the predictors hold (a runtime session)."""
    for p in predictors:
        getattr(p, "close", lambda: None)()


def runtime_device(device: str) -> int | str:
    """The runtime's device for a PyTorch-style name: "cpu", or the CUDA index of auto/cuda/cuda:N."""
    from ftadapt.errors import UsageError
    from ftadapt.runtime.backends import parse_device

    try:
        return parse_device(device)
    except UsageError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None


__all__ = ["predictor_options", "named_any", "check_predictor_options", "build_predictors", "predictor_inputs",
           "close_all", "runtime_device"]
