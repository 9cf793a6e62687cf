"""What every command shares: the option types (sizes are W×H everywhere), ``--json``, ``--overwrite`` and one way to
emit results.

Every command that writes takes ``--overwrite`` and applies the one output rule (``ftadapt.fsutil``) to each of its
targets before any work: an existing target is refused unless ``--overwrite`` is given (which replaces only what
ftadapt wrote), a link is never followed, nothing is written into the command's own inputs or into a run or checkpoint
folder, and the outputs of one command never overlap.

Torch-free and cheap to import: ``ftadapt --help`` imports every command module.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from ftadapt.config import DATASET_KINDS, parse_dataset_spec
from ftadapt.devices import SPELLINGS, Device, parse_device
from ftadapt.errors import UsageError


class SizeType(click.ParamType):
    """A ``WIDTHxHEIGHT`` size in pixels, e.g. ``1024x512`` (width first, as the paper writes sizes) → (W, H)."""

    name = "WxH"

    def __init__(self, minimum: int = 1) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        w, sep, h = str(value).strip().lower().partition("x")
        if not (sep and w.isdigit() and h.isdigit()):
            self.fail(f"{value!r} is not WIDTHxHEIGHT in pixels (width first), e.g. 1024x512", param, ctx)
        if min(int(w), int(h)) < self.minimum:
            self.fail(f"{value!r}: width and height must both be at least {self.minimum} pixels", param, ctx)
        return int(w), int(h)


SIZE = SizeType()


def legacy_hw(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """The deprecated ``HEIGHTxWIDTH`` options (``--max-size``/``--min-size`` of the runtime commands) → (W, H), with
    a warning naming the W×H option that replaces them. Kept for one release."""
    if value is None:
        return None
    new = param.opts[0].replace("-size", "-frame")
    try:
        h, w = SIZE.convert(value, param, ctx)  # the same syntax, the other order
    except click.BadParameter:
        raise click.BadParameter(f"{value!r}: expected HEIGHTxWIDTH, e.g. 1024x2048 ({param.opts[0]} is deprecated: "
                                 f"use {new} WIDTHxHEIGHT, e.g. 2048x1024)", ctx, param) from None
    click.echo(f"warning: {param.opts[0]} {value} is HEIGHTxWIDTH and deprecated; sizes are now WIDTHxHEIGHT "
               f"everywhere: use {new} {w}x{h}", err=True)
    return w, h


class DatasetSpecType(click.ParamType):
    """``KIND:ROOT`` (e.g. ``cityscapes:/data/Cityscapes``) → (kind, root); ``kinds`` restricts KIND."""

    name = "KIND:ROOT"

    def __init__(self, kinds: tuple[str, ...] = DATASET_KINDS) -> None:
        self.kinds = kinds

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, Path]:
        if isinstance(value, tuple):
            return value
        try:
            kind, root = parse_dataset_spec(str(value))
        except UsageError as exc:
            self.fail(str(exc), param, ctx)
        if kind not in self.kinds:
            self.fail(f"{value!r}: expected {' or '.join(self.kinds)}:ROOT here, not {kind}", param, ctx)
        return kind, root


class DeviceType(click.ParamType):
    """``--device``: auto, cpu, cuda or cuda:N (``ftadapt.devices``) → a :class:`~ftadapt.devices.Device`."""

    name = "DEVICE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Device:
        try:
            return parse_device(value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


DEVICE = DeviceType()


def device_option(what: str = ""):
    """``--device``: the one device option, with the same spelling and default in every command."""
    return click.option("--device", type=DEVICE, default="auto", show_default=True,
                        help=f"{SPELLINGS}; auto = the first CUDA device when there is one, else the CPU{what}.")


FTA_CODE_HELP = ("; fta-code: NOT a sound ensemble, an emulation of the authors' evaluate.py for two CLAN-layout "
                 "members, bug included (member 2 only through the mirrored view with --flip, not at all without), to "
                 "reproduce the published 'CLAN + Norm*' number")


def fusion_option(func=None, *, fta_code: bool = False):
    """``--fusion probs|logits``: how an ensemble's members combine (``ftadapt.ensemble``). With ``fta_code`` (the
    evaluation commands only, never the export) the choice includes ``fta-code``. Use as ``@fusion_option`` or
    ``@fusion_option(fta_code=True)``."""
    choices = ["probs", "logits", *(["fta-code"] if fta_code else [])]
    option = click.option(
        "--fusion", type=click.Choice(choices), default="probs", show_default=True,
        help="Ensembles: weighted sum of the members' softmax (probs, for deployment; with --flip, of their "
             "flip-averaged softmax: the evaluation of the paper's starred rows) or of their raw logits (logits: "
             "HEAD's evaluate.py of 2020-06-01 without --flip; no paper row was computed this way)"
             + (FTA_CODE_HELP if fta_code else "") + ".")
    return option(func) if func is not None else option


def json_option(what: str = "the result"):
    """``--json FILE``: also write ``what`` as JSON there ('-' = stdout, the table then goes to stderr)."""
    return click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
                        help=f"Also write {what} as JSON to this file ('-' = stdout; the table then goes to stderr).")


def overwrite_option(what: str = "the JSON file"):
    """``--overwrite``: the one flag that lets a command replace what it writes (``what``) when it exists."""
    return click.option("--overwrite", is_flag=True,
                        help=f"Replace {what} if it exists (atomically; a link is never followed, an input never "
                             "written).")


def labelled_path(spec: str) -> tuple[str | None, Path]:
    """``LABEL=PATH`` → (LABEL, PATH); a plain path → (None, path). A path that exists as given stays a path, and so
    does one whose "=" lies inside a folder name (``runs/lr=1e-3/eval.json``): a label holds no "/"."""
    label, sep, path = spec.partition("=")
    if sep and label and "/" not in label and not Path(spec).exists():
        return label, Path(path)
    return None, Path(spec)


def check_json(json_out: str | None, overwrite: bool, inputs: Iterable[str | Path] = (),
               beside: Iterable[tuple[str, str | Path | None]] = ()) -> None:
    """The ``--json`` file under the output rule, checked before the command does any work: ``beside`` are the
    command's other outputs (``("--out", path)``), which it must not be, lie in or hold."""
    if json_out not in (None, "-"):
        from ftadapt.fsutil import check_target, refuse_overlap

        refuse_overlap(*beside, ("--json", json_out))
        check_target(json_out, overwrite=overwrite, inputs=inputs, what="--json")


