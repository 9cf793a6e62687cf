"""What a bit-for-bit resume needs besides the weights: the RNG states, the optimizers, the discriminator, the step and
the oracle selection (``train_state.pt`` of a checkpoint folder, DESIGN.md §4), and putting them back.

The data position needs no state of its own: the loaders are pure functions of (seed, step, rank, world size).
Everything here is a tensor, number, string, list or dict, so ``torch.load(weights_only=True)`` reads it.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ftadapt.checkpoint import load_checkpoint
from ftadapt.errors import CheckpointError, UsageError
from ftadapt.training.distributed import DistEnv

if TYPE_CHECKING:
    from ftadapt.training.step import TrainStep


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global RNGs: the same seed builds the same initial weights."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device | None = None) -> dict:
    """torch / numpy / python RNG states as weights_only-loadable tensors, numbers and lists, and the CUDA RNG state of
    ``device`` when it is a CUDA device — of that device only: reading every visible GPU's state would create a CUDA
    context (about 0.5 GiB) on each of them in every DDP process."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)},
             "python": {"version": version, "state": list(py_state), "gauss": gauss}}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Inverse of ``rng_state``; the CUDA state goes to ``device`` (when it is a CUDA device) and to no other GPU.
    Checkpoints written before ftadapt kept one state per visible GPU: the one of this device's index is used."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    cuda = state.get("cuda")
    if cuda is None or device is None or device.type != "cuda":
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    if isinstance(cuda, (list, tuple)):  # the older one-state-per-GPU layout
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def train_state(step: int, step_fn: TrainStep, oracle: dict | None, dist_env: DistEnv) -> dict:
    """Everything besides the model weights that a bit-for-bit resume after ``step`` needs."""
    state = {"step": step, "optimizer": step_fn.opt_g.state_dict(), "rng": rng_state(step_fn.device),
             "oracle": oracle or {},
             "world_size": dist_env.world_size}
    if step_fn.disc is not None:
        state.update(discriminator=step_fn.disc.state_dict(), optimizer_d=step_fn.opt_d.state_dict())
    return state


def restore(path: Path, step_fn: TrainStep, dist_env: DistEnv) -> tuple[int, dict | None]:
    """Load the checkpoint ``path`` into ``step_fn`` (G, D, both optimizers) and the RNGs; return its step and oracle
    selection. Refuses a checkpoint of another number of processes: the data order depends on it."""
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
    set_rng_state(state["rng"], step_fn.device)
    return int(state["step"]), state["oracle"] or None


__all__ = ["seed_everything", "rng_state", "set_rng_state", "train_state", "restore"]
