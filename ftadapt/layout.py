"""The names ftadapt gives its own files and folders, and how each kind of folder is recognised — one place for the
checkpoint format (``ftadapt.checkpoint``), the run folder (``ftadapt.run_folder``) and the output rule
(``ftadapt.fsutil``), which must never write inside either. Torch-free and numpy-free.

- A **checkpoint folder** holds ``model.pt``, ``config.json`` and ``meta.json`` (its weights hashed in meta.json).
- A **run folder** holds ``config.json`` and ``checkpoints/`` (``step_NNNNNN`` folders, the links ``last`` and
  ``oracle_best``) or, before its first checkpoint, the log ``metrics.jsonl``.
- Any other folder ftadapt writes whole (a synthetic dataset, a benchmark's ``--out``) holds the mark
  ``.ftadapt-output``: ``--overwrite`` replaces a folder only when it carries that mark (or is a checkpoint folder).
"""
from __future__ import annotations

import os
from pathlib import Path

MODEL_FILE, CONFIG_FILE, META_FILE, TRAIN_STATE_FILE = "model.pt", "config.json", "meta.json", "train_state.pt"
CHECKPOINTS, LAST, ORACLE_BEST, METRICS_FILE = "checkpoints", "last", "oracle_best", "metrics.jsonl"
OUTPUT_MARK = ".ftadapt-output"


def is_checkpoint_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint folder (its weights and its meta.json)."""
    path = Path(path)
    return (path / MODEL_FILE).is_file() and (path / META_FILE).is_file()


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a training run's folder: its config.json and its ``checkpoints/`` (or the log of a run
    that saved none yet)."""
    path = Path(path)
    return ((path / CONFIG_FILE).is_file() and not (path / MODEL_FILE).exists()
            and ((path / CHECKPOINTS).is_dir() or (path / METRICS_FILE).is_file()))


def is_marked_output(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder ftadapt wrote whole and marked as its own (``OUTPUT_MARK``)."""
    return (Path(path) / OUTPUT_MARK).is_file()


def mark_output(folder: str | os.PathLike, written_by: str) -> None:
    """Mark ``folder`` (being written whole) as ftadapt's own output, so a later ``--overwrite`` may replace it."""
    (Path(folder) / OUTPUT_MARK).write_text(f"written by {written_by}; `--overwrite` may replace this folder whole\n")


__all__ = ["MODEL_FILE", "CONFIG_FILE", "META_FILE", "TRAIN_STATE_FILE", "CHECKPOINTS", "LAST", "ORACLE_BEST",
           "METRICS_FILE", "OUTPUT_MARK", "is_checkpoint_folder", "is_run_folder", "is_marked_output", "mark_output"]
