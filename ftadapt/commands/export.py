"""``ftadapt export`` and ``ftadapt inspect``: checkpoints fused into one ONNX graph, and what such a file holds."""
from __future__ import annotations

from pathlib import Path

import click

from ftadapt.commands.common import SizeType, check_json, echo, emit, fusion_option, json_option, overwrite_option


@click.command("export")
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--ensemble", "members", multiple=True, metavar="DIR:WEIGHT",
              help="Ensemble member: checkpoint (or run) folder and weight, repeatable; weights are normalised.")
@click.option("--out", required=True, type=click.Path(dir_okay=True, path_type=Path), help="The .onnx file to write.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16: BN folded in FP32, members in half, softmax/fusion/argmax in FP32.")
@click.option("--working-size", type=SizeType(minimum=8), default="1024x512", show_default=True,
              help="Resolution W×H the members run at (frames of any size are resized to it inside the graph).")
@fusion_option
@click.option("--flip", is_flag=True,
              help="Members also run on the mirrored frame (one batch); each contributes its flip-averaged softmax "
                   "(the evaluation of the paper's starred rows; needs --fusion probs).")
@click.option("--probs", "with_probs", is_flag=True, help="Also output the fused probabilities (N×C×H×W float32).")
@click.option("--no-verify", is_flag=True, help="Skip the checker + ONNX Runtime parity verification.")
@click.option("--verify-frames", type=click.IntRange(min=1), default=2, show_default=True,
              help="Synthetic frames per verification size (two sizes).")
@click.option("--opset", type=click.IntRange(18, 25), default=20, show_default=True,  # = onnx_export.OPSETS
              help="ONNX opset of the graph, 18 to 25: the exporter writes opset 18 and converts it up to 25 at most.")
@json_option()
@overwrite_option("the .onnx file (and its .data file) and the JSON file")
def export(checkpoint: Path | None, members: tuple[str, ...], out: Path, precision: str,
           working_size: tuple[int, int], fusion: str, flip: bool, with_probs: bool, no_verify: bool,
           verify_frames: int, opset: int, json_out: str | None, overwrite: bool) -> None:
    """Fuse checkpoints into one ONNX graph: uint8 RGB frames in, int32 label maps out.

    \b
    ftadapt export runs/clan-norm --out clan-norm.onnx
    ftadapt export --ensemble runs/norm-only:0.7 --ensemble converted/clan:0.3 --out ens.onnx --precision fp16
    ftadapt export --ensemble runs/norm-only:0.7 --ensemble converted/clan:0.3 --flip --out ens-flip.onnx
    Verification (default) compares ONNX Runtime (CPU) with the PyTorch module; a failure marks the file and exits 1.
    """
    from ftadapt.ensemble import MemberSpec, load_ensemble
    from ftadapt.export.onnx_export import VerificationError, export_onnx
    from ftadapt.machine import check_memory
    from ftadapt.run_folder import resolve_checkpoint

    if (checkpoint is None) == (not members):
        raise click.UsageError("give either one checkpoint folder (ftadapt export DIR --out F) or --ensemble "
                               "DIR:WEIGHT (repeatable), not both")
    specs = [MemberSpec(checkpoint)] if checkpoint else [MemberSpec.parse(m) for m in members]
    check_memory({"--working-size": working_size}, batch=len(specs) * (2 if flip else 1))  # every member's scores
    check_json(json_out, overwrite, [p for s in specs for p in (s.path, resolve_checkpoint(s.path))],
               beside=[("--out", out), ("--out's data file", out.with_name(out.name + ".data"))])
    ensemble = load_ensemble(specs, fusion=fusion, flip=flip)
    try:
        result = export_onnx(ensemble, out, precision=precision, working_size=working_size, with_probs=with_probs,
                             verify=not no_verify, frames_per_size=verify_frames, opset=opset, overwrite=overwrite)
    except VerificationError as exc:
        emit(exc.result.to_dict(), json_out, overwrite=overwrite)
        raise
    w, h = working_size
    echo(f"wrote {', '.join(map(str, result.files))} ({result.size_bytes / 2**20:.1f} MiB, {precision}, working size "
         f"{w}x{h}, exported in {result.export_seconds:.1f} s)", json_out)
    echo(f"  fusion: {ensemble.describe_mode()}", json_out)
    for m in result.info.members:
        echo(f"  {m.weight:.4f}  {m.name}  ({m.method}, heads {m.head_rule})", json_out)
    echo(result.verification.summary() if result.verification else "verification skipped (--no-verify)", json_out)
    emit(result.to_dict(), json_out, overwrite=overwrite)


@click.command("inspect")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option("the description")
@overwrite_option()
def inspect(model: Path, json_out: str | None, overwrite: bool) -> None:
    """Show an exported ONNX file: metadata, members, inputs/outputs, opset, size and precision."""
    from ftadapt.export.metadata import describe, format_description

    check_json(json_out, overwrite, [model])
    desc = describe(model)
    echo(format_description(desc), json_out)
    emit(desc, json_out, overwrite=overwrite)
