"""The training loop of all six methods (DESIGN.md §6, methods.md §4), with checkpoint/resume and a clean stop.

``train`` prepares a run (``_prepare``: run folder, the step from ``build_train_step``, datasets, resume state), then
``_loop`` runs it step after step: draw the batches, run the :class:`~ftadapt.training.step.TrainStep`, check the
numbers, log, evaluate, checkpoint, stop on a signal. A run folder holds ``config.json`` (the resolved config),
``metrics.jsonl``, ``tb/`` and ``checkpoints/step_NNNNNN`` folders with a ``last`` link to the newest
(``ftadapt.run_folder``). Under ``torchrun`` the same loop trains data-parallel (``training.distributed``); rank 0
writes the run folder.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ftadapt.checkpoint import save_checkpoint
from ftadapt.config import TrainConfig, config_hash, config_to_dict, parse_dataset_spec
from ftadapt.errors import CheckpointError, FtadaptError, UsageError
from ftadapt.evaluation import ADAPTSEGNET, LabelledSplit, evaluate
from ftadapt.evaluation.pytorch import ModelPredictor
from ftadapt.models.registry import model_config
from ftadapt.run_folder import LAST, ORACLE_BEST, checkpoint_path, deleted_last, link_checkpoint, prune_checkpoints
from ftadapt.training.datasets import Datasets, open_datasets, training_batches
from ftadapt.training.distributed import DistEnv, distributed
from ftadapt.training.prepare import RunLock, discard_unstarted, prepare_run_dir, write_run_config
from ftadapt.training.resume import damaged_checkpoint, relink_last, restore, train_state
from ftadapt.training.run_log import RunLog, SilentLog
from ftadapt.training.step import Readback, StepResult, TrainStep, build_train_step


@dataclass
class TrainResult:
    """How a ``train`` call ended. ``stopped_by`` names the signal that ended it early (SIGINT/SIGTERM), if any."""

    run_dir: Path
    step: int
    checkpoint: Path | None
    stopped_by: str | None = None
    oracle: dict | None = None  # best periodic evaluation {"step", "miou"}: selection on target val ("oracle")


class TrainingInterrupted(FtadaptError):
    """A second SIGINT/SIGTERM ended the run at once; the message says what was lost and where to continue."""

    exit_code = 130


class StopRequest:
    """Signal handler: the first SIGINT/SIGTERM asks the loop to stop after the current step (with a checkpoint); a
    second one interrupts at once."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def __call__(self, signum: int, frame: object) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def train(cfg: TrainConfig, *, out: str | Path, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``cfg.method`` on ``cfg.data.source`` (labelled) → ``cfg.data.target`` (unlabelled Cityscapes train)
    into the run folder ``out``, starting from ``cfg.init`` when given; with ``resume``, continue the run in ``out``
    from its last checkpoint, bit-for-bit on the CPU (``cfg`` as ``resolve_config(..., resume=True)`` gives it).

    Under ``torchrun`` (several processes) this is data-parallel training, see ``training.distributed``; the config
    key ``sync_bn`` then normalises with BatchNorm statistics over all ranks' images instead of each rank's own.
    """
    with distributed(cfg.device) as dist_env:
        return _train(cfg, Path(out), resume=resume, progress=progress and dist_env.is_main, dist_env=dist_env)


@dataclass
class _Run:
    """What the loop works with; ``done`` (the last finished step), ``saved`` (the newest checkpoint, of step
    ``saved_step``) and ``oracle`` change as it runs."""

    cfg: TrainConfig
    out: Path
    dist: DistEnv
    step_fn: TrainStep
    data: Datasets
    start: int
    stop: int
    provenance: dict
    saved: Path | None
    oracle: dict | None
    done: int = 0
    saved_step: int = 0


def _train(cfg: TrainConfig, out: Path, *, resume: bool, progress: bool, dist_env: DistEnv) -> TrainResult:
    """``train`` on this rank. A fresh start that fails before its first log line or checkpoint removes what it
    wrote (``discard_unstarted``); a second signal ends the run with :class:`TrainingInterrupted`."""
    created = not out.exists()
    run = None
    lock = RunLock()
    try:
        run = _prepare(cfg, out, resume=resume, progress=progress, dist_env=dist_env, lock=lock)  # last: it writes
        return _run(run, progress)
    except BaseException as exc:
        discarded = run is not None and not resume and dist_env.is_main and discard_unstarted(out, created=created)
        if isinstance(exc, KeyboardInterrupt):
            raise _interrupted(run, out, discarded) from None
        raise
    finally:
        lock.release()


def _interrupted(run: _Run | None, out: Path, discarded: bool) -> TrainingInterrupted:
    """What a second signal cost: the steps since the last checkpoint, and where the run continues."""
    if run is None:
        return TrainingInterrupted("interrupted before training started; nothing was written")
    if run.saved is None:
        kept = (f"what it wrote in {out} was removed" if discarded else
                f"its logs are kept in {out}: delete that folder to start the run again")
        return TrainingInterrupted(f"interrupted after step {run.done}, before the first checkpoint: no step was "
                                   f"saved, and {kept}")
    lost = (f"steps {run.saved_step + 1}–{run.done} since then are lost" if run.done > run.saved_step else
            "no finished step is lost")
    return TrainingInterrupted(f"interrupted after step {run.done}: the last checkpoint is {run.saved} (step "
                               f"{run.saved_step}) and {lost}; continue with the same command and --resume "
                               f"(--out {out})")


def _run(run: _Run, progress: bool) -> TrainResult:
    """The loop with its loaders, logging and signal handling; the result once it stops."""
    cfg, out, dist_env = run.cfg, run.out, run.dist
    if run.start >= run.stop:
        return TrainResult(out, run.start, run.saved, oracle=run.oracle)
    torch.backends.cudnn.benchmark = cfg.speed.cudnn_benchmark
    log = (RunLog(out, start_step=run.start, total_steps=run.stop, tensorboard=cfg.tensorboard, progress=progress)
           if dist_env.is_main else SilentLog())
    note = (run.step_fn.init_report or {}).get("note")
    if note:
        log.message(f"note: {note}")
    stopper = StopRequest()
    try:
        with stopper.installed(), training_batches(cfg, run.data, start_step=run.start, dist_env=dist_env) as batches:
            result = _loop(run, *batches, log, stopper)
    finally:
        log.close()
    if result.stopped_by is None:
        dist_env.barrier()  # the last checkpoint is written before any rank reports it
    return result


def _prepare(cfg: TrainConfig, out: Path, *, resume: bool, progress: bool, dist_env: DistEnv, lock: RunLock) -> _Run:
    """Check the run folder, build the step (``cfg.init`` only for a fresh run), open the datasets (the dataset doctor
    only before a fresh run), restore a resumed run's state, and write ``config.json`` of a fresh run — nothing is
    written before every check has passed."""
    previous = prepare_run_dir(out, cfg, resume=resume, lock=lock if dist_env.is_main else None)
    gone = deleted_last(out) if resume else None  # the newest checkpoint, deleted by the user (an older one resumes)
    if previous is None:
        _check_init(cfg)
    step_fn = build_train_step(cfg, dist_env=dist_env, load_init=previous is None)
    data = open_datasets(cfg, needs_target=step_fn.method.uses_target,
                         doctor=cfg.check_data and previous is None and dist_env.is_main, progress=progress)
    start, oracle = 0, None
    if previous is not None:
        try:
            start, oracle = restore(previous, step_fn, dist_env)
        except CheckpointError as exc:
            raise damaged_checkpoint(out, previous, exc) from None
        if gone is not None and dist_env.is_main:
            print(relink_last(out, previous, start, gone), file=sys.stderr)
    dist_env.barrier()  # every rank has checked the run folder before rank 0 writes into it
    if previous is None and dist_env.is_main:
        write_run_config(out, cfg, lock)
    return _Run(cfg, out, dist_env, step_fn, data, start=start, stop=cfg.stop_at or cfg.steps,
                provenance=_provenance(cfg, step_fn, dist_env), saved=previous, oracle=oracle, done=start,
                saved_step=start)


def _check_init(cfg: TrainConfig) -> None:
    """A fresh run of an R101 model must say where its weights start: random initialisation wastes GPU-days (the
    paper starts from the DeepLab ImageNet + MS-COCO weights), so it needs ``--init FILE`` or ``--init none``."""
    if cfg.init or model_config(cfg.model).depth != 101:
        return
    file = "DeepLab_resnet_pretrained_init-f81d91e8.pth"
    raise UsageError(f"model {cfg.model} would start from random weights, which costs days of GPU time for nothing; "
                     "start from the DeepLab ImageNet/COCO initialisation: `ftadapt convert --from deeplab-init "
                     f"{file} --out init/deeplab-r101`, then --init init/deeplab-r101 (the .pth itself works too), or "
                     "pass --init none to train from random weights on purpose")


def _loop(run: _Run, source, target, log: RunLog | SilentLog, stopper: StopRequest) -> TrainResult:
    """THE loop: steps ``run.start`` … ``run.stop`` − 1 (0-based), each logged, evaluated and saved when due."""
    cfg, step_fn, dist = run.cfg, run.step_fn, run.dist
    clock = _DataClock()
    pending: Readback | None = None
    for i in range(run.start, run.stop):
        step = i + 1
        with clock.waiting():
            src_batch = next(source)
            tgt_batch = next(target) if target is not None else None
        result = step_fn(i, src_batch, tgt_batch)
        run.done = step
        # The finite check reads each step's values one step late, so the GPU never waits for the host; a step that
        # is logged, evaluated or saved is checked at once, so no checkpoint holds a bad update.
        if pending is not None:
            pending.numbers(run.saved)
        pending = result.readback
        log_due, eval_due, save_due = _due(cfg, step, run.stop)
        # A signal arriving from here on is seen at the next step; several ranks agree where they sync.
        stopping = stopper.signal if not dist.enabled else (
            dist.agree_stop(stopper.signal, step_fn.device) if log_due else None)
        numbers = None
        if log_due or save_due or stopping:
            numbers, pending = pending.numbers(run.saved), None
        log.advance()

        metrics = _logged_metrics(numbers, result, step_fn, clock) if log_due else {}
        if eval_due and dist.is_main:
            metrics["eval/miou_oracle"] = _evaluate_for_oracle(run, step)
        if metrics:
            log.log(step, metrics)
        if save_due or stopping:
            _save(run, step, metrics)
        if stopping:
            log.message(f"{stopping}: stopped after step {step}; checkpoint {run.saved}; continue with --resume")
            return TrainResult(run.out, step, run.saved, stopping, run.oracle)
    return TrainResult(run.out, run.stop, run.saved, None, run.oracle)


def _due(cfg: TrainConfig, step: int, stop: int) -> tuple[bool, bool, bool]:
    """Whether ``step`` (1-based) is logged, evaluated and saved; the last step is all three (eval if enabled)."""
    log_due = step % cfg.log_every == 0 or step == stop
    eval_due = cfg.eval_every > 0 and (step % cfg.eval_every == 0 or step == stop)
    save_due = bool(cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == stop or eval_due
    return log_due, eval_due, save_due


class _DataClock:
    """How long the loop waited for batches, as a share of the wall time since the previous logging step."""

    def __init__(self) -> None:
        self.waited, self.since = 0.0, time.perf_counter()

    @contextlib.contextmanager
    def waiting(self):
        tick = time.perf_counter()
        yield
        self.waited += time.perf_counter() - tick

    def share(self) -> float:
        """The share since the previous call (or the start), and start counting anew."""
        now = time.perf_counter()
        share, self.waited, self.since = self.waited / max(now - self.since, 1e-9), 0.0, now
        return share


def _logged_metrics(numbers: dict[str, float], result: StepResult, step_fn: TrainStep, clock: _DataClock) -> dict:
    """A logging step's record: losses and gradient norms, G's learning rate, feature norms, the data share."""
    metrics = {**numbers, "lr": step_fn.opt_g.param_groups[0]["lr"], "feat_norm/src": _mean_norm(result.src.features),
               "time/data_share": clock.share()}
    if result.tgt is not None:
        metrics["feat_norm/tgt"] = _mean_norm(result.tgt.features)
    return metrics


def _mean_norm(features: Tensor) -> float:
    """Mean per-position L2 norm of the layer4 features (what the norm loss grows)."""
    return float(features.detach().float().norm(dim=1).mean())


def _evaluate_for_oracle(run: _Run, step: int) -> float:
    """Evaluate on target val now and keep the best step so far as ``run.oracle`` (a selection on labels)."""
    miou = _evaluate(run.step_fn.model, run.data.val, run.cfg, run.step_fn.device)
    if run.oracle is None or miou > run.oracle["miou"]:
        run.oracle = {"step": step, "miou": miou}
    return miou


def _evaluate(model: nn.Module, split: LabelledSplit, cfg: TrainConfig, device: torch.device) -> float:
    """mIoU (percent) of ``model`` on ``split`` under the AdaptSegNet protocol at ``eval.size``; back to training
    mode afterwards."""
    predictor = ModelPredictor(model, flip=cfg.eval.flip, device=device)
    try:
        result = evaluate([predictor], split, ADAPTSEGNET.at(cfg.eval.size), progress=False)
    finally:
        model.train()
    return 100.0 * result[predictor.name].miou


def _save(run: _Run, step: int, metrics: dict) -> None:
    """Checkpoint ``step`` (rank 0 writes, every rank records the path): weights, resume state and provenance; the
    ``last`` link, ``oracle_best`` when this step evaluated best, and pruning to ``keep_checkpoints``."""
    path = checkpoint_path(run.out, step)
    if run.dist.is_main:
        cfg, model = run.cfg, run.step_fn.model
        meta = {**run.provenance, "step": step, "steps": cfg.steps, "metrics": metrics, "oracle": run.oracle}
        save_checkpoint(path, model_state=model.state_dict(), model_config=model.config, meta=meta,
                        train_state=train_state(step, run.step_fn, run.oracle, run.dist),
                        extra_config={"train": config_to_dict(cfg)}, overwrite=True)  # a step saved before a resume
        link_checkpoint(path, LAST)
        if run.oracle is not None and run.oracle["step"] == step:
            link_checkpoint(path, ORACLE_BEST)
        if cfg.keep_checkpoints:
            prune_checkpoints(run.out, cfg.keep_checkpoints)
    run.saved, run.saved_step = path, step


def _provenance(cfg: TrainConfig, step_fn: TrainStep, dist_env: DistEnv) -> dict:
    """What every checkpoint's meta.json records about where the run came from."""
    def spec(text: str) -> str | None:
        return "{}:{}".format(*parse_dataset_spec(text)) if text else None

    provenance = {"method": cfg.method, "config_hash": config_hash(cfg), "source": spec(cfg.data.source),
                  "target": spec(cfg.data.target), "init": step_fn.init_report or (cfg.init or None)}
    if dist_env.enabled:
        provenance["distributed"] = {"world_size": dist_env.world_size, "sync_bn": cfg.sync_bn}
    return provenance


__all__ = ["train", "TrainResult", "TrainingInterrupted", "StopRequest"]
