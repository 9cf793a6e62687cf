"""The training loop of all six methods (DESIGN.md §6, methods.md §4), with checkpoint/resume and a clean stop.

Per step i: set the learning rates (warm-up + poly, heads 10×); one G forward on the source batch, its losses, one
backward; one G forward on the target batch, its losses, one backward (D frozen); the discriminator losses on the
detached predictions of those same forwards, one backward; a finite check of every loss and gradient norm; one SGD
step for G and one Adam step for D. Nothing else runs G. That step is :class:`TrainStep`, which ``ftadapt bench
train-step`` times. A run folder holds ``config.json`` (the resolved config), ``metrics.jsonl``, ``tb/`` and
``checkpoints/step_NNNNNN`` folders with a ``last`` link to the newest. Under ``torchrun`` the same loop trains
data-parallel (``ftadapt.distributed``); rank 0 writes the run folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
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
from ftadapt.data.transforms import scaled_size
from ftadapt.data.synthia import SYNTHIA
from ftadapt.distributed import SINGLE, DistEnv, distributed
from ftadapt.errors import CheckpointError, FtadaptError, UsageError
from ftadapt.data.check import require_usable
from ftadapt.graphed import GraphedModel
from ftadapt.methods import DomainOutput, Method, StepContext, create_method
from ftadapt.models.speed import set_speed_option
from ftadapt.models.convert import load_init_weights
from ftadapt.models.deeplab import DeepLabV2, optim_param_groups, upsample_logits
from ftadapt.models.discriminator import FCDiscriminator
from ftadapt.models.registry import create_model
from ftadapt.protocol import RANDOM_SCALES
from ftadapt.runlog import (LAST, ORACLE_BEST, RunLog, checkpoint_path, link_checkpoint, prepare_run_dir,
                            prune_checkpoints, resolve_config, write_run_config)
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
          init: str | Path | None = None, resume: bool = False, progress: bool = True,
          sync_bn: bool = False) -> TrainResult:
    """Train ``cfg.method`` on ``source`` (labelled) → ``target`` (unlabelled Cityscapes train) into the run folder
    ``out``; with ``resume``, continue the run in ``out`` from its last checkpoint, bit-for-bit on the CPU.

    Under ``torchrun`` (several processes) this is data-parallel training, see ``ftadapt.distributed``; ``sync_bn``
    then normalises with BatchNorm statistics over all ranks' images instead of each rank's own (the reference).
    """
    with distributed(cfg.device) as dist_env:
        return _train(cfg, source=source, target=target, out=Path(out), init=init, resume=resume,
                      progress=progress and dist_env.is_main, dist_env=dist_env, sync_bn=sync_bn)


def _train(cfg: TrainConfig, *, source: DatasetSpec, target: DatasetSpec | None, out: Path, init: str | Path | None,
           resume: bool, progress: bool, dist_env: DistEnv, sync_bn: bool) -> TrainResult:
    method = create_method(cfg.method, cfg.loss)
    previous = prepare_run_dir(out, cfg, resume=resume)
    if init is not None and not Path(init).exists():
        raise UsageError(f"--init {init}: no such file or folder (a checkpoint folder or an official .pth file)")
    _seed_everything(cfg.seed)
    model = create_model(cfg.model)
    method.check_model(model.config.heads)
    disc = FCDiscriminator(model.config.num_classes) if method.uses_discriminator else None
    init_report = load_init_weights(model, init) if init is not None and previous is None else None
    device = dist_env.device(cfg.device)
    check_step_options(cfg, device, dist_env)
    data = _open_datasets(cfg, source, target, needs_target=method.uses_target,
                          doctor=cfg.check_data and previous is None and dist_env.is_main, progress=progress)
    step_fn = TrainStep(cfg, method, model, disc, device, dist_env=dist_env, sync_bn=sync_bn)
    start, oracle = 0, None
    if previous is not None:
        start, oracle = _restore(previous, step_fn, dist_env)
    dist_env.barrier()  # every rank has checked the run folder before rank 0 writes into it
    if previous is None and dist_env.is_main:
        write_run_config(out, cfg)
    stop = cfg.stop_at or cfg.steps
    if start >= stop:
        return TrainResult(out, start, previous, oracle=oracle)
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    step_fn.capture_graphs(input_shapes(cfg, method.uses_target))  # before the loaders' threads start
    provenance = {"method": cfg.method, "config_hash": config_hash(cfg), "source": f"{source[0]}:{source[1]}",
                  "target": f"{target[0]}:{target[1]}" if target else None,
                  "init": init_report or (str(init) if init else None)}
    if dist_env.enabled:
        provenance["distributed"] = {"world_size": dist_env.world_size, "sync_bn": sync_bn}

    def checkpoint(step: int, metrics: dict) -> Path:
        path = checkpoint_path(out, step)
        if not dist_env.is_main:
            return path
        save_checkpoint(path, model_state=model.state_dict(), model_config=model.config,
                        meta={**provenance, "step": step, "steps": cfg.steps, "metrics": metrics, "oracle": oracle},
                        train_state=_train_state(step, step_fn, oracle, dist_env),
                        extra_config={"train": config_to_dict(cfg)})
        link_checkpoint(path, LAST)
        return path

    log = (RunLog(out, start_step=start, total_steps=stop, tensorboard=cfg.tensorboard, progress=progress)
           if dist_env.is_main else _SilentLog())
    batches = [endless_batches(ds, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers,
                               seed=cfg.seed + k, start_step=start, rank=dist_env.rank,
                               world_size=dist_env.world_size)
               for k, ds in enumerate((data.source, data.target)) if ds is not None]
    saved, stopper, data_seconds, t0 = previous, StopRequest(), 0.0, time.perf_counter()
    pending: _Readback | None = None
    try:
        with stopper.installed(), contextlib.ExitStack() as stack:
            for b in batches:
                stack.enter_context(b)
            for i in range(start, stop):
                step = i + 1
                tick = time.perf_counter()
                src_batch = next(batches[0])
                tgt_batch = next(batches[1]) if method.uses_target else None
                data_seconds += time.perf_counter() - tick
                result = step_fn(i, src_batch, tgt_batch)
                # The finite check reads each step's values one step late, so the GPU never waits for the host; a
                # step that is logged, evaluated or saved is checked at once, so no checkpoint holds a bad update.
                if pending is not None:
                    pending.numbers(saved)
                pending = result.readback
                log_due = step % cfg.log_every == 0 or step == stop
                eval_due = cfg.eval_every > 0 and (step % cfg.eval_every == 0 or step == stop)
                # A signal arriving from here on is seen at the next step; several ranks agree where they sync.
                stopping = stopper.signal if not dist_env.enabled else (
                    dist_env.agree_stop(stopper.signal, device) if log_due else None)
                save_due = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == stop or eval_due \
                    or stopping
                numbers = None
                if log_due or save_due:
                    numbers, pending = result.readback.numbers(saved), None
                log.advance()

                metrics: dict = {}
                if log_due:
                    elapsed, t0 = time.perf_counter() - t0, time.perf_counter()
                    metrics = {**numbers, "lr": step_fn.opt_g.param_groups[0]["lr"],
                               "feat_norm/src": _mean_norm(result.src.features),
                               "time/data_share": data_seconds / max(elapsed, 1e-9)}
                    if result.tgt is not None:
                        metrics["feat_norm/tgt"] = _mean_norm(result.tgt.features)
                    data_seconds = 0.0
                if eval_due and dist_env.is_main:
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
                    if cfg.keep_checkpoints and dist_env.is_main:
                        prune_checkpoints(out, cfg.keep_checkpoints)
                if stopping:
                    log.message(f"{stopping}: stopped after step {step}; checkpoint {saved}; continue with --resume")
                    return TrainResult(out, step, saved, stopping, oracle)
    finally:
        log.close()
    dist_env.barrier()  # the last checkpoint is written before any rank reports it
    return TrainResult(out, stop, saved, None, oracle)


@dataclass
class StepResult:
    """One step's outputs: its losses and gradient norms on their way to the host, and both domains' forwards."""

    readback: _Readback
    src: DomainOutput
    tgt: DomainOutput | None


class TrainStep:
    """One training step of G (and D): what ``train`` runs per step and ``ftadapt bench train-step`` times.

    Builds the optimizers (and the DDP wrappers when several processes run) around ``model`` and ``disc`` and puts
    them on ``device``. A call ``step(i, src_batch, tgt_batch)`` sets the learning rates of step ``i`` (warm-up + poly,
    heads 10×); runs one G forward on the source batch, its losses, one backward; one G forward on the target batch,
    its losses, one backward (D frozen); the discriminator losses on the detached predictions of those same forwards,
    one backward; queues every loss and gradient norm for the host; and applies one SGD step to G and one Adam step
    to D. Nothing in it waits for the GPU. Under DDP all of G's backward passes but the last run under ``no_sync``, so
    its gradients are all-reduced once per step. With ``cuda_graphs`` G's forward and backward of each domain are
    replayed from CUDA graphs (``ftadapt.graphed``); everything else stays as described.
    """

    def __init__(self, cfg: TrainConfig, method: Method, model: DeepLabV2, disc: nn.Module | None,
                 device: torch.device, *, dist_env: DistEnv = SINGLE, sync_bn: bool = False) -> None:
        check_step_options(cfg, device, dist_env)
        self.cfg, self.method, self.model, self.disc, self.dist = cfg, method, model, disc, dist_env
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.device = device
        set_speed_option("channel_multiple", cfg.channel_multiple, model, disc)
        set_speed_option("space_to_batch", cfg.space_to_batch, model)
        model.to(device, memory_format=self.memory_format).train()
        # fused: one kernel per update on CUDA; on the CPU one pass over memory (Adam on D: 6× faster than per-tensor).
        self.opt_g = torch.optim.SGD(optim_param_groups(model, cfg.optim.lr), lr=cfg.optim.lr,
                                     momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay, fused=True)
        self.opt_d = None
        if disc is not None:
            disc.to(device, memory_format=self.memory_format).train()
            self.opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.optim.d_lr, betas=cfg.optim.d_betas,
                                          weight_decay=cfg.optim.d_weight_decay, fused=True)
        self.g_params = [p for group in self.opt_g.param_groups for p in group["params"]]
        if sync_bn and dist_env.enabled and device.type != "cuda":
            raise UsageError("sync_bn needs CUDA devices (PyTorch's SyncBatchNorm does not run on the CPU)")
        net: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync_bn and dist_env.enabled else model
        net = _compiled(net, cfg.compile)
        # G's last backward of a step need not reach every head (norm-only's target term reads only the features).
        self.g_net = dist_env.data_parallel(net, device, find_unused_parameters=True)
        self.d_net = dist_env.data_parallel(disc, device) if disc is not None else None
        self.g_graphs = GraphedModel(model) if cfg.cuda_graphs else None
        # CUDA graphs replay the casts they captured: autocast must not hand out cached casts of the weights.
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16",
                                       cache_enabled=not cfg.cuda_graphs)
        self.target_hw = (cfg.data.target_size[1], cfg.data.target_size[0])

    def capture_graphs(self, shapes: dict[str, list[tuple[int, ...]]]) -> None:
        """With ``cuda_graphs``: capture G's graphs now for every (domain, image shape) in ``shapes`` (as
        ``input_shapes`` lists them), so that no capture runs beside the loaders' pinning threads and none stalls
        a step later; the weights and BN statistics are left as they were. Without ``cuda_graphs``: nothing."""
        if self.g_graphs is None:
            return
        for domain, domain_shapes in shapes.items():
            for shape in domain_shapes:
                with self.autocast:
                    self.g_graphs.capture(domain, self._device_image(torch.zeros(shape)))

    def _device_image(self, image: Tensor) -> Tensor:
        return image.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def _forward(self, domain: str, batch: dict, size_hw: tuple[int, int] | None) -> DomainOutput:
        image = self._device_image(batch["image"])
        label = batch["label"].to(self.device, non_blocking=True) if "label" in batch else None
        with self.autocast:
            out = self.g_graphs(domain, image) if self.g_graphs is not None else self.g_net(image)
        size_hw = tuple(label.shape[-2:]) if label is not None else size_hw
        return DomainOutput(tuple(upsample_logits(x.float(), size_hw) for x in out.logits), out.features, label)

    def __call__(self, i: int, src_batch: dict, tgt_batch: dict | None) -> StepResult:
        cfg, method, disc = self.cfg, self.method, self.disc
        ctx = StepContext(i, cfg.steps, self.model, self.model.config.heads, self.model.config.head_rule, disc)
        if cfg.compile == "reduce-overhead":  # the previous step's CUDA-graph outputs are dead from here on
            torch.compiler.cudagraph_mark_step_begin()
        _set_lr(self.opt_g, cfg.optim.lr, i, cfg)
        self.opt_g.zero_grad(set_to_none=True)
        if disc is not None:
            _set_lr(self.opt_d, cfg.optim.d_lr, i, cfg)
            self.opt_d.zero_grad(set_to_none=True)
            disc.requires_grad_(False)  # G's adversarial term must not train D
        with self.dist.no_sync(self.g_net, skip=tgt_batch is not None):
            src = self._forward("source", src_batch, None)
            with self.autocast:
                losses = method.source_losses(ctx, src)
            _backward(losses)
        tgt = None
        if tgt_batch is not None:
            tgt = self._forward("target", tgt_batch, self.target_hw)
            with self.autocast:
                target_losses = method.target_losses(ctx, tgt)
            _backward(target_losses)
            losses.update(target_losses)
        if disc is not None:
            disc.requires_grad_(True)
            with self.autocast:  # reads only detached predictions of the forwards above
                d_losses = method.discriminator_losses(dataclasses.replace(ctx, discriminator=self.d_net), src, tgt)
            _backward(d_losses)
            losses.update(d_losses)

        values = {f"loss/{k}": v for k, v in losses.items()}
        values["grad_norm/G"] = _grad_norm(self.g_params)
        if disc is not None:
            values["grad_norm/D"] = _grad_norm(disc.parameters())
        readback = _Readback.start(i + 1, values, self.dist)
        self.opt_g.step()
        if self.opt_d is not None:
            self.opt_d.step()
        return StepResult(readback, src, tgt)


def input_shapes(cfg: TrainConfig, uses_target: bool) -> dict[str, list[tuple[int, ...]]]:
    """The N×3×H×W image shapes G sees per domain ("source", "target"): each domain's size at every scale of CLAN's
    random rescale (×1, ×1.1, ×0.8) with ``data.augment``, else at its size alone."""
    scales = [1.0] + ([scale for _, scale in RANDOM_SCALES] if cfg.data.augment else [])
    sizes = {"source": cfg.data.source_size, **({"target": cfg.data.target_size} if uses_target else {})}
    return {domain: [(cfg.data.batch_size, 3, h, w) for w, h in dict.fromkeys(scaled_size(size, s) for s in scales)]
            for domain, size in sizes.items()}


def _compiled(net: nn.Module, mode: str) -> nn.Module:
    """``net`` under torch.compile, one static graph per input shape (CLAN's random scale gives three per domain;
    automatic dynamic shapes would recompile the whole network symbolically, which takes longer than training
    minutes). "reduce-overhead" replays each graph's forward and backward as CUDA graphs."""
    if mode == "off":
        return net
    return torch.compile(net, dynamic=False, mode=None if mode == "default" else mode)


