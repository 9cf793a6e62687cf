"""The ``ftadapt`` command line: a click group; each command parses, calls one library function, prints.

Heavy imports (torch, onnx, …) happen inside the commands so ``ftadapt --help`` stays fast. Project errors are
printed without a traceback: exit 1 for failures, 2 for usage errors.
"""
from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import click

from ftadapt import __version__
from ftadapt.config import COMPILE_MODES, METHODS as TRAIN_METHODS  # torch-free
from ftadapt.errors import FtadaptError


def emit_json(payload: dict, path: str | None) -> None:
    """Write ``payload`` as JSON to ``path`` atomically ('-' = stdout); nothing when ``path`` is None."""
    if path is None:
        return
    text = json.dumps(payload, indent=2, sort_keys=False, allow_nan=False) + "\n"
    if path == "-":
        click.echo(text, nl=False)
        return
    from ftadapt.fsutil import write_text_atomic

    write_text_atomic(path, text)
    click.echo(f"wrote {path}", err=True)


def parse_dataset_spec(spec: str) -> tuple[str, Path]:
    """Parse ``kind:ROOT`` (e.g. ``gta5:/data/GTA5``) into (kind, root)."""
    kind, sep, root = spec.partition(":")
    if not sep or not root or kind not in ("gta5", "cityscapes", "synthia"):
        raise click.BadParameter(f"{spec!r}: expected KIND:ROOT with KIND one of gta5, cityscapes, synthia "
                                 "(e.g. cityscapes:/data/Cityscapes)")
    return kind, Path(root)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ftadapt")
def cli() -> None:
    """ftadapt: train domain-adaptive segmentation (Feature To Adapt), fuse into ONNX, deploy with TensorRT FP16."""


# ----------------------------------------------------------------------------------------------------------------
# demo
@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="ftadapt-demo", show_default=True,
              help="Folder for the synthetic data and every artefact the demo produces.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out_dir: str, seed: int) -> None:
    """Run every stage on built-in synthetic data, on the CPU."""
    from ftadapt.demo import run_demo

    run_demo(Path(out_dir), seed=seed)


# ----------------------------------------------------------------------------------------------------------------
# data
@cli.group()
def data() -> None:
    """Synthetic data and the dataset doctor."""


class _SizeParam(click.ParamType):
    """A ``WIDTHxHEIGHT`` option value such as ``320x180``, parsed to (W, H)."""

    name = "WxH"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        w, sep, h = str(value).lower().partition("x")
        if not (sep and w.strip().isdigit() and h.strip().isdigit()):
            self.fail(f"{value!r} is not WIDTHxHEIGHT in pixels, e.g. 320x180", param, ctx)
        return int(w), int(h)


@data.command("synth")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write (absent or empty): OUT/gta5 (GTA5 layout) and OUT/cityscapes (Cityscapes layout).")
@click.option("--n-source", type=click.IntRange(1), default=64, show_default=True, help="Source (GTA5-layout) images.")
@click.option("--n-train", type=click.IntRange(1), default=32, show_default=True, help="Target train images.")
@click.option("--n-val", type=click.IntRange(1), default=16, show_default=True, help="Target val images.")
@click.option("--source-size", type=_SizeParam(), default="320x180", show_default=True, help="Source image size.")
@click.option("--target-size", type=_SizeParam(), default="256x128", show_default=True, help="Target image size.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same dataset.")
@click.option("--overwrite", is_flag=True, help="Replace a synthetic dataset already written to OUT.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the summary as JSON to this file ('-' = stdout).")
def data_synth(out_dir: Path, n_source: int, n_train: int, n_val: int, source_size: tuple[int, int],
               target_size: tuple[int, int], seed: int, overwrite: bool, json_out: str | None) -> None:
    """Write the synthetic two-domain street-scene dataset (rendered source → photographed target)."""
    import time

    from ftadapt.data.synthetic import write_synthetic

    start = time.perf_counter()
    layout = write_synthetic(out_dir, n_source=n_source, n_target_train=n_train, n_target_val=n_val,
                             source_size=source_size, target_size=target_size, seed=seed, overwrite=overwrite,
                             progress=True)
    seconds = time.perf_counter() - start
    rows = [("source", "train", layout.n_source, layout.source_size, layout.gta5_root),
            ("target", "train", layout.n_target_train, layout.target_size, layout.cityscapes_root),
            ("target", "val", layout.n_target_val, layout.target_size, layout.cityscapes_root)]
    out = click.echo if json_out != "-" else (lambda text: click.echo(text, err=True))
    out(f"{'domain':<8}{'split':<7}{'images':>7}  {'size':<9} root")
    for domain, split, n, (w, h), root in rows:
        out(f"{domain:<8}{split:<7}{n:>7}  {f'{w}x{h}':<9} {root}")
    out(f"wrote {sum(r[2] for r in rows)} images with labels in {seconds:.1f} s (seed {seed})")
    emit_json({"root": str(layout.root), "gta5_root": str(layout.gta5_root),
               "cityscapes_root": str(layout.cityscapes_root), "seed": seed, "seconds": round(seconds, 3),
               "splits": [{"domain": d, "split": s, "images": n, "size": list(size), "root": str(r)}
                          for d, s, n, size, r in rows]}, json_out)


