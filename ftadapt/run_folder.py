"""The layout of a training run's folder, and finding the checkpoint a user means by a path:

- ``config.json``: the resolved training config (``ftadapt.config``);
- ``metrics.jsonl``: one JSON object per logged step (TensorBoard events beside it under ``tb/``);
- ``checkpoints/step_NNNNNN``: checkpoint folders (``ftadapt.checkpoint``), with the links ``last`` (newest) and
  ``oracle_best`` (best periodic evaluation on target val, a selection on labels: "oracle"); pruning keeps the K newest
  and the linked ones.

Links are relative, so a run folder can move. What a killed process leaves in ``checkpoints/`` (half-written
``.step_*.tmp`` folders, ``.last.tmp`` links, interrupted deletions) is removed by :func:`clean_stale`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ftadapt.checkpoint import MODEL_FILE
from ftadapt.errors import CheckpointError
from ftadapt.fsutil import remove_entry, remove_stale_temporaries

CHECKPOINTS, LAST, ORACLE_BEST = "checkpoints", "last", "oracle_best"
CONFIG_FILE, METRICS_FILE = "config.json", "metrics.jsonl"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where a run keeps the checkpoint of ``step``: ``RUN/checkpoints/step_NNNNNN``."""
    return Path(run_dir) / CHECKPOINTS / f"step_{step:06d}"


def checkpoint_folders(run_dir: str | Path) -> list[Path]:
    """The run's ``step_*`` checkpoint folders, oldest first (no link, no temporary)."""
    folder = Path(run_dir) / CHECKPOINTS
    return sorted(p for p in folder.glob("step_*") if p.is_dir() and not p.is_symlink())


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's newest checkpoint folder (the ``last`` link, else the highest ``step_*``), or None."""
    last = Path(run_dir) / CHECKPOINTS / LAST
    if last.is_dir():
        return last.resolve()
    steps = checkpoint_folders(run_dir)
    return steps[-1] if steps else None


def link_checkpoint(checkpoint: Path, name: str) -> None:
    """Atomically point the link ``name`` (``LAST``, ``ORACLE_BEST``) beside ``checkpoint`` at it (relative)."""
    link = checkpoint.with_name(name)
    tmp = link.with_name(f".{name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(checkpoint.name, target_is_directory=True)
    tmp.replace(link)


def prune_checkpoints(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest ``step_*`` checkpoints of a run, never the ones ``last`` or
    ``oracle_best`` point to, and what interrupted writes and deletions left behind; return the deleted checkpoint
    folders. Each is first renamed to a hidden name (atomic), so an interrupted deletion never leaves a half-deleted
    ``step_*`` folder behind."""
    folder = Path(run_dir) / CHECKPOINTS
    protected = {(folder / name).resolve() for name in (LAST, ORACLE_BEST) if (folder / name).is_dir()}
    steps = checkpoint_folders(run_dir)
    doomed = [p for p in steps[:max(0, len(steps) - keep)] if p.resolve() not in protected]
    clean_stale(run_dir)
    for path in doomed:
        trash = path.with_name(f".deleting-{path.name}")
        path.replace(trash)
        shutil.rmtree(trash)
    return doomed


def clean_stale(run_dir: str | Path) -> list[Path]:
    """Remove what a killed process left in ``RUN/checkpoints``: half-written ``.step_*.tmp`` checkpoint folders
    (about 0.4 GB each for an R101), ``.last.tmp`` links and interrupted deletions; return what was removed."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    stale = remove_stale_temporaries(folder, "step_*")
    links = [folder / f".{name}.tmp" for name in (LAST, ORACLE_BEST)]
    for leftover in [*folder.glob(".deleting-step_*"), *(p for p in links if p.is_symlink())]:
        remove_entry(leftover)
        stale.append(leftover)
    return stale


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a training run's folder (``checkpoints/``, or the log of a run that saved none yet)."""
    path = Path(path)
    return not (path / MODEL_FILE).exists() and ((path / CHECKPOINTS).is_dir() or (path / METRICS_FILE).exists())


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder a user means by ``path``: a checkpoint folder as it is, a run folder its newest
    checkpoint. A run folder without any checkpoint is a CheckpointError; anything else is left to
    ``ftadapt.checkpoint.load_checkpoint`` to judge (and name)."""
    path = Path(path)
    if not path.is_dir() or (path / MODEL_FILE).exists():
        return path
    newest = latest_checkpoint(path)
    if newest is not None:
        return newest
    if is_run_folder(path):
        raise CheckpointError(f"run folder {path} has no checkpoint yet (it stopped before the first one); pass a "
                              "run that saved one, or a checkpoint folder (RUN/checkpoints/step_NNNNNN)")
    return path


def checkpoint_name(path: str | Path) -> str:
    """A short name for a checkpoint folder: its run's name for a run's checkpoint
    (``runs/clan/checkpoints/step_000100`` → ``clan@step_000100``), else the folder's name."""
    path = Path(path)
    if path.parent.name == CHECKPOINTS and path.parent.parent.name:
        return f"{path.parent.parent.name}@{path.name}"
    return path.name or str(path)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl`` (an empty list when there is none)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = ["CHECKPOINTS", "LAST", "ORACLE_BEST", "CONFIG_FILE", "METRICS_FILE", "checkpoint_path",
           "checkpoint_folders", "latest_checkpoint", "link_checkpoint", "prune_checkpoints", "clean_stale",
           "is_run_folder", "resolve_checkpoint", "checkpoint_name", "read_metrics"]
