"""The training loop of all six methods (DESIGN.md §6, methods.md §4), with checkpoint/resume and a clean stop.

Per step i: set the learning rates (warm-up + poly, heads 10×); one G forward on the source batch, its losses, one
backward; one G forward on the target batch, its losses, one backward (D frozen); the discriminator losses on the
detached predictions of those same forwards, one backward; a finite check of every loss and gradient norm; one SGD
step for G and one Adam step for D. Nothing else runs G. A run folder holds ``config.json`` (the resolved config),
``metrics.jsonl``, ``tb/`` and ``checkpoints/step_NNNNNN`` folders with a ``last`` link to the newest.
"""
from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ftadapt.checkpoint import load_checkpoint, save_checkpoint
from ftadapt.config import TrainConfig, config_hash, config_to_dict
from ftadapt.data.cityscapes import Cityscapes
from ftadapt.data.gta5 import GTA5
from ftadapt.data.loader import endless_batches
from ftadapt.data.synthia import SYNTHIA
from ftadapt.errors import CheckpointError, DatasetError, FtadaptError, UsageError
from ftadapt.losses import upsample_logits
from ftadapt.methods import DomainOutput, StepContext, create_method
from ftadapt.models.convert import load_init_weights
from ftadapt.models.deeplab import optim_param_groups
from ftadapt.models.discriminator import FCDiscriminator
from ftadapt.models.registry import create_model
from ftadapt.runlog import (LAST, ORACLE_BEST, RunLog, checkpoint_path, link_checkpoint, prepare_run_dir,
                            resolve_config, write_run_config)
from ftadapt.schedules import warmup_poly_lr

SOURCES = {"gta5": GTA5, "synthia": SYNTHIA}
DatasetSpec = tuple[str, Path]  # ("gta5", root), as ``cli.parse_dataset_spec`` returns


class TrainingDiverged(FtadaptError):
    """A loss term or gradient norm became NaN/Inf; the run stopped without writing a checkpoint."""


@dataclass
class TrainResult:
    """How a ``train`` call ended. ``stopped_by`` names the signal that ended it early (SIGINT/SIGTERM), if any."""

    run_dir: Path
    step: int
    checkpoint: Path | None
    stopped_by: str | None = None
    oracle: dict | None = None  # best periodic evaluation {"step", "miou"}: selection on target val ("oracle")


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