def echo(text: str, json_out: str | None = None) -> None:
    """Print a line for people: to stdout, or to stderr when stdout carries JSON (``--json -``)."""
    click.echo(text, err=json_out == "-")


def emit(payload: dict[str, Any], json_out: str | None, *, always: bool = False, overwrite: bool = False) -> None:
    """Hand over a result as JSON: to ``json_out`` (written atomically, an existing file only with ``overwrite``;
    '-' = stdout) and, with ``always`` (the benchmarks, which print their figures whatever else is asked), to stdout
    as well."""
    # Results must be strict JSON; a benchmark's NaN (a ratio of nothing) must not lose its other figures.
    text = json.dumps(payload, indent=2, default=str, allow_nan=always) + "\n"
    if always or json_out == "-":
        click.echo(text, nl=False)
    if json_out not in (None, "-"):
        from ftadapt.fsutil import check_target, write_text_atomic

        check_target(json_out, overwrite=overwrite, what="--json")  # again: the work may have changed its folder
        write_text_atomic(json_out, text, overwrite=overwrite)
        click.echo(f"wrote {json_out}", err=True)


def prints_report(func):
    """A benchmark that returns its report: printed to stdout and, with ``--json FILE``, written there — a file that
    the output rule checks before the measuring starts (``--overwrite`` replaces it)."""
    @functools.wraps(func)
    def run(json_out: str | None, overwrite: bool, **options) -> None:
        check_json(json_out, overwrite)
        emit(func(**options), json_out, always=True, overwrite=overwrite)

    run = click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
                       help="Also write the report to this file (it is always printed to stdout).")(run)
    return overwrite_option()(run)


__all__ = ["SIZE", "SizeType", "legacy_hw", "DatasetSpecType", "DEVICE", "DeviceType", "device_option",
           "fusion_option", "json_option", "overwrite_option",
           "check_json", "echo", "emit", "prints_report", "DATASET_KINDS"]
