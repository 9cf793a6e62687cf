"""Multi-process data-parallel training (DESIGN.md §6): PyTorch DDP, launched by ``torchrun``.

``torchrun --nproc-per-node N -m ftadapt.cli train ...`` starts N copies of the ordinary command; each finds its rank
in the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and
:func:`distributed` joins the process group: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on the
CPU. Without those variables everything is a single process and nothing here changes the training.

What the trainer does with it (``ftadapt.training``):

- G and D are wrapped in DistributedDataParallel. A step runs several backward passes into G (source, then target);
  all but the last run under ``no_sync()``, so G's gradients are all-reduced once per step, as the mean over ranks
  of each rank's summed source + target gradient. D has one backward per step. G uses ``find_unused_parameters``
  because a method's last backward need not reach every head (norm-only's target term reads only the features).
- Rank r draws the batches of stream positions t·N + r (``ftadapt.data.loader``): the ranks split one process's
  batch stream round-robin, deterministically, and a resume continues it (with the same N).
- BatchNorm: each rank normalises with its own batch's statistics — with the paper's batch of 1 per GPU that is the
  reference behaviour (one image per BN batch). Running statistics are not synchronised (they never enter a training
  forward); each rank keeps the average over its own batches and checkpoints hold rank 0's. SyncBatchNorm (BN
  statistics over all ranks' images, unlike the reference; CUDA only) is the config key ``sync_bn``, off by default.
- Only rank 0 writes the run folder (config, logs, checkpoints) and runs periodic evaluation; the logged losses are
  means over ranks. A SIGINT/SIGTERM is acted on at the next logging step, where the ranks agree to stop together.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ftadapt.devices import Device, torch_device
from ftadapt.errors import UsageError

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there are several processes (DDP on); False for a plain single-process run."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    def device(self, value: Device | str) -> torch.device:
        """The device of this rank for the config's ``device`` (``ftadapt.devices``: "auto", "cpu", "cuda",
        "cuda:1"): under DDP every CUDA rank takes ``cuda:LOCAL_RANK``. A DeviceError for a CUDA device PyTorch does
        not see."""
        device = torch_device(value)
        if self.enabled and device.type == "cuda":
            device = torch_device(Device("cuda", self.local_rank))
        return device

    def data_parallel(self, module: nn.Module, device: torch.device, *,
                      find_unused_parameters: bool = False) -> nn.Module:
        """``module`` wrapped in DistributedDataParallel (running statistics left per rank); ``module`` itself when
        single-process."""
        if not self.enabled:
            return module
        no_buffer_sync = ({"forward_sync_buffers": False}
                          if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                          else {"broadcast_buffers": False})
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=find_unused_parameters, **no_buffer_sync)

    def no_sync(self, net: nn.Module, skip: bool = True) -> contextlib.AbstractContextManager:
        """Gradient accumulation without all-reduce for a DDP-wrapped ``net`` (forward and backward must both run
        inside); a no-op when single-process or ``skip`` is False."""
        if skip and isinstance(net, DistributedDataParallel):
            return net.no_sync()
        return contextlib.nullcontext()

    def mean_(self, tensor: Tensor) -> Tensor:
        """In place: the mean of ``tensor`` over ranks (identity when single-process). Queued, no host sync on CUDA."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor.div_(self.world_size)
        return tensor

    def agree_stop(self, signal_name: str | None, device: torch.device) -> str | None:
        """The signal that stops every rank after this step: this rank's own, or, when only other ranks received one,
        the highest-numbered of theirs; None when no rank did. All ranks must call it at the same step."""
        if not self.enabled:
            return signal_name
        number = torch.tensor([signal.Signals[signal_name].value if signal_name else 0], device=device)
        dist.all_reduce(number, op=dist.ReduceOp.MAX)
        return signal_name or (signal.Signals(int(number)).name if int(number) else None)

    def barrier(self) -> None:
        """Wait until every rank gets here (no-op when single-process)."""
        if self.enabled:
            dist.barrier()


SINGLE = DistEnv()


def env_dist() -> DistEnv:
    """The DistEnv that torchrun's environment variables describe (single-process when they are absent)."""
    if "WORLD_SIZE" not in os.environ:
        return SINGLE
    try:
        rank, world_size, local_rank = (int(os.environ.get(k, "0")) for k in _ENV)
    except ValueError:
        raise UsageError(f"bad torchrun environment: {', '.join(f'{k}={os.environ.get(k)!r}' for k in _ENV)} must "
                         "be integers") from None
    if not 0 <= rank < world_size:
        raise UsageError(f"bad torchrun environment: RANK={rank} is not within WORLD_SIZE={world_size}")
    return DistEnv(rank, world_size, local_rank)


@contextlib.contextmanager
def distributed(device_name: Device | str, *, timeout_s: float = 1800.0) -> Iterator[DistEnv]:
    """Join the process group that torchrun's environment describes, for the config's ``device`` (NCCL for CUDA,
    gloo for the CPU), and leave it on exit. A group that already exists (e.g. created by a test) is used and left
    alone. Yields :data:`SINGLE` when there is only one process."""
    env = env_dist()
    if dist.is_initialized():
        yield DistEnv(dist.get_rank(), dist.get_world_size(), env.local_rank)
        return
    if not env.enabled:
        yield SINGLE
        return
    if not dist.is_available():
        raise UsageError("this PyTorch build has no torch.distributed; run a single process")
    device = env.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size, timeout=timedelta(seconds=timeout_s),
                            **({"device_id": device} if device.type == "cuda" else {}))
    try:
        yield env
    finally:
        dist.destroy_process_group()


__all__ = ["DistEnv", "SINGLE", "env_dist", "distributed"]