def train(cfg: TrainConfig, *, source: DatasetSpec, target: DatasetSpec | None, out: str | Path,
          init: str | Path | None = None, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``cfg.method`` on ``source`` (labelled) → ``target`` (unlabelled Cityscapes train) into the run folder
    ``out``; with ``resume``, continue the run in ``out`` from its last checkpoint, bit-for-bit on the CPU."""
    out = Path(out)
    method = create_method(cfg.method, cfg.loss)
    previous = prepare_run_dir(out, cfg, resume=resume)
    if init is not None and not Path(init).exists():
        raise UsageError(f"--init {init}: no such file or folder (a checkpoint folder or an official .pth file)")
    _seed_everything(cfg.seed)
    model = create_model(cfg.model)
    method.check_model(model.config.heads)
    disc = FCDiscriminator(model.config.num_classes) if method.uses_discriminator else None
    init_report = load_init_weights(model, init) if init is not None and previous is None else None
    data = _open_datasets(cfg, source, target, needs_target=method.uses_target,
                          doctor=cfg.check_data and previous is None, progress=progress)
    device = _device(cfg.device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format).train()
    opt_g = torch.optim.SGD(optim_param_groups(model, cfg.optim.lr), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                            weight_decay=cfg.optim.weight_decay)
    opt_d = None
    if disc is not None:
        disc.to(device, memory_format=memory_format).train()
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.optim.d_lr, betas=cfg.optim.d_betas,
                                 weight_decay=cfg.optim.d_weight_decay)
    start, oracle = 0, None
    if previous is not None:
        start, oracle = _restore(previous, model, disc, opt_g, opt_d)
    else:
        write_run_config(out, cfg)
    stop = cfg.stop_at or cfg.steps
    if start >= stop:
        return TrainResult(out, start, previous, oracle=oracle)
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")
    g_params = [p for group in opt_g.param_groups for p in group["params"]]
    target_hw = (cfg.data.target_size[1], cfg.data.target_size[0])
    provenance = {"method": cfg.method, "config_hash": config_hash(cfg), "source": f"{source[0]}:{source[1]}",
                  "target": f"{target[0]}:{target[1]}" if target else None,
                  "init": init_report or (str(init) if init else None)}

    def forward(batch: dict, size_hw: tuple[int, int] | None) -> DomainOutput:
        image = batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        label = batch["label"].to(device, non_blocking=True) if "label" in batch else None
        with autocast:
            out_ = model(image)
        size_hw = tuple(label.shape[-2:]) if label is not None else size_hw
        return DomainOutput(tuple(upsample_logits(x.float(), size_hw) for x in out_.logits), out_.features, label)

    def checkpoint(step: int, metrics: dict) -> Path:
        path = checkpoint_path(out, step)
        save_checkpoint(path, model_state=model.state_dict(), model_config=model.config,
                        meta={**provenance, "step": step, "steps": cfg.steps, "metrics": metrics, "oracle": oracle},
                        train_state=_train_state(step, disc, opt_g, opt_d, oracle),
                        extra_config={"train": config_to_dict(cfg)})
        link_checkpoint(path, LAST)
        return path

    log = RunLog(out, start_step=start, total_steps=stop, tensorboard=cfg.tensorboard, progress=progress)
    batches = [endless_batches(ds, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers,
                               seed=cfg.seed + k, start_step=start) for k, ds in enumerate((data.source, data.target))
               if ds is not None]
    saved, stopper, data_seconds, t0 = previous, StopRequest(), 0.0, time.perf_counter()
    pending: _Readback | None = None
    try:
        with stopper.installed(), contextlib.ExitStack() as stack:
            for b in batches:
                stack.enter_context(b)
            for i in range(start, stop):
                step = i + 1
                ctx = StepContext(i, cfg.steps, model, model.config.heads, model.config.head_rule, disc)
                _set_lr(opt_g, cfg.optim.lr, i, cfg)
                opt_g.zero_grad(set_to_none=True)
                if disc is not None:
                    _set_lr(opt_d, cfg.optim.d_lr, i, cfg)
                    opt_d.zero_grad(set_to_none=True)
                    disc.requires_grad_(False)  # G's adversarial term must not train D
                tick = time.perf_counter()
                src_batch = next(batches[0])
                tgt_batch = next(batches[1]) if method.uses_target else None
                data_seconds += time.perf_counter() - tick

                src = forward(src_batch, None)
                with autocast:
                    losses = method.source_losses(ctx, src)
                _backward(losses)
                tgt = None
                if tgt_batch is not None:
                    tgt = forward(tgt_batch, target_hw)
                    with autocast:
                        target_losses = method.target_losses(ctx, tgt)
                    _backward(target_losses)
                    losses.update(target_losses)
                if disc is not None:
                    disc.requires_grad_(True)
                    with autocast:  # reads only detached predictions of the forwards above
                        d_losses = method.discriminator_losses(ctx, src, tgt)
                    _backward(d_losses)
                    losses.update(d_losses)

                values = {f"loss/{k}": v for k, v in losses.items()}
                values["grad_norm/G"] = _grad_norm(g_params)
                if disc is not None:
                    values["grad_norm/D"] = _grad_norm(disc.parameters())
                # The finite check reads each step's values one step late, so the GPU never waits for the host; a
                # step that is logged, evaluated or saved is checked at once, so no checkpoint holds a bad update.
                readback = _Readback.start(step, values)
                if pending is not None:
                    pending.numbers(saved)
                pending = readback
                stopping = stopper.signal  # a signal arriving from here on is seen at the next step
                log_due = step % cfg.log_every == 0 or step == stop
                eval_due = cfg.eval_every > 0 and (step % cfg.eval_every == 0 or step == stop)
                save_due = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == stop or eval_due \
                    or stopping
                numbers = None
                if log_due or save_due:
                    numbers, pending = readback.numbers(saved), None
                opt_g.step()
                if opt_d is not None:
                    opt_d.step()
                log.advance()

                metrics: dict = {}
                if log_due:
                    elapsed, t0 = time.perf_counter() - t0, time.perf_counter()
                    metrics = {**numbers, "lr": opt_g.param_groups[0]["lr"],
                               "feat_norm/src": _mean_norm(src.features),
                               "time/data_share": data_seconds / max(elapsed, 1e-9)}
                    if tgt is not None:
                        metrics["feat_norm/tgt"] = _mean_norm(tgt.features)
                    data_seconds = 0.0
                if eval_due:
                    miou = _evaluate(model, data.val, cfg, device)
                    metrics["eval/miou_oracle"] = miou
                    if oracle is None or miou > oracle["miou"]:
                        oracle = {"step": step, "miou": miou}
                if metrics:
                    log.log(step, metrics)
                if save_due:
                    saved = checkpoint(step, metrics)
                    if oracle is not None and oracle["step"] == step:
                        link_checkpoint(saved, ORACLE_BEST)
                if stopping:
                    log.message(f"{stopping}: stopped after step {step}; checkpoint {saved}; continue with --resume")
                    return TrainResult(out, step, saved, stopping, oracle)
    finally:
        log.close()
    return TrainResult(out, stop, saved, None, oracle)


def _backward(losses: dict[str, Tensor]) -> None:
    if losses:
        sum(losses.values()).backward()


def _set_lr(optimizer: torch.optim.Optimizer, base: float, step: int, cfg: TrainConfig) -> None:
    factor = warmup_poly_lr(1.0, step, cfg.steps, cfg.optim.warmup_steps, cfg.optim.power)
    for group in optimizer.param_groups:
        group["lr"] = base * factor * group.get("lr_mult", 1.0)


def _grad_norm(params) -> Tensor:
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


@dataclass
class _Readback:
    """A step's losses and gradient norms on their way to the host: the copy is queued right behind them (pinned,
    non-blocking on CUDA), and ``numbers`` waits only for that copy, not for the work queued after it."""

    step: int
    names: list[str]
    host: Tensor
    event: torch.cuda.Event | None

    @classmethod
    def start(cls, step: int, values: dict[str, Tensor]) -> _Readback:
        stacked = torch.stack([v.detach().float() for v in values.values()])
        if stacked.device.type != "cuda":
            return cls(step, list(values), stacked, None)
        host = torch.empty(stacked.shape, pin_memory=True)
        host.copy_(stacked, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return cls(step, list(values), host, event)

    def numbers(self, last_good: Path | None) -> dict[str, float]:
        """The values as floats, or TrainingDiverged naming every non-finite one."""
        if self.event is not None:
            self.event.synchronize()
        numbers = dict(zip(self.names, self.host.tolist()))
        bad = [f"{k.removeprefix('loss/')}={v}" for k, v in numbers.items() if not math.isfinite(v)]
        if bad:
            kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written"
            raise TrainingDiverged(f"step {self.step}: non-finite {', '.join(bad)}; the run stopped and saved nothing "
                                   f"after it; {kept}. Lower the learning rate or the loss weights (--set optim.lr=…)")
        return numbers


def _mean_norm(features: Tensor) -> float:
    """Mean per-position L2 norm of the layer4 features (what the norm loss grows)."""
    return float(features.detach().float().norm(dim=1).mean())


def _evaluate(model: nn.Module, dataset, cfg: TrainConfig, device: torch.device) -> float:
    from ftadapt.evaluate_model import evaluate_dataset

    model.eval()
    try:
        result = evaluate_dataset(model, dataset, flip=cfg.eval.flip, device=device, num_workers=cfg.data.num_workers,
                                  progress=False)
    finally:
        model.train()
    return 100.0 * result.miou


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device={name!r} but CUDA is not available; use --set device=cpu (or auto)")
    return device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """torch / numpy / python RNG states as weights_only-loadable tensors, numbers and lists."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)},
             "python": {"version": version, "state": list(py_state), "gauss": gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _train_state(step: int, disc: nn.Module | None, opt_g, opt_d, oracle: dict | None) -> dict:
    """Everything besides the model weights that a bit-for-bit resume needs. The data position is the step: the
    loaders are pure functions of (seed, step)."""
    state = {"step": step, "optimizer": opt_g.state_dict(), "rng": _rng_state(), "oracle": oracle or {}}
    if disc is not None:
        state.update(discriminator=disc.state_dict(), optimizer_d=opt_d.state_dict())
    return state


def _restore(path: Path, model: nn.Module, disc: nn.Module | None, opt_g, opt_d) -> tuple[int, dict | None]:
    ckpt = load_checkpoint(path, with_train_state=True)
    state = ckpt.train_state
    model.load_state_dict(ckpt.state_dict)
    opt_g.load_state_dict(state["optimizer"])
    if disc is not None:
        if "discriminator" not in state:
            raise CheckpointError(f"{path} has no discriminator state; it was not written by an adversarial run")
        disc.load_state_dict(state["discriminator"])
        opt_d.load_state_dict(state["optimizer_d"])
    _set_rng_state(state["rng"])
    return int(state["step"]), state["oracle"] or None


@dataclass
class _Datasets:
    source: Dataset
    target: Dataset | None
    val: Dataset | None


def _open_datasets(cfg: TrainConfig, source: DatasetSpec, target: DatasetSpec | None, *, needs_target: bool,
                   doctor: bool, progress: bool) -> _Datasets:
    """The training sets (and target val for ``eval_every``); with ``doctor`` each root must pass the dataset doctor."""
    kind, root = source
    if kind not in SOURCES:
        raise UsageError(f"--source {kind}:{root}: the labelled source must be one of {', '.join(SOURCES)}")
    if target is None and (needs_target or cfg.eval_every):
        why = f"method {cfg.method}" if needs_target else "eval_every"
        raise UsageError(f"{why} needs the target: --target cityscapes:ROOT")
    if target is not None and target[0] != "cityscapes":
        raise UsageError(f"--target {target[0]}:{target[1]}: the unlabelled target must be cityscapes:ROOT")
    if doctor:
        _doctor(kind, root, None, progress)
        if target is not None and (needs_target or cfg.eval_every):
            splits = ["train"] * needs_target + [cfg.eval.split] * (cfg.eval_every > 0)
            _doctor("cityscapes", target[1], splits, progress)
    src = SOURCES[kind](root, size=cfg.data.source_size, augment=cfg.data.augment)
    tgt = val = None
    if needs_target:
        tgt = Cityscapes(target[1], split="train", size=cfg.data.target_size, augment=cfg.data.augment,
                         with_labels=False)
    if cfg.eval_every:
        val = Cityscapes(target[1], split=cfg.eval.split, size=cfg.eval.size, with_labels=True)
    return _Datasets(src, tgt, val)


def _doctor(kind: str, root: Path, splits: list[str] | None, progress: bool) -> None:
    from ftadapt.data.check import check_dataset

    report = check_dataset(kind, root, splits=splits, progress=progress)
    if not report.usable:
        problems = [p for s in report.splits for p in s.problems if p.severity == "error"][:3]
        empty = [s.split or kind for s in report.splits if s.n_images == 0]
        found = "; ".join([f"{p.kind} {p.path}: {p.detail}" for p in problems] + [f"{e}: no images" for e in empty])
        raise DatasetError(f"{kind}:{root} fails the dataset doctor ({found}); `ftadapt data check --dataset {kind} "
                           f"--root {root}` lists every problem (or skip this check with --set check_data=false)")


__all__ = ["train", "resolve_config", "TrainResult", "TrainingDiverged", "StopRequest", "DatasetSpec"]
