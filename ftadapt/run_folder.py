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
import os
import shutil
from pathlib import Path

from ftadapt.errors import CheckpointError
from ftadapt.fsutil import remove_entry, remove_stale_temporaries
from ftadapt.layout import CHECKPOINTS, CONFIG_FILE, LAST, METRICS_FILE, MODEL_FILE, ORACLE_BEST, is_run_folder
from ftadapt.textfile import read_text_file


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where a run keeps the checkpoint of ``step``: ``RUN/checkpoints/step_NNNNNN``."""
    return Path(run_dir) / CHECKPOINTS / f"step_{step:06d}"


def checkpoint_folders(run_dir: str | Path) -> list[Path]:
    """The run's ``step_*`` checkpoint folders, oldest first (no link, no temporary)."""
    folder = Path(run_dir) / CHECKPOINTS
    return sorted(p for p in folder.glob("step_*") if p.is_dir() and not p.is_symlink())


def deleted_last(run_dir: str | Path) -> str | None:
    """The name of the checkpoint folder the run's ``last`` link points to when that folder was deleted (by hand:
    training never deletes what ``last`` points to), else None."""
    last = Path(run_dir) / CHECKPOINTS / LAST
    return os.readlink(last) if last.is_symlink() and not last.exists() else None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's newest checkpoint folder (the ``last`` link, else — no link, or one whose folder was deleted — the
    highest ``step_*``), or None."""
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
    gone = deleted_last(path)
    if gone is not None:
        raise CheckpointError(f"run folder {path} has no checkpoint left: its newest, {CHECKPOINTS}/{gone} (which "
                              f"{CHECKPOINTS}/{LAST} points to), was deleted, and no other remains; pass another run "
                              "or a checkpoint folder (RUN/checkpoints/step_NNNNNN)")
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
    """The records of ``metrics.jsonl`` (an empty list when there is none); a damaged log is a CheckpointError naming
    its first bad line."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    fix = ("the run's log is damaged: restore it from a backup, or move it away (the run keeps its checkpoints; the "
           "steps it logged lose their log)")
    records = []
    for number, line in enumerate(read_text_file(path, what="training log", fix=fix, error=CheckpointError)
                                  .splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            raise CheckpointError(f"{path}, line {number}, is not a JSON record; {fix}") from None
    return records


__all__ = ["CHECKPOINTS", "LAST", "ORACLE_BEST", "CONFIG_FILE", "METRICS_FILE", "checkpoint_path",
           "checkpoint_folders", "deleted_last", "latest_checkpoint", "link_checkpoint", "prune_checkpoints",
           "clean_stale", "is_run_folder", "resolve_checkpoint", "checkpoint_name", "read_metrics"]
