"""The predictor options shared by ``ftadapt eval`` and ``ftadapt visualize``: checkpoints, one ensemble (its members
beside it), exported files and prediction folders, with the head rule, flip, fusion, device and runtime backend that
apply to them. They become one :class:`~ftadapt.evaluation.predictors.PredictorRequest`; the predictors are built by
``ftadapt.evaluation.predictors``.

Torch-free to import (``ftadapt --help`` imports every command module).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ftadapt.commands.common import device_option, fusion_option

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
                      "softmaxes; an ensemble then fuses the flip-averaged softmaxes, as the evaluation of the "
                      "paper's starred rows). --protocol maxsquare takes a model's softmaxes after upsampling."),
    fusion_option(fta_code=True),
    device_option(" (PyTorch models and --onnx files)"),
    click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto",
                 show_default=True, help="Runtime backend of --onnx files."),
)
_KEYS = ("checkpoints", "members", "onnx_files", "pred_dir", "heads", "flip", "fusion", "device", "backend")


def predictor_options(func):
    """Add the predictor options (``--checkpoint``, ``--ensemble``, ``--onnx``, ``--pred-dir``, ``--heads``,
    ``--flip``, ``--fusion``, ``--device``, ``--backend``) to a command."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def predictor_request(opts: dict[str, Any]):
    """The :class:`~ftadapt.evaluation.predictors.PredictorRequest` of a command's options, checked (a usage error
    for combinations that cannot apply)."""
    from ftadapt.errors import UsageError
    from ftadapt.evaluation.predictors import PredictorRequest

    request = PredictorRequest(**{key: opts[key] for key in _KEYS})
    try:
        request.check()
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    if request.members and request.fusion == "fta-code":
        click.echo(FTA_CODE_WARNING, err=True)
    return request


FTA_CODE_WARNING = ("warning: --fusion fta-code is not an ensemble to use: it emulates a bug of the authors' "
                    "evaluate.py (the second member's un-flipped output computed with model 1), so the second member "
                    "counts only through its mirrored view with --flip, and not at all without (the result is the "
                    "first member's); it exists to reproduce the published 'CLAN + Norm*' number")


__all__ = ["predictor_options", "predictor_request", "FTA_CODE_WARNING"]
