"""The record of a training run, i.e. its folder:

- ``config.json``: the resolved :class:`TrainConfig` (``--config`` reads it back; folders written before the
  ``speed`` section and the recorded dataset roots read and resume too, see ``ftadapt.config.KEY_ALIASES``);
- ``metrics.jsonl``: one JSON object per logged step, and the same scalars as TensorBoard events under ``tb/``;
- ``checkpoints/step_NNNNNN``: checkpoint folders, with the links ``last`` (newest) and ``oracle_best`` (best
  periodic evaluation on target val, a selection on labels: "oracle"); with ``keep_checkpoints`` = K > 0 only the K
  newest (and the two linked ones) are kept.

On resume the logs are cut back to the checkpoint's step, so each step appears once.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from tqdm import tqdm

from ftadapt.checkpoint import CHECKPOINTS, LAST, ORACLE_BEST, latest_checkpoint
from ftadapt.config import (
    TrainConfig,
    build_config,
    config_diff,
    config_from_dict,
    config_hash,
    config_to_dict,
    flatten,
)
from ftadapt.errors import CheckpointError, FtadaptError, UsageError
from ftadapt.fsutil import write_text_atomic

CONFIG_FILE, METRICS_FILE = "config.json", "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl`` (an empty list when there is none)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunLog:
    """Logging of one training process from ``start_step`` to ``total_steps``: JSONL, TensorBoard (when installed and
    wanted) and a tqdm bar with the loss terms and it/s."""

    def __init__(self, run_dir: str | Path, *, start_step: int, total_steps: int, tensorboard: bool = True,
                 progress: bool = True) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        kept = [r for r in read_metrics(run_dir) if r["step"] <= start_step]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a")
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                pass
            else:
                self._writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=start_step + 1)
        self._bar = tqdm(total=total_steps, initial=start_step, disable=not progress, unit="step", dynamic_ncols=True,
                         smoothing=0.1)

    def advance(self) -> None:
        """One step done (moves the bar; its rate is the it/s)."""
        self._bar.update(1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record ``metrics`` of ``step`` everywhere; the bar shows the loss terms."""
        record = {"step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, value, step)
        losses = {k.removeprefix("loss/"): f"{v:.3g}" for k, v in metrics.items() if k.startswith("loss/")}
        self._bar.set_postfix(losses, refresh=False)

    def message(self, text: str) -> None:
        """Print a line without breaking the bar."""
        self._bar.write(text)

    def close(self) -> None:
        self._bar.close()
        self._file.close()
        if self._writer is not None:
            self._writer.close()


class SilentLog:
    """The RunLog of ranks other than 0: they write and print nothing."""

    def advance(self) -> None:
        pass

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config a run saved."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return config_from_dict(json.loads(path.read_text()))
    except (ValueError, FtadaptError) as exc:
        raise CheckpointError(f"{path} cannot be read as a training config: {exc}") from None


def write_run_config(run_dir: str | Path, cfg: TrainConfig) -> None:
    """Create the run folder with its ``config.json``."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(run_dir) / CONFIG_FILE, json.dumps(config_to_dict(cfg), indent=2) + "\n")


def resolve_config(overrides: dict, *, out: str | Path, resume: bool) -> TrainConfig:
    """The config of a ``train`` call: ``build_config(overrides)``, or with ``resume`` the run's saved config updated
    by ``overrides`` (a resume repeats only what it changes; ``prepare_run_dir`` refuses changes that matter)."""
    if resume and (Path(out) / CONFIG_FILE).is_file():
        return build_config({**flatten(read_run_config(out)), **overrides})
    return build_config(overrides)


def link_checkpoint(checkpoint: Path, name: str) -> None:
    """Atomically point the link ``name`` beside ``checkpoint`` at it (relative, so the run folder can move)."""
    link = checkpoint.with_name(name)
    tmp = link.with_name(f".{name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(checkpoint.name, target_is_directory=True)
    tmp.replace(link)


def prune_checkpoints(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest ``step_*`` checkpoints of a run, never the ones ``last`` or
    ``oracle_best`` point to; return the deleted folders. Each is first renamed to a hidden name (atomic), so an
    interrupted deletion never leaves a half-deleted ``step_*`` folder behind."""
    folder = Path(run_dir) / CHECKPOINTS
    protected = {(folder / name).resolve() for name in (LAST, ORACLE_BEST) if (folder / name).is_dir()}
    steps = sorted(p for p in folder.glob("step_*") if p.is_dir() and not p.is_symlink())
    doomed = [p for p in steps[:max(0, len(steps) - keep)] if p.resolve() not in protected]
    for leftover in folder.glob(".deleting-step_*"):  # a deletion that was interrupted earlier
        shutil.rmtree(leftover)
    for path in doomed:
        trash = path.with_name(f".deleting-{path.name}")
        path.replace(trash)
        shutil.rmtree(trash)
    return doomed


def prepare_run_dir(out: str | Path, cfg: TrainConfig, *, resume: bool) -> Path | None:
    """Refuse to clobber a run; for ``resume`` check that ``cfg`` matches the run and return the checkpoint to
    continue from. Writes nothing."""
    out = Path(out)
    if not resume:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            what = "holds a run" if (out / CONFIG_FILE).exists() else "is not an empty folder"
            raise UsageError(f"--out {out} {what}; continue it with --resume, or choose a new folder")
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
        raise UsageError(f"--resume: {out} has no checkpoint yet (it stopped before the first one); delete the folder "
                         "and start again")
    return path
