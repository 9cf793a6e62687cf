"""Preparing a training run's folder (``ftadapt.run_folder``): the config of a fresh or resumed run, every check before
anything is written, and removing what a start that failed wrote.

A run folder is never replaced: a fresh run needs an absent or empty folder, outside its inputs
(``ftadapt.fsutil.check_target``); a resume must repeat the run's config in every key that decides what it learns. A
start that fails before its first log line or checkpoint removes what it wrote (``discard_unstarted``), so the same
command can simply run again. One ``ftadapt train`` writes a run folder at a time (:class:`RunLock`).
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from ftadapt.config import (
    TrainConfig,
    build_config,
    config_diff,
    config_from_dict,
    config_hash,
    config_to_dict,
    flatten,
    parse_dataset_spec,
)
from ftadapt.errors import CheckpointError, FtadaptError, UsageError
from ftadapt.fsutil import check_target, remove_entry, write_text_atomic
from ftadapt.run_folder import (
    CHECKPOINTS,
    CONFIG_FILE,
    LAST,
    clean_stale,
    deleted_last,
    latest_checkpoint,
    read_metrics,
)


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config a run saved (of any layout version: ``ftadapt.config.upgrade``)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return config_from_dict(json.loads(path.read_text()))
    except (ValueError, FtadaptError) as exc:
        raise CheckpointError(f"{path} cannot be read as a training config: {exc}") from None


class RunLock:
    """Only one ``ftadapt train`` writes a run folder at a time: an exclusive advisory lock (``flock``) on the folder
    itself — nothing is written for it — taken before a resume cleans the folder or a fresh run writes its config, and
    held until :meth:`release` (the lock also ends with the process, however it ends)."""

    def __init__(self) -> None:
        self._fd: int | None = None

    def acquire(self, run_dir: Path) -> None:
        if self._fd is not None:
            return
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"--out {run_dir}: another `ftadapt train` is writing this run folder right now; wait "
                             "until it stops (then --resume continues the run), or choose another --out") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def write_run_config(run_dir: str | Path, cfg: TrainConfig, lock: RunLock) -> None:
    """Create the run folder, take its ``lock`` and write its ``config.json`` — refused if another run started
    there since ``prepare_run_dir`` found the folder free."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock.acquire(run_dir)
    if any(run_dir.iterdir()):
        raise UsageError(f"--out {run_dir}: another `ftadapt train` started a run there while this one was "
                         "preparing; choose another --out (or continue that run with --resume once it stops)")
    write_text_atomic(run_dir / CONFIG_FILE, json.dumps(config_to_dict(cfg), indent=2) + "\n")


def resolve_config(overrides: dict, *, out: str | Path, resume: bool) -> TrainConfig:
    """The config of a ``train`` call: ``build_config(overrides)``, or with ``resume`` the run's saved config updated
    by ``overrides`` (a resume repeats only what it changes; ``prepare_run_dir`` refuses changes that matter)."""
    if resume and (Path(out) / CONFIG_FILE).is_file():
        return build_config({**flatten(read_run_config(out)), **overrides})
    return build_config(overrides)


def run_inputs(cfg: TrainConfig, *, resume: bool) -> list[Path]:
    """What a run reads: its dataset roots and, for a fresh run, its init weights (a run never writes into them)."""
    roots = [parse_dataset_spec(spec)[1] for spec in (cfg.data.source, cfg.data.target) if spec]
    return roots + ([cfg.init_weights] if cfg.init_weights is not None and not resume else [])


def _nothing_to_resume(out: Path, gone: str) -> CheckpointError:
    """A resume of a run with no checkpoint left whose newest one, ``gone``, the user deleted (``checkpoints/last``
    dangles)."""
    return CheckpointError(f"--resume: the newest checkpoint of {out}, checkpoints/{gone} (which "
                           f"checkpoints/{LAST} points to), was deleted and no other checkpoint remains, so the run "
                           "cannot be continued: start it again in a new folder")


def _unstartable(out: Path) -> str:
    logged = read_metrics(out)
    if logged and (out / CHECKPOINTS).is_dir():
        return (f"--out {out} holds a run that logged up to step {logged[-1].get('step', '?')} but has no checkpoint "
                f"left in {out / CHECKPOINTS} (were they deleted?), so there is nothing to resume; restore one, or "
                "start the run again in a new folder")
    return (f"--out {out} holds a run that stopped before its first checkpoint, so there is nothing to resume; delete "
            "it (its config.json and logs are all it holds) and start again, or choose a new folder")


def prepare_run_dir(out: str | Path, cfg: TrainConfig, *, resume: bool, lock: RunLock | None = None) -> Path | None:
    """Refuse to clobber a run, a link or an input; for ``resume`` check that ``cfg`` matches the run, take its
    ``lock`` (the main process; None elsewhere), remove what interrupted checkpoint writes left, and return the
    checkpoint to continue from. Writes nothing else."""
    out = Path(out)
    check_target(out, overwrite=False, inputs=run_inputs(cfg, resume=resume), what="--out", kind="run")
    if not resume:
        if out.exists() and any(out.iterdir()):
            if not (out / CONFIG_FILE).exists():
                raise UsageError(f"--out {out} is not an empty folder; choose a new folder for the run")
            if latest_checkpoint(out) is None:
                raise UsageError(_unstartable(out))
            raise UsageError(f"--out {out} holds a run; continue it with --resume, or choose a new folder")
        return None
    if not (out / CONFIG_FILE).is_file():
        raise UsageError(f"--resume: {out} is not a run folder (no {CONFIG_FILE}); start a run there without --resume")
    old = read_run_config(out)
    diff = config_diff(old, cfg)
    if diff:
        raise UsageError(f"--resume: this command differs from the run in {out} (config hash {config_hash(old)} vs "
                         f"{config_hash(cfg)}):\n  " + "\n  ".join(diff) +
                         "\nrepeat the original options (see its config.json) or start a new run")
    path = latest_checkpoint(out)
    if path is None:
        gone = deleted_last(out)
        raise _nothing_to_resume(out, gone) if gone else UsageError(_unstartable(out))
    if lock is not None:
        lock.acquire(out)
    clean_stale(out)
    return path


def discard_unstarted(out: Path, *, created: bool) -> bool:
    """After a fresh start failed: remove what it wrote if it never logged a step nor saved a checkpoint (the folder
    itself when ``created``), so the same command can simply run again; return whether it did. A run that logged
    keeps its folder, logs and all, for the diagnosis."""
    if latest_checkpoint(out) is not None or read_metrics(out) or not out.is_dir():
        return False
    for child in [out] if created else list(out.iterdir()):
        remove_entry(child)
    return True


__all__ = ["RunLock", "read_run_config", "write_run_config", "resolve_config", "run_inputs", "prepare_run_dir",
           "discard_unstarted"]