@data.command("check")
@click.option("--dataset", "kind", type=click.Choice(["gta5", "cityscapes", "synthia"]), required=True,
              help="Which layout ROOT holds.")
@click.option("--root", type=click.Path(path_type=Path), required=True,
              help="Dataset root: GTA5 images/+labels/, Cityscapes leftImg8bit/+gtFine/, SYNTHIA RGB/+GT/LABELS/.")
@click.option("--split", "splits", type=click.Choice(["train", "val"]), multiple=True,
              help="Cityscapes split to check (repeatable); default: train and val.")
@click.option("--list-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Check only the images this list file names (one split).")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Decoding threads.")
@click.option("--max-problems", type=click.IntRange(0), default=20, show_default=True,
              help="How many problems to list per split (all are counted).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the report as JSON to this file ('-' = stdout).")
def data_check(kind: str, root: Path, splits: tuple[str, ...], list_file: Path | None, workers: int,
               max_problems: int, json_out: str | None) -> None:
    """Check a GTA5 / Cityscapes / SYNTHIA folder (the dataset doctor).

    Counts image/label pairs, finds missing, corrupt and size-mismatched files and label values outside the known
    ids, and prints the trainId pixel histogram. Exits 1 when the dataset is not usable."""
    from ftadapt.data.check import check_dataset, format_report
    from ftadapt.errors import DatasetError

    report = check_dataset(kind, root, splits=list(splits) or None, list_file=list_file, workers=workers,
                           max_problems=max_problems)
    click.echo(format_report(report), err=json_out == "-")  # keep stdout pure JSON with --json -
    emit_json(report.to_dict(), json_out)
    if not report.usable:
        errors = sum(s.n_errors for s in report.splits)
        raise DatasetError(f"{kind} at {root} is not usable: {errors} errors (listed above); fix them and rerun "
                           "`ftadapt data check`")


# ----------------------------------------------------------------------------------------------------------------
# convert
@cli.command("convert")
@click.option("--from", "kind", type=click.Choice(["deeplab-init", "adaptsegnet", "clan", "maxsquare",
                                                   "feature-to-adapt"]), required=True,
              help="Which released file SRC is: deeplab-init (DeepLab_resnet_pretrained_init), adaptsegnet, clan, "
                   "maxsquare, feature-to-adapt.")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Checkpoint folder to write (model.pt, config.json, meta.json).")
@click.option("--aspp", type=click.Choice(["full", "reduced"]), default=None,
              help="Override the family's ASPP forward (AdaptSegNet/MaxSquare: reduced = branches 6+12 only; "
                   "CLAN/FTA: full).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the summary as JSON to this file ('-' = stdout).")
