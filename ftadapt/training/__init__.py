"""Training: one loop for all six methods, one way to build its step, and preparing, logging and resuming a run
(the run folder's layout is ``ftadapt.run_folder``).

Map of the package (each file one job):

- ``loop.py`` — ``train(cfg, out=..., resume=...)``: prepares a run and runs THE loop (log, evaluate, checkpoint,
  stop on a signal); ``TrainResult``, ``StopRequest``.
- ``step.py`` — ``TrainStep`` (one step of G and D, with ``state_dict`` / ``load_state_dict``),
  ``build_train_step(cfg)`` (the only way the loop and the benchmarks build it), the host readback with its finite
  check (``TrainingDiverged``), ``check_step_options``.
- ``prepare.py`` — preparing the run folder: ``resolve_config`` (the config of a fresh or resumed run), the checks
  before anything is written, discarding a start that failed.
- ``resume.py`` — what a bit-for-bit resume needs besides the weights: ``train_state``, ``restore``.
- ``state.py`` — seeding and RNG states.
- ``run_log.py`` — ``metrics.jsonl`` + TensorBoard + progress bar (``RunLog``).
- ``datasets.py`` — the run's datasets from ``data.source`` / ``data.target`` and its batch streams.
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
    from ftadapt.training.prepare import resolve_config
    from ftadapt.training.step import TrainingDiverged

_EXPORTS = {"train": "loop", "TrainResult": "loop", "TrainingDiverged": "step", "resolve_config": "prepare"}

__all__ = ["train", "TrainResult", "TrainingDiverged", "resolve_config"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
