"""One training step of G (and D) — what the loop runs and ``ftadapt bench train-step`` times — and the one way to
build it, :func:`build_train_step`, which the loop and ``ftadapt.bench.train_step`` (the GPU check's too) use.

Per step i: set the learning rates (warm-up + poly, heads 10×); one G forward on the source batch, its losses, one
backward; one G forward on the target batch, its losses, one backward (D frozen); the discriminator losses on the
detached predictions of those same forwards, one backward; every loss and gradient norm queued for the host
(:class:`Readback`); one SGD step for G and one Adam step for D. Nothing else runs G (DESIGN.md §6).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ftadapt.config import TrainConfig
from ftadapt.errors import FtadaptError, UsageError
from ftadapt.machine import check_memory
from ftadapt.methods import DomainOutput, Method, StepContext, create_method
from ftadapt.models.convert import load_init_weights
from ftadapt.models.deeplab import DeepLabV2, optim_param_groups, upsample_logits
from ftadapt.models.discriminator import FCDiscriminator
from ftadapt.models.registry import create_model, model_config
from ftadapt.training.distributed import SINGLE, DistEnv
from ftadapt.training.schedules import warmup_poly_lr
from ftadapt.training.state import seed_everything


class TrainingDiverged(FtadaptError):
    """A loss term or gradient norm became NaN/Inf; the run stopped without writing a checkpoint."""


def build_train_step(cfg: TrainConfig, *, dist_env: DistEnv = SINGLE, load_init: bool = True) -> TrainStep:
    """The training step ``cfg`` describes, on this rank's device for ``cfg.device``.

    Refuses speed options the device and process group cannot run, before any work. Then seeds every RNG with
    ``cfg.seed`` (the same config builds the same initial weights) and creates the method, G (``cfg.model`` from the
    registry), D when the method uses one (G's number of classes; as wide as G: ``ndf`` = G's ``width``, 64 for the
    real ResNets as in the reference, 8 for the tiny model), loads ``cfg.init`` into G when it is given and
    ``load_init`` is set (fresh runs: a resume restores its checkpoint instead), and returns the :class:`TrainStep`.
    """
    device = dist_env.device(cfg.device)
    check_step_options(cfg, device, dist_env)
    init = cfg.init_weights if load_init else None
    if init is not None and not init.exists():
        raise UsageError(f"--init {init}: no such file or folder (a checkpoint folder or an official .pth file; "
                         "--init none starts from random weights)")
    method = create_method(cfg.method, cfg.loss)
    seed_everything(cfg.seed)
    model = create_model(cfg.model, freeze_bn_affine=cfg.freeze_bn_affine)
    method.check_model(model.config.heads)
    disc = FCDiscriminator(model.config.num_classes, ndf=model.config.width) if method.uses_discriminator else None
    init_report = load_init_weights(model, init) if init is not None else None
    return TrainStep(cfg, method, model, disc, device, dist_env=dist_env, init_report=init_report)


@dataclass
class StepResult:
    """One step's outputs: its losses and gradient norms on their way to the host, and both domains' forwards."""

    readback: Readback
    src: DomainOutput
    tgt: DomainOutput | None


class TrainStep:
    """One training step of G (and D); see the module docstring. Build it with :func:`build_train_step`.

    Applies the config's ``speed`` options, builds the optimizers (and the DDP wrappers when several processes run)
    around ``model`` and ``disc`` and puts them on ``device``. A call ``step(i, src_batch, tgt_batch)`` runs step
    ``i`` and waits for nothing on the GPU. Under DDP all of G's backward passes but the last run under ``no_sync``,
    so its gradients are all-reduced once per step. ``state_dict`` / ``load_state_dict`` save and restore what it
    holds besides G's weights, as torch optimizers do. ``init_report`` says which weights G started from (None: a
    random init, or a resume).
    """

    def __init__(self, cfg: TrainConfig, method: Method, model: DeepLabV2, disc: nn.Module | None,
                 device: torch.device, *, dist_env: DistEnv = SINGLE, init_report: dict | None = None) -> None:
        check_step_options(cfg, device, dist_env)
        speed = cfg.speed
        self.cfg, self.method, self.model, self.disc, self.dist = cfg, method, model, disc, dist_env
        self.device, self.init_report = device, init_report
        self.memory_format = torch.channels_last if speed.channels_last else torch.contiguous_format
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
        sync_bn = cfg.sync_bn and dist_env.enabled
        net: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync_bn else model
        net = _compiled(net, speed.compile)
        # G's last backward of a step need not reach every head (norm-only's target term reads only the features).
        self.g_net = dist_env.data_parallel(net, device, find_unused_parameters=True)
        self.d_net = dist_env.data_parallel(disc, device) if disc is not None else None
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=speed.amp == "bf16")
        self.target_hw = (cfg.data.target_size[1], cfg.data.target_size[0])

    def state_dict(self) -> dict[str, dict]:
        """What the step holds besides G's weights, as ``train_state.pt`` keys it: G's optimizer (``optimizer``) and,
        when the method has a discriminator, D (``discriminator``) and its optimizer (``optimizer_d``)."""
        state = {"optimizer": self.opt_g.state_dict()}
        if self.disc is not None:
            state.update(discriminator=self.disc.state_dict(), optimizer_d=self.opt_d.state_dict())
        return state

    def load_state_dict(self, state: dict[str, dict]) -> None:
        """Inverse of :meth:`state_dict` (entries it does not name are ignored)."""
        self.opt_g.load_state_dict(state["optimizer"])
        if self.disc is not None:
            self.disc.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["optimizer_d"])

    def _forward(self, batch: dict, size_hw: tuple[int, int] | None) -> DomainOutput:
        image = batch["image"].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        label = batch["label"].to(self.device, non_blocking=True) if "label" in batch else None
        with self.autocast:
            out = self.g_net(image)
        size_hw = tuple(label.shape[-2:]) if label is not None else size_hw
        return DomainOutput(tuple(upsample_logits(x.float(), size_hw) for x in out.logits), out.features, label)

    def __call__(self, i: int, src_batch: dict, tgt_batch: dict | None) -> StepResult:
        cfg, method, disc = self.cfg, self.method, self.disc
        ctx = StepContext(i, cfg.steps, self.model, self.model.config.heads, self.model.config.head_rule, disc)
        if cfg.speed.compile == "reduce-overhead":  # the previous step's CUDA-graph outputs are dead from here on
            torch.compiler.cudagraph_mark_step_begin()
        _set_lr(self.opt_g, cfg.optim.lr, i, cfg)
        self.opt_g.zero_grad(set_to_none=True)
        if disc is not None:
            _set_lr(self.opt_d, cfg.optim.d_lr, i, cfg)
            self.opt_d.zero_grad(set_to_none=True)
            disc.requires_grad_(False)  # G's adversarial term must not train D
        with self.dist.no_sync(self.g_net, skip=tgt_batch is not None):
            src = self._forward(src_batch, None)
            with self.autocast:
                losses = method.source_losses(ctx, src)
            _backward(losses)
        tgt = None
        if tgt_batch is not None:
            tgt = self._forward(tgt_batch, self.target_hw)
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
        readback = Readback.start(i + 1, values, self.dist)
        self.opt_g.step()
        if self.opt_d is not None:
            self.opt_d.step()
        return StepResult(readback, src, tgt)


def check_step_options(cfg: TrainConfig, device: torch.device, dist_env: DistEnv) -> None:
    """UsageError for execution options this device and process group cannot run (before any work is done), sizes
    among them: a step holds a batch of each domain at once (``ftadapt.machine.check_memory``, with G's widest feature
    map, layer4: ``width / 2`` floats per pixel), a periodic evaluation one target image."""
    features = model_config(cfg.model).width / 2
    data = cfg.data
    check_memory({"data.source_size": data.source_size, "data.target_size": data.target_size if data.target else None},
                 batch=data.batch_size, feature_floats=features)
    if cfg.eval_every:
        check_memory({"eval.size": cfg.eval.size}, feature_floats=features)
    speed = cfg.speed
    if cfg.sync_bn and dist_env.enabled and device.type != "cuda":
        raise UsageError("sync_bn needs CUDA devices (PyTorch's SyncBatchNorm does not run on the CPU)")
    if speed.compile != "off" and dist_env.enabled:
        raise UsageError(f"compile={speed.compile} with several processes is not supported yet; train with "
                         "--set speed.compile=off under torchrun")


def _compiled(net: nn.Module, mode: str) -> nn.Module:
    """``net`` under torch.compile, one static graph per input shape (CLAN's random scale gives three per domain;
    automatic dynamic shapes would recompile the whole network symbolically, which takes longer than training
    minutes). "reduce-overhead" replays each graph's forward and backward as CUDA graphs."""
    if mode == "off":
        return net
    return torch.compile(net, dynamic=False, mode=None if mode == "default" else mode)


