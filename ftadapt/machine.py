"""What this machine offers the work ftadapt does: the CPU cores this process may use, and the memory left for it —
against which every size a user gives is checked before any work (numpy-free)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ftadapt.errors import UsageError

# Floats held per input pixel by the smallest honest picture of a forward pass (float32 each): the RGB input and the
# scores of the 19 train classes at the input size (``ftadapt.labels.NUM_CLASSES``; the logits upsampled for the
# argmax, or the probabilities of an ensemble). A model adds its widest feature map (``feature_floats``).
INPUT_FLOATS, SCORE_FLOATS = 3, 19
# The memory limit of the process's cgroup (a container's), v2 then v1.
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


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


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):  # absent, "max" (no limit), unreadable
        return None


def available_memory() -> int | None:
    """Bytes of memory this process can still take: Linux's ``MemAvailable`` (free memory plus the caches the kernel
    can drop), or less when the process's cgroup (a container) is limited to less; ``os.sysconf`` free pages where
    there is no ``/proc/meminfo``; None where neither says (then no size is refused for memory). Generous on
    purpose: it only has to tell sizes that cannot fit from those that might."""
    found = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    limits = [limit for limit in map(_read_int, _CGROUP_LIMITS) if limit is not None]
    return min([found, *limits])


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n < 2**40 else f"{n / 2**40:,.1f} TiB"


def memory_needed(sizes: Mapping[str, tuple[int, int]], *, batch: int = 1, feature_floats: float = 0.0) -> int:
    """Bytes that working on images of every one of ``sizes`` (W, H) at once, ``batch`` each, needs at the least:
    per pixel the float32 input, the 19 class scores and ``feature_floats`` floats of the model's widest feature
    map (DeepLab-v2: layer4's 32·width channels at stride 8, ``width / 2`` floats per pixel). An underestimate —
    weights, gradients and the framework come on top — so a size it refuses cannot fit."""
    pixels = sum(int(w) * int(h) for w, h in sizes.values())
    return int(4 * batch * pixels * (INPUT_FLOATS + SCORE_FLOATS + feature_floats))


def check_memory(sizes: Mapping[str, tuple[int, int]], *, batch: int = 1, feature_floats: float = 0.0) -> None:
    """UsageError, before any work, when images of ``sizes`` (option or config key → (W, H), e.g.
    ``{"--size": (1024, 512)}``) cannot fit in the memory this machine has left (:func:`memory_needed` against
    :func:`available_memory`): the kernel would otherwise kill the process minutes later, without a message. The
    one check of every size a command or a training config takes."""
    sizes = {name: size for name, size in sizes.items() if size is not None}
    available = available_memory()
    need = memory_needed(sizes, batch=batch, feature_floats=feature_floats)
    if available is None or need <= available:
        return
    given = " and ".join(f"{name} {w}x{h}" for name, (w, h) in sizes.items())
    per = f"batch {batch}, " if batch != 1 else ""
    verb = "needs" if len(sizes) == 1 else "need"
    raise UsageError(f"{given} {verb} at least {_gib(need)} of memory ({per}float32 input and {SCORE_FLOATS} class "
                     f"scores per pixel{', and the model features' if feature_floats else ''}) but this machine has "
                     f"{_gib(available)} available; give a smaller size (W×H, e.g. 1024x512)")


__all__ = ["available_memory", "check_memory", "cpu_cores", "loader_workers", "memory_needed"]
