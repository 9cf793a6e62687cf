"""The record of a training run, i.e. its folder:

- ``config.json``: the resolved :class:`TrainConfig` (``--config`` reads it back; folders written before the
  ``speed`` section and the recorded dataset roots read and resume too, see ``ftadapt.config.KEY_ALIASES``);
- ``metrics.jsonl``: one JSON object per logged step, and the same scalars as TensorBoard events under ``tb/``;
- ``checkpoints/step_NNNNNN``: checkpoint folders, with the links ``last`` (newest) and ``oracle_best`` (best
  periodic evaluation on target val, a selection on labels: "oracle"); with ``keep_checkpoints`` = K > 0 only the K
  newest (and the two linked ones) are kept.

On resume the logs are cut back to the checkpoint's step, so each step appears once. A run folder is never replaced:
a fresh run needs an absent or empty folder, outside its inputs (``ftadapt.fsutil.check_target``); a start that fails
before its first log line or checkpoint removes what it wrote (``discard_unstarted``); what an interrupted checkpoint
write left behind is removed when the run resumes and whenever it prunes.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from tqdm import tqdm

from ftadapt.checkpoint import CHECKPOINTS, LAST, ORACLE_BEST, latest_checkpoint, load_checkpoint
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
from ftadapt.fsutil import check_target, remove_entry, remove_stale_temporaries, write_text_atomic

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
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept), overwrite=True)
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
    ``oracle_best`` point to, and what interrupted writes and deletions left behind; return the deleted checkpoint
    folders. Each is first renamed to a hidden name (atomic), so an interrupted deletion never leaves a half-deleted
    ``step_*`` folder behind."""
    folder = Path(run_dir) / CHECKPOINTS
    protected = {(folder / name).resolve() for name in (LAST, ORACLE_BEST) if (folder / name).is_dir()}
    steps = sorted(p for p in folder.glob("step_*") if p.is_dir() and not p.is_symlink())
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


def run_inputs(cfg: TrainConfig, *, resume: bool) -> list[Path]:
    """What a run reads: its dataset roots and, for a fresh run, its init weights (a run never writes into them)."""
    roots = [parse_dataset_spec(spec)[1] for spec in (cfg.data.source, cfg.data.target) if spec]
    return roots + ([cfg.init_weights] if cfg.init_weights is not None and not resume else [])


def _unstartable(out: Path) -> str:
    return (f"--out {out} holds a run that stopped before its first checkpoint, so there is nothing to resume; delete "
            "it (its config.json and logs are all it holds) and start again, or choose a new folder")


def prepare_run_dir(out: str | Path, cfg: TrainConfig, *, resume: bool) -> Path | None:
    """Refuse to clobber a run, a link or an input; for ``resume`` check that ``cfg`` matches the run, remove what
    interrupted checkpoint writes left, and return the checkpoint to continue from. Writes nothing else."""
    out = Path(out)
    check_target(out, overwrite=False, inputs=run_inputs(cfg, resume=resume), what="--out", merge=True)
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
        raise UsageError(_unstartable(out))
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


def damaged_checkpoint(out: Path, path: Path, error: CheckpointError) -> CheckpointError:
    """The error for a resume whose newest checkpoint ``path`` cannot be read: what is wrong, and the previous complete
    checkpoint with how to continue from it (or that there is none)."""
    earlier = sorted((p for p in (out / CHECKPOINTS).glob("step_*") if p.is_dir() and p.name < path.name),
                     reverse=True)
    for candidate in earlier:
        try:
            step = load_checkpoint(candidate, with_train_state=True).train_state["step"]
        except (CheckpointError, KeyError, TypeError):
            continue
        aside = out / f"{path.name}.damaged"
        return CheckpointError(f"--resume: the newest checkpoint cannot be used: {error}. The previous complete one "
                               f"is {candidate} (step {step}): move the damaged one out of the run (mv {path} "
                               f"{aside}) and rerun with --resume to continue from step {step}")
    return CheckpointError(f"--resume: the newest checkpoint cannot be used: {error}. No earlier checkpoint of {out} "
                           "is complete, so the run cannot be continued: start it again in a new folder")

