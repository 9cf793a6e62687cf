"""Export an ensemble as one ONNX graph (``ftadapt export``): dynamo export, metadata, verification, atomic write.

The graph is :class:`~ftadapt.export.onnx_graph.SegmentationGraph` exported by ``torch.onnx.export(dynamo=True)`` with
dynamic batch, height and width. Weights are embedded in the ``.onnx`` unless they exceed ``EXTERNAL_DATA_BYTES``
(protobuf's 2 GB limit), in which case they go to ``<name>.data`` beside it. Everything is written in a temporary
folder beside the target and renamed into place at the end (data file first), so a crash leaves no half-written
artifact. ``out`` (and its data file) follow the one output rule (``ftadapt.fsutil.check_target``), checked before the
export: an existing file is replaced only with ``overwrite``; a link, a member's checkpoint folder or any checkpoint
folder never. A failed verification keeps the file, marks it (``verification.status = "failed"`` in the metadata)
and raises :class:`VerificationError`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ftadapt.artifact import ArtifactInfo
from ftadapt.ensemble import Ensemble
from ftadapt.errors import FtadaptError, UsageError
from ftadapt.export.metadata import artifact_info, write_props
from ftadapt.export.onnx_graph import build_graph
from ftadapt.export.verify import Verification, default_sizes, verification_frames, verify_onnx
from ftadapt.fsutil import check_target
from ftadapt.protocol import CITYSCAPES_SIZE
from ftadapt.runtime.onnx_file import read_model_file

DEFAULT_OPSET = 20
# The opsets torch's dynamo exporter really writes: its op library is opset 18 and onnxscript's version converter goes
# from 18 up to 25 (SUPPORTED_MIN/MAX_ONNX_OPSET); TensorRT 11.5 parses up to 25 (docs/deploy.md §3). Outside the range
# torch logs a traceback and quietly writes opset 18, while the metadata would claim the opset asked for.
# `ftadapt export --opset` takes the same range.
OPSETS = range(18, 26)
EXTERNAL_DATA_BYTES = 1536 * 2**20
MAX_DIM = 16384
FLOAT32 = 1  # onnx.TensorProto.FLOAT


class VerificationError(FtadaptError):
    """The exported graph failed verification; the file exists and is marked failed. ``result`` has the figures."""

    def __init__(self, message: str, result: ExportResult) -> None:
        super().__init__(message)
        self.result = result


@dataclasses.dataclass
class ExportResult:
    """What an export produced. ``files`` are the .onnx and, when weights are external, its data file."""

    path: Path
    files: list[Path]
    info: ArtifactInfo
    export_seconds: float
    verification: Verification | None

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "files": [str(f) for f in self.files], "size_bytes": self.size_bytes,
                "precision": self.info.precision, "working_size": list(self.info.working_size),
                "outputs": list(self.info.outputs), "opset": self.info.opset,
                "members": [dataclasses.asdict(m) for m in self.info.members],
                "export_seconds": round(self.export_seconds, 2), "verification": self.info.verification}


def _check_out(out: Path, ensemble: Ensemble, overwrite: bool) -> Path:
    """The data file an export to ``out`` may write; both pass the output rule, or nothing is done."""
    if out.is_dir() and not out.is_symlink():
        raise UsageError(f"--out {out} is a folder; give a file name such as {out / 'model.onnx'}")
    if out.parent.exists() and not out.parent.is_dir():
        raise UsageError(f"--out {out}: {out.parent} is a file, not a folder")
    data = out.with_name(out.name + ".data")
    for target in (out, data):
        check_target(target, overwrite=overwrite, inputs=[info.path for info in ensemble.infos], what="--out")
    return data


def _torch_export(graph: torch.nn.Module, destination: Path, info: ArtifactInfo, *, external: bool) -> None:
    """``torch.onnx.export`` (dynamo) with dynamic N, H, W and ``info`` as metadata; the exporter's chatter is
    swallowed."""
    dim = torch.export.Dim
    shapes = {"image": {0: dim("batch", min=1, max=1024), 1: dim("height", min=8, max=MAX_DIM),
                        2: dim("width", min=8, max=MAX_DIM)}}
    # Batch 2 and odd sizes: torch.export specialises dimensions of size 0 or 1 and must not tie H or W to a constant.
    example = torch.zeros(2, 67, 131, 3, dtype=torch.uint8)
    outputs = ["labels", "probs"] if graph.with_probs else ["labels"]
    chatter = io.StringIO()
    with torch.no_grad(), contextlib.redirect_stdout(chatter):
        program = torch.onnx.export(graph, (example,), input_names=["image"], output_names=outputs,
                                    opset_version=info.opset, dynamo=True, dynamic_shapes=shapes, optimize=True,
                                    verify=False, verbose=False)
    cast_image_first(program.model)
    program.model.metadata_props.update(info.to_props())
    program.save(str(destination), external_data=external)


def cast_image_first(model: Any) -> None:
    """Rewire the exported graph (an ``onnx_ir`` model) so that one Cast to float32 is the only reader of ``image``.

    TensorRT accepts UINT8 only as a network input feeding a Cast directly (DESIGN.md §7; ``docs/deploy.md``). The
    module casts first, but the exporter also reads the frame's H and W with ``Shape(image)`` for the final upsample;
    every reader other than the Cast is given the Cast's output instead (same shape, so the same sizes).
    """
    image = next(v for v in model.graph.inputs if v.name == "image")
    casts = [node for node, _ in image.uses() if node.op_type == "Cast" and node.domain == ""
             and node.attributes["to"].as_int() == FLOAT32]
    if not casts:
        readers = ", ".join(sorted({node.op_type for node, _ in image.uses()})) or "nothing"
        raise FtadaptError(f"the exported graph reads 'image' with {readers} but has no Cast of it to float32; "
                           "SegmentationGraph.preprocess must cast the uint8 frame before anything else")
    for node, index in list(image.uses()):
        if node is not casts[0]:
            node.replace_input_with(index, casts[0].outputs[0])
    model.graph.sort()  # the exporter placed the Shape nodes before the Cast they now read


def export_onnx(ensemble: Ensemble, out: str | os.PathLike, *, precision: str = "fp32",
                working_size: tuple[int, int] = CITYSCAPES_SIZE, with_probs: bool = False, verify: bool = True,
                verify_sizes: list[tuple[int, int]] | None = None, frames_per_size: int = 2,
                frames: list[np.ndarray] | None = None, opset: int = DEFAULT_OPSET,
                progress: bool = True, overwrite: bool = False) -> ExportResult:
    """Export ``ensemble`` (FP32 members, e.g. from :func:`~ftadapt.ensemble.load_ensemble`) to ``out``.

    ``precision`` "fp16" exports BN-folded half members (see :mod:`ftadapt.export.fp16`). Verification compares
    ONNX Runtime with the FP32 module on ``frames`` (uint8 N×H×W×3 batches) or, by default, ``frames_per_size``
    synthetic street scenes at each of ``verify_sizes`` (default: :func:`~ftadapt.export.verify.default_sizes`).
    Raises VerificationError (after writing the marked file) when verification fails. An existing ``out`` is replaced
    only with ``overwrite`` (see the module docstring).
    """
    if opset not in OPSETS:
        raise UsageError(f"opset {opset} is not supported: the exporter writes ONNX opsets {OPSETS[0]} to "
                         f"{OPSETS[-1]}; pass one of them (default {DEFAULT_OPSET})")
    out = Path(out)
    stale = _check_out(out, ensemble, overwrite)
    reference = build_graph(ensemble, working_size=working_size)
    graph = build_graph(ensemble, precision=precision, working_size=working_size, with_probs=with_probs)
    info = artifact_info(graph, precision=precision, opset=opset)
    external = sum(p.numel() * p.element_size() for p in graph.parameters()) > EXTERNAL_DATA_BYTES
    out.parent.mkdir(parents=True, exist_ok=True)
    stages = tqdm(total=2 if verify else 1, desc=f"export {precision}", unit="stage", disable=not progress)
    with stages, tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as work:
        staged = Path(work) / out.name
        t0 = time.perf_counter()
        _torch_export(graph, staged, info, external=external)
        seconds = time.perf_counter() - t0
        stages.update()
        verification = None
        if verify:
            if frames is None:
                frames = verification_frames(verify_sizes or default_sizes(working_size), frames_per_size)
            verification = verify_onnx(staged, reference, precision=precision, batches=frames, progress=progress)
            info = info.with_verification(verification.to_dict())
            write_props(staged, info)
            stages.update()
        files = [*read_model_file(staged).data_files, staged]  # data first: the .onnx appears last, complete
        for f in files:
            os.replace(f, out.parent / f.name)
    if not external:
        stale.unlink(missing_ok=True)  # left by an earlier export of this name with external weights (overwrite)
    placed = [out.parent / f.name for f in files]
    result = ExportResult(out, placed[-1:] + placed[:-1], info, seconds, verification)
    if verification is not None and not verification.passed:
        raise VerificationError(f"{out} failed verification and is marked so in its metadata:\n"
                                + verification.summary(), result)
    return result


__all__ = ["export_onnx", "cast_image_first", "ExportResult", "VerificationError", "DEFAULT_OPSET", "OPSETS"]