def convert(kind: str, src: Path, out: Path, aspp: str | None, json_out: str | None) -> None:
    """Import an officially released .pth (read with weights_only=True) into a checkpoint folder."""
    from ftadapt.models.convert import convert_checkpoint

    summary = convert_checkpoint(src, kind, out, aspp=aspp)
    for key, value in summary.items():
        click.echo(f"{key:>14}  {value}")
    emit_json(summary, json_out)


# ----------------------------------------------------------------------------------------------------------------
# eval
# The eval modes: exactly one per call. Each names its required and optional options (click parameter names) and
# a usage line; a new mode (checkpoints, ensembles) adds a row here and its options below.
_EVAL_MODES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "prediction PNGs": (("pred_dir", "gt_dir"), (), "--pred-dir DIR --gt-dir CITYSCAPES/gtFine/val"),
    "an ensemble": (("ensemble", "data"), (), "--ensemble DIR:WEIGHT --ensemble DIR:WEIGHT ... --data cityscapes:ROOT"),
    "a checkpoint": (("checkpoint", "data"), ("split", "heads", "flip", "save_pred", "protocol", "size", "device"),
                     "--checkpoint DIR --data cityscapes:ROOT"),
}


def _flag(param: str) -> str:
    return "--" + param.replace("_", "-")


def _eval_mode(params: dict) -> str:
    """The one eval mode whose options were given; a click usage error when none, several or an incomplete one."""
    given = {mode: [p for p in req + opt if params.get(p) not in (None, False, ())]
             for mode, (req, opt, _) in _EVAL_MODES.items()}
    uses = collections.Counter(p for req, opt, _ in _EVAL_MODES.values() for p in req + opt)
    chosen = [mode for mode, opts in given.items() if any(uses[p] == 1 for p in opts)]  # shared options don't select
    forms = "; or ".join(usage for _, _, usage in _EVAL_MODES.values())
    if not chosen:
        raise click.UsageError(f"say what to evaluate: {forms}")
    if len(chosen) > 1:
        clash = " and ".join(_flag(given[mode][0]) for mode in chosen)
        raise click.UsageError(f"{clash} select different eval modes; give the options of one: {forms}")
    mode = chosen[0]
    absent = [_flag(p) for p in _EVAL_MODES[mode][0] if p not in given[mode]]
    if absent:
        raise click.UsageError(f"evaluating {mode} also needs {' '.join(absent)} (usage: {_EVAL_MODES[mode][2]})")
    return mode


@cli.command("eval")
@click.option("--pred-dir", type=click.Path(exists=True, file_okay=False),
              help="[prediction PNGs] Folder of trainId PNGs named by Cityscapes frame id (*_color.png ignored).")
@click.option("--gt-dir", type=click.Path(exists=True, file_okay=False),
              help="[prediction PNGs] The gtFine/<split> folder of Cityscapes (<city>/<frame>_gtFine_labelIds.png).")
@click.option("--ensemble", multiple=True, metavar="DIR:WEIGHT",
              help="[an ensemble] Member checkpoint (or run) folder and weight, repeatable; members and the ensemble "
                   "are evaluated and printed side by side.")
