"""The one place predictors are built from what a user names: a checkpoint (or run) folder, an ensemble of them (its
members beside it), an exported file through the runtime, the exported file's own PyTorch module rebuilt from its
members, and a folder of prediction PNGs. ``ftadapt eval``, ``ftadapt visualize``, ``ftadapt analyze``, ``ftadapt
bench accuracy`` and the demo all build theirs here.

A predictor that cannot run on this machine (TensorRT without a GPU, the FP16 module on a CPU, a backend that is not
installed) is an :class:`Unavailable` — a typed result with its reason — where a caller asks for that
(:func:`or_unavailable`); everywhere else the error is raised. Heavy imports (torch, the runtime) happen only when a
predictor of that kind is built.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftadapt.devices import DeviceError, DeviceLike, parse_device
from ftadapt.errors import UsageError
from ftadapt.evaluation.evaluate import Predictor

KINDS = ("checkpoint", "member", "ensemble", "onnx", "module", "predictions")


@dataclass(frozen=True)
class Unavailable:
    """A predictor that cannot run here: its ``name`` and the ``reason``, which names the fix."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"not run: {self.reason}"


def or_unavailable(name: str, build: Callable[[], Predictor]) -> Predictor | Unavailable:
    """``build()``, or an :class:`Unavailable` when it fails because this machine lacks what it needs (a device, a
    backend, a buildable engine)."""
    from ftadapt.runtime import BackendUnavailable, EngineError

    try:
        return build()
    except (BackendUnavailable, EngineError, DeviceError) as exc:
        return Unavailable(name, str(exc))


def checkpoint(path: str | os.PathLike, *, name: str | None = None, heads: str | None = None, flip: bool = False,
               device: DeviceLike = "auto") -> Predictor:
    """The model of a checkpoint folder (or a run folder's newest checkpoint) under head rule ``heads`` (None: the
    model's own) with optional flip TTA, named by its checkpoint (``run@step_NNNNNN``) unless ``name`` is given."""
    from ftadapt.evaluation.pytorch import ModelPredictor

    return ModelPredictor.from_checkpoint(path, name=name, rule=heads, flip=flip, device=device)


def ensemble(members: Sequence[str], *, fusion: str = "probs", flip: bool = False, device: DeviceLike = "auto",
             name: str | None = None, with_members: bool = False) -> list[Predictor]:
    """The weighted ensemble of ``members`` (``DIR:WEIGHT`` each) in one of the modes of ``ftadapt.ensemble``; with
    ``with_members`` each member alone (under its head rule, with the ensemble's flip) comes first, to be scored
    beside it. Named "ensemble" unless ``name`` is given — for fusion "fta-code" "fta-code-emulation", so its result
    is not taken for a sound ensemble's."""
    from ftadapt.ensemble import load_ensemble
    from ftadapt.evaluation.pytorch import EnsemblePredictor

    name = name or ("fta-code-emulation" if fusion == "fta-code" else "ensemble")
    fused = EnsemblePredictor(load_ensemble(list(members), fusion=fusion, flip=flip), name=name, device=device)
    return [*(fused.member_predictors() if with_members else ()), fused]


def exported(path: str | os.PathLike, *, name: str | None = None, backend: str = "auto",
             device: DeviceLike = "auto", **runtime_options: Any) -> Predictor:
    """An exported file through ``ftadapt.runtime.Segmenter`` on ``backend`` and ``device`` (``runtime_options``:
    the Segmenter's ``tensorrt=`` / ``onnxruntime=`` options), named by the file unless ``name`` is given."""
    from ftadapt.evaluation.onnx import OnnxPredictor

    return OnnxPredictor.open(path, name=name, backend=backend, device=str(parse_device(device)), **runtime_options)


def exported_module(path: str | os.PathLike, checkpoints: Sequence[str | os.PathLike], *, name: str,
                    device: DeviceLike = "auto") -> Predictor:
    """The FP32 PyTorch module an exported file was made from — ``SegmentationGraph`` rebuilt from the members'
    checkpoints, matched by sha256 (``ftadapt.export.rebuild``) — fed frames as they come, like the file."""
    from ftadapt.devices import torch_device
    from ftadapt.evaluation.pytorch import GraphPredictor
    from ftadapt.export.rebuild import rebuild_graph
    from ftadapt.runtime.onnx_file import read_model_file

    info = read_model_file(path).info
    where = torch_device(device)
    graph = rebuild_graph(info, checkpoints, precision="fp32", device=str(where), source=str(path))
    details = {"precision": "fp32", "members": [m.name for m in info.members],
               "module": "SegmentationGraph rebuilt from the members' checkpoints"}
    return GraphPredictor(graph, name=name, device=where, details=details)