def _backward(losses: dict[str, Tensor]) -> None:
    if losses:
        sum(losses.values()).backward()


def scheduled_lr(base: float, step: int, cfg: TrainConfig) -> float:
    """The learning rate at ``step`` of an optimizer with base rate ``base`` (``optim.lr`` for G, whose heads get
    their ``lr_mult`` 10× of it; ``optim.d_lr`` for D): ``optim.warmup_steps`` of linear warm-up, then poly decay over
    the run's ``steps``. ``ftadapt train --plan`` prints it."""
    return base * warmup_poly_lr(1.0, step, cfg.steps, cfg.optim.warmup_steps, cfg.optim.power)


def _set_lr(optimizer: torch.optim.Optimizer, base: float, step: int, cfg: TrainConfig) -> None:
    lr = scheduled_lr(base, step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def _grad_norm(params) -> Tensor:
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


@dataclass
class Readback:
    """A step's losses and gradient norms on their way to the host: the copy is queued right behind them (pinned,
    non-blocking on CUDA), and ``numbers`` waits only for that copy, not for the work queued after it. Under DDP the
    values are the means over ranks (gradient norms are equal anyway), so every rank stops at the same bad step."""

    step: int
    names: list[str]
    host: Tensor
    event: torch.cuda.Event | None

    @classmethod
    def start(cls, step: int, values: dict[str, Tensor], dist_env: DistEnv = SINGLE) -> Readback:
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


__all__ = ["build_train_step", "TrainStep", "StepResult", "Readback", "TrainingDiverged", "check_step_options",
           "scheduled_lr"]
