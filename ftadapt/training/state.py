"""Seeding and the random number generators' states: the same seed builds the same initial weights, and a resume puts
back the RNG states a checkpoint saved (``training.resume``). The states are tensors, numbers and lists, so
``torch.load(weights_only=True)`` reads them.
"""
from __future__ import annotations

import random

import numpy as np
import torch


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


__all__ = ["seed_everything", "rng_state", "set_rng_state"]