def half_module(module: Predictor, *, name: str) -> Predictor:
    """The FP16 variant of an :func:`exported_module` (BN folded into the convs, members in half: what the FP16
    export traced), on its device — CUDA only: PyTorch's half convolutions do not run on the CPU."""
    from ftadapt.evaluation.pytorch import GraphPredictor
    from ftadapt.export.onnx_graph import build_graph

    if module.device.type != "cuda":
        raise DeviceError("the FP16 module runs in PyTorch on CUDA only (--device cuda:N)")
    graph = module.module
    half = build_graph(graph.ensemble, precision="fp16", working_size=graph.working_size)
    return GraphPredictor(half, name=name, device=module.device, details={**module.details, "precision": "fp16"})


def protocol_module(module: Predictor, *, name: str) -> Predictor:
    """The ensemble of an :func:`exported_module` under the training protocol's pre-processing (PIL bicubic resize
    to the working size, the papers' mIoU) instead of the graph's own."""
    from ftadapt.evaluation.pytorch import EnsemblePredictor

    return EnsemblePredictor(module.module.ensemble, name=name, device=module.device)


def prediction_folder(path: str | os.PathLike) -> Predictor:
    """A folder of trainId PNGs named by Cityscapes frame id."""
    from ftadapt.evaluation.folder import PredictionFolder

    return PredictionFolder(path)


@dataclass(frozen=True)
class PredictorRequest:
    """The predictors a command names (``ftadapt eval`` / ``visualize`` options), in the order they are built:
    checkpoints, one ensemble (its members first), exported files, a prediction folder; and what applies to them."""

    checkpoints: tuple[Path, ...] = ()
    members: tuple[str, ...] = ()
    onnx_files: tuple[Path, ...] = ()
    pred_dir: Path | None = None
    heads: str | None = None
    flip: bool = False
    fusion: str = "probs"
    device: DeviceLike = "auto"
    backend: str = "auto"

    @property
    def names_any(self) -> bool:
        return bool(self.checkpoints or self.members or self.onnx_files or self.pred_dir)

    def check(self) -> None:
        """UsageError for option combinations that cannot apply."""
        if self.members and not self.checkpoints and self.heads:
            raise UsageError("--heads applies to --checkpoint models; an ensemble runs each member under its own "
                             "head rule")
        if self.fusion != "probs" and not self.members:
            raise UsageError("--fusion applies to an ensemble (--ensemble DIR:WEIGHT, repeatable)")
        if self.members:
            from ftadapt.ensemble import check_fta_code, check_mode

            check_mode(self.fusion, self.flip)
            if self.fusion == "fta-code":
                check_fta_code(self.members)  # the head rules are checked once the members are loaded

    def inputs(self) -> list[Path]:
        """What the predictors read (no output may lie in it): prediction folders, exported files and the model
        folders (a run folder's newest checkpoint)."""
        given = [Path(p) for p in (self.pred_dir, *self.onnx_files) if p is not None]
        if self.checkpoints or self.members:
            from ftadapt.ensemble import MemberSpec
            from ftadapt.run_folder import resolve_checkpoint

            named = [*self.checkpoints, *(MemberSpec.parse(m).path for m in self.members)]
            given += [p for path in named for p in (Path(path), resolve_checkpoint(path))]  # a run and its newest
        return given


def build(request: PredictorRequest) -> tuple[list[Predictor], dict[str, str]]:
    """The predictors ``request`` names, in order, and each one's kind (``KINDS``); a repeated name gets ``#2``,
    ``#3``. On an error the predictors already built are closed."""
    request.check()
    built: list[tuple[Predictor, str]] = []
    try:
        built += [(checkpoint(p, heads=request.heads, flip=request.flip, device=request.device), "checkpoint")
                  for p in request.checkpoints]
        if request.members:
            *members, fused = ensemble(request.members, fusion=request.fusion, flip=request.flip,
                                       device=request.device, with_members=True)
            built += [*((m, "member") for m in members), (fused, "ensemble")]
        for path in request.onnx_files:
            built.append((exported(path, backend=request.backend, device=request.device), "onnx"))
        if request.pred_dir is not None:
            built.append((prediction_folder(request.pred_dir), "predictions"))
    except BaseException:
        close_all([p for p, _ in built])
        raise
    predictors = unique_names([p for p, _ in built])
    return predictors, {p.name: kind for p, (_, kind) in zip(predictors, built)}


def unique_names(predictors: Sequence[Predictor]) -> list[Predictor]:
    """``predictors`` with a repeated name made unique in place: the second ``x`` becomes ``x#2``, and so on."""
    seen: set[str] = set()
    for predictor in predictors:
        base, k = predictor.name, 2
        while predictor.name in seen:
            predictor.name, k = f"{base}#{k}", k + 1
        seen.add(predictor.name)
    return list(predictors)


def close_all(predictors: Sequence[Any]) -> None:
    """Release what the predictors hold (a runtime session); :class:`Unavailable` entries hold nothing."""
    for p in predictors:
        if isinstance(p, Predictor):
            p.close()


__all__ = ["Unavailable", "or_unavailable", "checkpoint", "ensemble", "exported", "exported_module", "half_module",
           "protocol_module", "prediction_folder", "PredictorRequest", "build", "unique_names", "close_all", "KINDS"]
