"""Training: one loop for all six methods, one way to build its step, and the record of a run.

Map of the package (each file one job):

- ``loop.py`` — ``train(cfg, out=..., resume=...)``: prepares a run and runs THE loop (log, evaluate, checkpoint,
  stop on a signal); ``TrainResult``, ``StopRequest``.
- ``step.py`` — ``TrainStep`` (one step of G and D), ``build_train_step(cfg)`` (the only way the loop and the
  benchmarks build it), the host readback with its finite check (``TrainingDiverged``), ``input_shapes``,
  ``check_step_options``.
- ``cuda_graphs.py`` — ``CudaGraphedForward``: G's forward and backward replayed as CUDA graphs in training
  (``speed.cuda_graphs``); unrelated to the exported ONNX graph and to the runtime's TensorRT CUDA graph.
- ``state.py`` — what a bit-for-bit resume needs: seeding, RNG states, ``train_state``, ``restore``.
- ``datasets.py`` — the run's datasets from ``data.source`` / ``data.target`` and its batch streams.
- ``run_folder.py`` — the run folder: ``config.json``, ``metrics.jsonl`` + TensorBoard (``RunLog``), checkpoint links
  and pruning, ``resolve_config`` (the config of a fresh or resumed run).
- ``distributed.py`` — DDP under torchrun (``DistEnv``).
- ``schedules.py`` — learning-rate and damping schedules (torch-free; the methods use them too).

The names below are re-exported lazily, so ``import ftadapt.training.schedules`` (from ``ftadapt.methods``) stays
torch-free and free of import cycles.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftadapt.training.loop import TrainResult, train
    from ftadapt.training.run_folder import resolve_config
    from ftadapt.training.step import TrainingDiverged

_EXPORTS = {"train": "loop", "TrainResult": "loop", "TrainingDiverged": "step", "resolve_config": "run_folder"}

__all__ = ["train", "TrainResult", "TrainingDiverged", "resolve_config"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