@click.option("--data", default=None, metavar="cityscapes:ROOT",
              help="[an ensemble, a checkpoint] The Cityscapes root whose val split is evaluated.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="[a checkpoint] Checkpoint folder (or run folder: its newest checkpoint) to evaluate.")
@click.option("--split", default=None, help="[a checkpoint] Cityscapes split [val].")
@click.option("--heads", type=click.Choice(["sum", "main"]), default=None,
              help="[a checkpoint] Head rule: sum of both heads (CLAN) or the main head (multi) [the model's own].")
@click.option("--flip", is_flag=True, help="[a checkpoint] Horizontal-flip TTA (mean of the two softmaxes).")
@click.option("--protocol", type=click.Choice(["adaptsegnet", "maxsquare"]), default=None,
              help="[a checkpoint] adaptsegnet: upsample to the full-resolution GT (default, the papers' tables); "
                   "maxsquare: GT downsampled to the input size (MaxSquare's variant, higher, labelled).")
@click.option("--size", type=_SizeParam(), default=None, help="[a checkpoint] Input size W×H [1024x512].")
@click.option("--save-pred", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="[a checkpoint] Also write <frame>.png (trainIds) and <frame>_color.png here.")
@click.option("--device", default=None, help="[a checkpoint] auto (default), cpu, cuda or cuda:N.")
@click.option("--allow-missing", is_flag=True,
              help="Evaluate the matched frames when some are missing or differ in size (listed) instead of failing.")
@click.option("--synthia", "synthia_subsets", is_flag=True,
              help="Also report mIoU16 and mIoU13 (SYNTHIA → Cityscapes).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decode threads [default: CPU cores].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Write the result as JSON to this file ('-' = stdout; the table then goes to stderr).")
def eval_cmd(**params) -> None:
    """mIoU on the AdaptSegNet protocol (one confusion matrix over the set, full-resolution ground truth).

    \b
    ftadapt eval --pred-dir preds/ --gt-dir Cityscapes/gtFine/val [--json result.json]
    ftadapt eval --ensemble runs/norm-only:0.7 --ensemble converted/clan:0.3 --data cityscapes:data/Cityscapes
    ftadapt eval --checkpoint runs/clan-norm --data cityscapes:data/Cityscapes [--flip] [--protocol maxsquare]
    """
    from ftadapt.evaluate import format_table
    from ftadapt.evaluate_dir import evaluate_pred_dir, problem_report

    mode = _eval_mode(params)
    if mode == "an ensemble":
        _eval_ensemble(params)
        return
    if mode == "a checkpoint":
        _eval_checkpoint(params)
        return
    result = evaluate_pred_dir(params["pred_dir"], params["gt_dir"], allow_missing=params["allow_missing"],
                               workers=params["workers"], synthia_subsets=params["synthia_subsets"])
    for line in problem_report(result.missing):
        click.echo(f"warning: {line} (skipped)", err=True)
    click.echo(format_table(result), err=params["json_out"] == "-")
    emit_json(result.to_dict(), params["json_out"])


def _eval_ensemble(params: dict) -> None:
    """``eval --ensemble``: every member and the fused ensemble on the AdaptSegNet protocol, side by side."""
    from ftadapt.export.ensemble import load_ensemble
    from ftadapt.export.ensemble_eval import ensemble_results_dict, evaluate_ensemble, format_ensemble_results

    kind, root = parse_dataset_spec(params["data"])
    if kind != "cityscapes":
        raise click.BadParameter(f"{params['data']!r}: ensembles are evaluated on Cityscapes (cityscapes:ROOT)")
    if params.get("flip"):
        raise click.UsageError("--flip averages softmaxes of logits; the ensemble's output is already fused "
                               "probabilities, so flip-TTA of an ensemble is not supported")
    results = evaluate_ensemble(load_ensemble(list(params["ensemble"])), root, num_workers=params["workers"] or 2)
    for result in results.values():
        result.synthia_subsets = params["synthia_subsets"]
    click.echo(format_ensemble_results(results), err=params["json_out"] == "-")
    emit_json(ensemble_results_dict(results), params["json_out"])


def _eval_checkpoint(params: dict) -> None:
    """``eval --checkpoint``: one checkpoint on a Cityscapes split under a labelled protocol."""
    from ftadapt.evaluate import format_table
    from ftadapt.evaluate_checkpoint import evaluate_checkpoint
    from ftadapt.protocol import CITYSCAPES_SIZE

    kind, root = parse_dataset_spec(params["data"])
    if kind != "cityscapes":
        raise click.BadParameter(f"{params['data']!r}: checkpoints are evaluated on Cityscapes (cityscapes:ROOT)",
                                 param_hint="--data")
    result = evaluate_checkpoint(params["checkpoint"], root, split=params["split"] or "val", heads=params["heads"],
                                 flip=params["flip"], protocol=params["protocol"] or "adaptsegnet",
                                 size=params["size"] or CITYSCAPES_SIZE, save_pred=params["save_pred"],
                                 device=params["device"] or "auto", num_workers=params["workers"] or 2)
    result.synthia_subsets = params["synthia_subsets"]
    click.echo(format_table(result), err=params["json_out"] == "-")
    emit_json(result.to_dict(), params["json_out"])


# ----------------------------------------------------------------------------------------------------------------
# train
@cli.command("train")
@click.argument("method", type=click.Choice(TRAIN_METHODS))
@click.option("--source", required=True, help="Labelled source KIND:ROOT, KIND gta5 or synthia.")
@click.option("--target", default=None, help="Unlabelled target cityscapes:ROOT (its train split; every method but "
                                             "source-only needs it).")
@click.option("--model", default=None, help="Registered model: deeplabv2-r101 (default; maxsquare*: "
                                            "deeplabv2-r101-multi-reduced), deeplabv2-r50, tiny.")
@click.option("--init", type=click.Path(path_type=Path), default=None,
              help="Initial weights: a checkpoint folder or an official .pth (e.g. the DeepLab ImageNet init).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Number of steps (poly horizon) [100000].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON or TOML file of config keys (a run's config.json works).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Config key, repeatable: e.g. --set preset=paper-code --set loss.lambda_norm=2e-4 --set amp=bf16 "
                   "(every key is in a run's config.json).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Write the outcome as JSON to this file ('-' = stdout).")
def train_cmd(method: str, source: str, target: str | None, model: str | None, init: Path | None, steps: int | None,
              config_file: Path | None, sets: tuple[str, ...], out: Path, resume: bool, json_out: str | None) -> None:
    """Train METHOD (source-only, norm-only, clan, clan-norm, maxsquare, maxsquare-norm) into a run folder.

    \b
    ftadapt train clan-norm --source gta5:data/GTA5 --target cityscapes:data/Cityscapes \\
        --init DeepLab_resnet_pretrained_init-f81d91e8.pth --out runs/clan-norm [--set preset=paper-code]
    SIGINT/SIGTERM stop after the current step with a checkpoint; --resume continues bit-for-bit.
    """
    import signal

    from ftadapt.config import parse_set, read_config_file
    from ftadapt.train import resolve_config, train

    overrides = read_config_file(config_file) if config_file else {}
    overrides.update(parse_set(sets))
    overrides["method"] = method
    overrides.update({k: v for k, v in (("model", model), ("steps", steps)) if v is not None})
    cfg = resolve_config(overrides, out=out, resume=resume)
    result = train(cfg, source=parse_dataset_spec(source), target=parse_dataset_spec(target) if target else None,
                   out=out, init=init, resume=resume)
    summary = {"run_dir": str(result.run_dir), "method": cfg.method, "model": cfg.model, "step": result.step,
               "steps": cfg.steps, "checkpoint": str(result.checkpoint) if result.checkpoint else None,
               "stopped_by": result.stopped_by, "oracle": result.oracle}
    for key, value in summary.items():
        click.echo(f"{key:>12}  {value}", err=json_out == "-")
    emit_json(summary, json_out)
    if result.stopped_by:
        sys.exit(128 + signal.Signals[result.stopped_by].value)


# ----------------------------------------------------------------------------------------------------------------
# export, inspect
@cli.command("export")
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--ensemble", "members", multiple=True, metavar="DIR:WEIGHT",
              help="Ensemble member: checkpoint (or run) folder and weight, repeatable; weights are normalised.")
