"""``ftadapt train`` and ``ftadapt convert``: checkpoints in — trained here, or imported from released files."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from ftadapt.commands.common import check_json, device_option, echo, emit, json_option, overwrite_option
from ftadapt.config import METHODS
from ftadapt.devices import Device

CONVERT_KINDS = ("deeplab-init", "adaptsegnet", "clan", "maxsquare", "feature-to-adapt")


def config_overrides(config_file: Path | None, sets: tuple[str, ...], **options: object) -> dict:
    """The config keys a command asks for, lowest priority first: a config file, ``--set KEY=VALUE``, then the
    command's own options (those that are not None). Where an option and ``--set``/``--config`` give one key
    different values, a note says which one wins."""
    from ftadapt.config import parse_set, read_config_file, typed_value

    from_file = read_config_file(config_file) if config_file else {}
    from_set = parse_set(sets)
    overrides = {**from_file, **from_set}
    for key, value in options.items():
        if value is None:
            continue
        if key in overrides and typed_value(key, overrides[key]) != typed_value(key, value):
            where = "--set" if key in from_set else f"--config {config_file}"
            click.echo(f"note: {key}: the command's own option ({value}) wins over {where} ({overrides[key]})",
                       err=True)
        overrides[key] = value
    return overrides


def explicit(name: str, value: object) -> object | None:
    """``value`` of the option ``name`` when the command line gave it, else None: an option left at its default (such
    as ``--device auto``) must not override the key a config file, ``--set`` or a resumed run gives."""
    return None if click.get_current_context().get_parameter_source(name) is ParameterSource.DEFAULT else value


def config_options(func):
    """``--config FILE`` and ``--set KEY=VALUE``: the one way every command that builds a training config takes it."""
    func = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                        help="Config key, repeatable: e.g. --set preset=paper-code --set loss.lambda_norm=2e-4 "
                             "--set speed.amp=bf16 (every key is in a run's config.json).")(func)
    return click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="JSON or TOML file of config keys (a run's config.json of any version works).")(func)


@click.command("train")
@click.argument("method", type=click.Choice(METHODS))
@click.option("--source", default=None, metavar="KIND:ROOT",
              help="Labelled source: gta5:ROOT or synthia:ROOT; cityscapes:ROOT (its labelled train split) trains the "
                   "oracle, with source-only. Required for a new run (a resume reads it from the run; --plan may "
                   "leave it out).")
@click.option("--target", default=None, metavar="cityscapes:ROOT",
              help="Unlabelled target (its train split; every method but source-only needs it).")
@click.option("--model", default=None, help="Registered model: deeplabv2-r101 (default; maxsquare*: "
                                            "deeplabv2-r101-multi-reduced), deeplabv2-r50, tiny.")
@click.option("--init", type=click.Path(path_type=Path), default=None,
              help="Initial weights: a checkpoint folder or an official .pth (e.g. the DeepLab ImageNet init); "
                   "the R101 models need it ('none': random weights on purpose).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Number of steps (poly horizon) [100000].")
@device_option(" (config key device)")
@config_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder; required except with --plan (which writes none).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--plan", "show_plan", is_flag=True,
              help="Train nothing: print the resolved config and, at chosen steps, the learning rates and every "
                   "loss's coefficient (λ × damping), to check a run's schedule before it starts.")
@click.option("--plan-steps", default=None, metavar="I,J,...",
              help="The steps --plan shows [0, the end of each warm-up and preheat, 25/50/75/100 %, every zero "
                   "crossing].")
@json_option("the outcome (with --plan: the config and the schedule)")
@overwrite_option("the JSON file (a run folder is never replaced: --resume continues it)")
def train(method: str, source: str | None, target: str | None, model: str | None, init: Path | None,
          steps: int | None, device: Device, config_file: Path | None, sets: tuple[str, ...], out: Path | None,
          resume: bool, show_plan: bool, plan_steps: str | None, json_out: str | None, overwrite: bool) -> None:
    """Train METHOD (one of the choices above) into a run folder.

    \b
    ftadapt train clan-norm --source gta5:data/GTA5 --target cityscapes:data/Cityscapes \\
        --init DeepLab_resnet_pretrained_init-f81d91e8.pth --out runs/clan-norm [--set preset=paper-code]
    SIGINT/SIGTERM stop after the current step with a checkpoint; --resume continues bit-for-bit. A run folder is
    never replaced: a new run needs a new (or empty) --out. --plan shows the schedule first, training nothing.
    """
    from ftadapt.training import resolve_config
    from ftadapt.training import train as run_training
    from ftadapt.training.prepare import run_inputs

    if plan_steps is not None and not show_plan:
        raise click.UsageError("--plan-steps chooses the steps --plan shows: add --plan")
    if out is None and (resume or not show_plan):
        raise click.UsageError("Missing option '--out': the run folder to train into (or continue, with --resume)")
    if source is None and not (resume or show_plan):
        raise click.UsageError("Missing option '--source': the labelled source, e.g. --source gta5:data/GTA5")
    overrides = config_overrides(config_file, sets, method=method, model=model, steps=steps,
                                 device=explicit("device", device),
                                 **{"data.source": source, "data.target": target,
                                    "init": str(init) if init is not None else None})
    cfg = resolve_config(overrides, out=out or Path(), resume=resume)
    if show_plan:
        from ftadapt.layout import is_run_folder

        if resume and not is_run_folder(out):
            raise click.UsageError(f"--resume --plan: {out} holds no run to plan the rest of; drop --resume to plan "
                                   "a new run")
        _print_plan(cfg, plan_steps, json_out, overwrite)
        return
    check_json(json_out, overwrite, run_inputs(cfg, resume=resume), beside=[("--out", out)])
    width, height = cfg.data.source_size
    oracle = cfg.method == "source-only" and cfg.data.source.startswith("cityscapes:")
    if oracle and not resume and width != 2 * height:
        click.echo(f"note: data.source_size={width}x{height} stretches Cityscapes' 2:1 frames; the oracle is usually "
                   "trained at the protocol size: --set data.source_size=1024x512", err=True)
    if not resume and "data.num_workers" not in overrides:
        from ftadapt.machine import cpu_cores

        click.echo(f"note: data.num_workers={cfg.data.num_workers} loader process(es) per domain, sized to the "
                   f"{cpu_cores()} CPU core(s) this process may use (--set data.num_workers=N to choose)", err=True)
    result = run_training(cfg, out=out, resume=resume)
    summary = {"run_dir": str(result.run_dir), "method": cfg.method, "model": cfg.model, "step": result.step,
               "steps": cfg.steps, "checkpoint": str(result.checkpoint) if result.checkpoint else None,
               "stopped_by": result.stopped_by, "oracle": result.oracle}
    for key, value in summary.items():
        echo(f"{key:>12}  {value}", json_out)
    emit(summary, json_out, overwrite=overwrite)
    if result.stopped_by:
        sys.exit(128 + signal.Signals[result.stopped_by].value)


def _print_plan(cfg, plan_steps: str | None, json_out: str | None, overwrite: bool) -> None:
    """``train --plan``: the resolved config and the schedule, printed and (``--json``) written; nothing else."""
    from ftadapt.training.plan import horizons, parse_plan_steps, plan, plan_table

    check_json(json_out, overwrite, [])
    result = plan(cfg, parse_plan_steps(plan_steps, cfg.steps) if plan_steps is not None else None)
    for key, value in result["config"].items():
        echo(f"{key} = {value!r}", json_out)
    echo("", json_out)
    echo(horizons(cfg), json_out)
    for line in plan_table(result):
        echo(line, json_out)
    emit(result, json_out, overwrite=overwrite)


@click.command("convert")
@click.option("--from", "kind", type=click.Choice(CONVERT_KINDS), required=True,
              help="Which released file SRC is: deeplab-init (DeepLab_resnet_pretrained_init), adaptsegnet, clan, "
                   "maxsquare, feature-to-adapt.")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Checkpoint folder to write (model.pt, config.json, meta.json); never inside a run's checkpoints.")
@click.option("--aspp", type=click.Choice(["full", "reduced"]), default=None,
              help="Override the family's ASPP forward (AdaptSegNet/MaxSquare: reduced = branches 6+12 only; "
                   "CLAN/FTA: full).")
@json_option("the summary")
@overwrite_option("an earlier checkpoint folder at --out (nothing else) and the JSON file")
def convert(kind: str, src: Path, out: Path, aspp: str | None, json_out: str | None, overwrite: bool) -> None:
    """Import an officially released .pth (read with weights_only=True) into a checkpoint folder."""
    from ftadapt.models.convert import convert_checkpoint

    check_json(json_out, overwrite, [src], beside=[("--out", out)])
    summary = convert_checkpoint(src, kind, out, aspp=aspp, overwrite=overwrite)
    for key, value in summary.items():
        echo(f"{key:>14}  {value}", json_out)
    emit(summary, json_out, overwrite=overwrite)
