"""What this machine offers the work ftadapt parallelises: the CPU cores this process may use (numpy-free)."""
from __future__ import annotations

import os


def cpu_cores() -> int:
    """The number of CPU cores this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def loader_workers(cores: int | None = None) -> int:
    """Loader processes per domain for training on ``cores`` cores (default: this machine's): none on one core
    (loading in the training process beats a second process there), else about half the cores left beside the
    training process, shared by the two domains, at least 1 and at most 4 (4 keep up with 28 steps/s, see
    ``python -m ftadapt.commands.investigate loader-speed``). PyTorch warns that loaders "may freeze" when one has
    more workers than cores."""
    cores = cpu_cores() if cores is None else cores
    return 0 if cores < 2 else max(1, min(4, (cores - 1) // 2))


__all__ = ["cpu_cores", "loader_workers"]