def check_step_options(cfg: TrainConfig, device: torch.device, dist_env: DistEnv) -> None:
    """UsageError for execution options this device and process group cannot run (before any work is done)."""
    if cfg.compile != "off" and dist_env.enabled:
        raise UsageError(f"compile={cfg.compile} with several processes is not supported yet; train with "
                         "--set compile=off under torchrun")
    if not cfg.cuda_graphs:
        return
    fix = "train with --set cuda_graphs=false"
    if device.type != "cuda":
        raise UsageError(f"cuda_graphs=true needs a CUDA device, not {device}; {fix}")
    if cfg.compile != "off":
        raise UsageError(f"cuda_graphs=true with compile={cfg.compile}: choose one (compile=reduce-overhead is "
                         f"torch.compile with CUDA graphs); {fix} or --set compile=off")
    if dist_env.enabled:
        raise UsageError(f"cuda_graphs=true with several processes is not supported yet; {fix} under torchrun")


class _SilentLog:
    """The RunLog of ranks other than 0: they write and print nothing."""

    def advance(self) -> None:
        pass

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


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
    non-blocking on CUDA), and ``numbers`` waits only for that copy, not for the work queued after it. Under DDP the
    values are the means over ranks (gradient norms are equal anyway), so every rank stops at the same bad step."""

    step: int
    names: list[str]
    host: Tensor
    event: torch.cuda.Event | None

    @classmethod
    def start(cls, step: int, values: dict[str, Tensor], dist_env: DistEnv = SINGLE) -> _Readback:
        stacked = dist_env.mean_(torch.stack([v.detach().float() for v in values.values()]))
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


def _train_state(step: int, step_fn: TrainStep, oracle: dict | None, dist_env: DistEnv) -> dict:
    """Everything besides the model weights that a bit-for-bit resume needs. The data position is the step: the
    loaders are pure functions of (seed, step, rank, world size)."""
    state = {"step": step, "optimizer": step_fn.opt_g.state_dict(), "rng": _rng_state(), "oracle": oracle or {},
             "world_size": dist_env.world_size}
    if step_fn.disc is not None:
        state.update(discriminator=step_fn.disc.state_dict(), optimizer_d=step_fn.opt_d.state_dict())
    return state


def _restore(path: Path, step_fn: TrainStep, dist_env: DistEnv) -> tuple[int, dict | None]:
    ckpt = load_checkpoint(path, with_train_state=True)
    state = ckpt.train_state
    world_size = int(state.get("world_size", 1))
    if world_size != dist_env.world_size:
        raise UsageError(f"--resume: {path} was written by a run of {world_size} process(es) and the data order "
                         f"depends on it; resume with {world_size} (torchrun --nproc-per-node {world_size}), not "
                         f"{dist_env.world_size}")
    step_fn.model.load_state_dict(ckpt.state_dict)
    step_fn.opt_g.load_state_dict(state["optimizer"])
    if step_fn.disc is not None:
        if "discriminator" not in state:
            raise CheckpointError(f"{path} has no discriminator state; it was not written by an adversarial run")
        step_fn.disc.load_state_dict(state["discriminator"])
        step_fn.opt_d.load_state_dict(state["optimizer_d"])
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
        skip = " (or skip this check with --set check_data=false)"
        require_usable(kind, root, None, progress=progress, skip_hint=skip)
        if target is not None and (needs_target or cfg.eval_every):
            splits = ["train"] * needs_target + [cfg.eval.split] * (cfg.eval_every > 0)
            require_usable("cityscapes", target[1], splits, progress=progress, skip_hint=skip)
    src = SOURCES[kind](root, size=cfg.data.source_size, augment=cfg.data.augment)
    tgt = val = None
    if needs_target:
        tgt = Cityscapes(target[1], split="train", size=cfg.data.target_size, augment=cfg.data.augment,
                         with_labels=False)
    if cfg.eval_every:
        val = Cityscapes(target[1], split=cfg.eval.split, size=cfg.eval.size, with_labels=True)
    return _Datasets(src, tgt, val)


__all__ = ["train", "resolve_config", "TrainResult", "TrainingDiverged", "StopRequest", "DatasetSpec", "TrainStep",
           "StepResult", "check_step_options", "input_shapes"]