@click.option("--out", required=True, type=click.Path(dir_okay=True, path_type=Path), help="The .onnx file to write.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16: BN folded in FP32, members in half, softmax/fusion/argmax in FP32.")
@click.option("--working-size", default="1024x512", show_default=True, metavar="WxH",
              help="Resolution the members run at (frames of any size are resized to it inside the graph).")
@click.option("--probs", "with_probs", is_flag=True, help="Also output the fused probabilities (N×C×H×W float32).")
@click.option("--no-verify", is_flag=True, help="Skip the checker + ONNX Runtime parity verification.")
@click.option("--verify-frames", type=click.IntRange(min=1), default=2, show_default=True,
              help="Synthetic frames per verification size (two sizes).")
@click.option("--opset", type=click.IntRange(min=18), default=20, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Write the result as JSON to this file ('-' = stdout).")
def export_cmd(checkpoint: Path | None, members: tuple[str, ...], out: Path, precision: str, working_size: str,
               with_probs: bool, no_verify: bool, verify_frames: int, opset: int, json_out: str | None) -> None:
    """Fuse checkpoints into one ONNX graph: uint8 RGB frames in, int32 label maps out.

    \b
    ftadapt export runs/clan-norm --out clan-norm.onnx
    ftadapt export --ensemble runs/norm-only:0.7 --ensemble converted/clan:0.3 --out ens.onnx --precision fp16
    Verification (default) compares ONNX Runtime (CPU) with the PyTorch module; a failure marks the file and exits 1.
    """
    from ftadapt.export.ensemble import load_ensemble
    from ftadapt.export.graph import parse_size
    from ftadapt.export.onnx_export import VerificationError, export_onnx

    if (checkpoint is None) == (not members):
        raise click.UsageError("give either one checkpoint folder (ftadapt export DIR --out F) or --ensemble "
                               "DIR:WEIGHT (repeatable), not both")
    size = parse_size(working_size)
    ensemble = load_ensemble([str(checkpoint)] if checkpoint else list(members))
    err = json_out == "-"
    try:
        result = export_onnx(ensemble, out, precision=precision, working_size=size, with_probs=with_probs,
                             verify=not no_verify, frames_per_size=verify_frames, opset=opset)
    except VerificationError as exc:
        emit_json(exc.result.to_dict(), json_out)
        raise
    size_mib = result.size_bytes / 2**20
    click.echo(f"wrote {', '.join(map(str, result.files))} ({size_mib:.1f} MiB, {precision}, working size "
               f"{size[0]}x{size[1]}, exported in {result.export_seconds:.1f} s)", err=err)
    for m in result.info.members:
        click.echo(f"  {m.weight:.4f}  {m.name}  ({m.method}, heads {m.head_rule})", err=err)
    click.echo(result.verification.summary() if result.verification else "verification skipped (--no-verify)",
               err=err)
    emit_json(result.to_dict(), json_out)


@cli.command("inspect")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Write the description as JSON to this file ('-' = stdout).")
def inspect_cmd(model: Path, json_out: str | None) -> None:
    """Show an exported ONNX file: metadata, members, inputs/outputs, opset, size and precision."""
    from ftadapt.export.metadata import describe, format_description

    desc = describe(model)
    click.echo(format_description(desc), err=json_out == "-")
    emit_json(desc, json_out)


# ----------------------------------------------------------------------------------------------------------------
# runtime: build-engine, predict
def _parse_hw(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """``"1024x2048"`` → (1024, 2048): height × width, the order of a numpy frame's shape."""
    if value is None:
        return None
    h, sep, w = value.lower().partition("x")
    if not (sep and h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
        raise click.BadParameter(f"{value!r}: expected HxW (height x width), e.g. 1024x2048")
    return int(h), int(w)


def _parse_device(ctx: click.Context, param: click.Parameter, value: str) -> int | str:
    if value == "cpu":
        return value
    if value.isdigit():
        return int(value)
    raise click.BadParameter(f"{value!r}: expected a CUDA device index (0, 1, …) or 'cpu'")


_HW_HELP = "height x width, e.g. 1024x2048 (note: H first, like a frame's shape)"


@cli.command("build-engine")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Engine cache folder [$FTADAPT_ENGINE_CACHE or ~/.cache/ftadapt/engines].")
@click.option("--max-batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Largest batch per engine call.")
@click.option("--max-size", callback=_parse_hw, metavar="HxW", default=None,
              help=f"Largest frame, {_HW_HELP} [1024x2048].")
@click.option("--min-size", callback=_parse_hw, metavar="HxW", default=None,
              help="Smallest frame [1x1]; equal to --max-size with --max-batch 1 builds a static engine.")
@click.option("--device", type=click.IntRange(min=0), default=0, show_default=True, help="CUDA device index.")
@click.option("--workspace-mb", type=click.IntRange(min=64), default=None, help="Builder workspace limit [4096].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Write the engine report as JSON to this file ('-' = stdout).")
def build_engine_cmd(model: Path, cache: Path | None, max_batch: int, max_size: tuple[int, int] | None,
                     min_size: tuple[int, int] | None, device: int, workspace_mb: int | None,
                     json_out: str | None) -> None:
    """Build the TensorRT engine of an exported MODEL for this GPU into the engine cache (or find it there).

    \b
    ftadapt build-engine ens.onnx --max-size 1024x2048 --min-size 1024x2048   # static: one camera resolution
    Needs the `trt` extra (TensorRT ≥ 10.12, pycuda) and an NVIDIA GPU. The Segmenter then loads the cached engine
    when created with the same --max-batch/--max-size/--min-size.
    """
    from ftadapt.runtime import Segmenter

    with Segmenter(model, backend="tensorrt", device=device, engine_cache=cache, max_batch=max_batch,
                   max_size=max_size, min_size=min_size, workspace_mb=workspace_mb) as seg:
        info = seg.describe()
    engine = info["engine"]
    rows = {"engine": engine["path"], "built": f"yes, in {engine['build_seconds']} s" if engine["built"] else
            "no (found in the cache)", "half layers": f"{engine['half_layers']} of {engine['layers']}",
            "precision": info["precision"], "tensorrt": info["tensorrt"],
            "gpu": f"{info['gpu']} (sm {info['compute_capability']})",
            "profile": f"batch ≤ {info['max_batch']}, {info['min_size']} … {info['max_size']} (H, W)"}
    for key, value in rows.items():
        click.echo(f"{key:>12}  {value}", err=json_out == "-")
    for note in info["notes"]:
        click.echo(f"note: {note}", err=True)
    emit_json(info, json_out)


@cli.command("predict")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .onnx file written by `ftadapt export`.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for <name>.png label maps (class ids) and <name>_color.png overlays.")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto",
              show_default=True, help="auto: TensorRT if usable, else ONNX Runtime CUDA, else CPU.")
@click.option("--device", callback=_parse_device, default="0", show_default=True,
              help="CUDA device index, or 'cpu'.")
@click.option("--engine-cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="TensorRT engine cache folder.")
@click.option("--max-size", callback=_parse_hw, metavar="HxW", default=None,
              help=f"Largest frame, {_HW_HELP} [TensorRT: 1024x2048].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Opacity of the colours in the overlays.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Videos: segment every N-th frame.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Write the summary as JSON to this file ('-' = stdout).")
def predict_cmd(model: Path, inputs: tuple[Path, ...], out: Path, backend: str, device: int | str,
                engine_cache: Path | None, max_size: tuple[int, int] | None, threads: int | None, alpha: float,
                every: int, json_out: str | None) -> None:
    """Segment images, folders of images or videos (OpenCV) with an exported model.

    \b
    ftadapt predict --model ens.onnx frames/ drive.mp4 --out preds/ [--backend onnxruntime --device cpu]
    """
    from ftadapt.runtime import Segmenter
    from ftadapt.runtime.predict import collect_sources, predict_files

    err = json_out == "-"
    sources = collect_sources(inputs)  # bad inputs fail before an engine is built
    with Segmenter(model, backend=backend, device=device, engine_cache=engine_cache, max_size=max_size,
                   threads=threads) as seg:
        click.echo(f"backend {seg.backend} ({', '.join(seg.providers)})", err=True)
        for note in seg.notes:
            click.echo(f"note: {note}", err=True)
        summary = predict_files(seg, sources, out, alpha=alpha, every=every)
        summary.update(backend=seg.backend, providers=list(seg.providers))
    click.echo(f"{summary['frames']} frames in {summary['seconds']} s ({summary['fps']} frames/s end to end, "
               f"{summary['model_ms_mean']} ms per frame in the model) → {out}", err=err)
    emit_json(summary, json_out)



# ----------------------------------------------------------------------------------------------------------------
# bench: benchmarks that print figures (other benchmarks attach their commands to this group)
@cli.group("bench")
def bench() -> None:
    """Benchmarks that print figures as JSON."""


@bench.command("train-step")
@click.option("--method", type=click.Choice(TRAIN_METHODS), default="clan-norm", show_default=True)
@click.option("--model", default="tiny", show_default=True, help="Registered model, e.g. tiny, deeplabv2-r101.")
@click.option("--source-size", type=_SizeParam(), default="160x96", show_default=True,
              help="Source batch size W×H (the paper: 1280x720).")
@click.option("--target-size", type=_SizeParam(), default="128x64", show_default=True,
              help="Target batch size W×H (the paper: 1024x512).")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True, help="Timed steps.")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Untimed steps first (cuDNN autotuning, allocator growth).")
@click.option("--amp", type=click.Choice(["off", "bf16"]), default="off", show_default=True)
@click.option("--channels-last", is_flag=True, help="channels_last memory format for G and D.")
@click.option("--compile", "compile_mode", type=click.Choice(COMPILE_MODES), default="off", show_default=True,
              help="torch.compile G, one graph per input shape; reduce-overhead replays CUDA graphs (compilation "
                   "is in the warm-up).")
@click.option("--cuda-graphs", is_flag=True,
              help="Replay G's forward + backward as CUDA graphs, one pair per input shape (capture in the warm-up).")
@click.option("--channel-multiple", type=click.IntRange(min=0), default=0, show_default=True,
              help="Run the convs with 3/19/1 channels (stem, heads, D) zero-padded to multiples of this (0: off).")
@click.option("--space-to-batch", is_flag=True,
              help="Run the dilated backbone convs as ordinary convs over their sub-grids (same values).")
@click.option("--profile", type=click.IntRange(min=0), default=0, show_default=True,
              help="Profile this many more steps: device-busy share, kernel launches, kernel time by category.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--data", type=click.Choice(["memory", "synthetic"]), default="memory", show_default=True,
              help="memory: fixed batches in host memory (compute only); synthetic: a synthetic dataset through the "
                   "real loaders (reports the data-loading share).")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Loader workers per domain with --data synthetic.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op CPU threads [torch's default]; 1 avoids spin-waiting on a busy CPU.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Also write the report to this file (it is always printed to stdout).")
def bench_train_step_cmd(method: str, model: str, source_size: tuple[int, int], target_size: tuple[int, int],
                         steps: int, warmup: int, amp: str, channels_last: bool, compile_mode: str,
                         cuda_graphs: bool, channel_multiple: int, space_to_batch: bool, profile: int,
                         device: str,
                         data: str, workers: int, threads: int | None, json_out: str | None) -> None:
    """Steps/s, peak memory and data-loading share of the real training step (ftadapt.train.TrainStep).

    \b
    ftadapt bench train-step --method clan-norm --model deeplabv2-r101 --source-size 1280x720 \\
        --target-size 1024x512 --steps 20 --amp bf16 --channels-last --device cuda
    """
    from ftadapt.bench.train_step import bench_train_step, format_report

    report = bench_train_step(method=method, model=model, source_size=source_size, target_size=target_size,
                              steps=steps, warmup=warmup, amp=amp, channels_last=channels_last, device=device,
                              data=data, num_workers=workers, compile=compile_mode, cuda_graphs=cuda_graphs,
                              profile=profile,
                              channel_multiple=channel_multiple, space_to_batch=space_to_batch, threads=threads)
    click.echo(format_report(report), err=True)
    click.echo(json.dumps(report, indent=2))
    if json_out not in (None, "-"):
        emit_json(report, json_out)

def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning project errors into one clean message."""
    try:
        cli.main(args=argv, prog_name="ftadapt", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FtadaptError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
