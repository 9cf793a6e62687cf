"""Devices: one spelling in every command, config key and API, parsed here and nowhere else.

A device is ``auto`` (CUDA when this machine has it, else the CPU), ``cpu``, ``cuda`` (the first CUDA device) or
``cuda:N``; a bare index ``N`` means ``cuda:N`` (the runtime took indices before it took names). Parsing needs
nothing; *resolving* asks the machine:

- :func:`resolve` asks the NVIDIA driver itself (``libcuda`` through ctypes: no CUDA Python package, no torch), for
  the runtime, ONNX Runtime and TensorRT;
- :func:`torch_device` asks PyTorch (a CPU build of torch on a GPU machine has no CUDA either), for models.

Either way a CUDA device asked for where there is none is a :class:`DeviceError` that says so — never a failure
further on that blames something else (a "corrupt" checkpoint, a missing provider).

Torch-free and numpy-free: the runtime and the command line import it.
"""
from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ftadapt.errors import UsageError

if TYPE_CHECKING:
    import torch

SPELLINGS = "auto, cpu, cuda or cuda:N"


class DeviceError(UsageError):
    """A device this machine does not have (a CUDA device without CUDA, an index past the last GPU)."""


@dataclass(frozen=True)
class Device:
    """A parsed device: ``type`` is "auto", "cpu" or "cuda"; ``index`` the CUDA index (None: the first / current)."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    @property
    def is_cuda(self) -> bool:
        return self.type == "cuda"

    @property
    def is_cpu(self) -> bool:
        return self.type == "cpu"


AUTO, CPU = Device("auto"), Device("cpu")
# What every API taking a device accepts (a ``torch.device`` too, as it prints).
DeviceLike = Device | str | int | None


def parse_device(value: DeviceLike) -> Device:
    """``value`` as a :class:`Device`: None and "auto" → auto; "cpu"; "cuda", "cuda:N"; an index N (int or digits)
    → cuda:N; a ``torch.device`` as it prints. Case and surrounding spaces are ignored. Anything else is a UsageError
    listing the spellings."""
    if isinstance(value, Device):
        return value
    if value is None:
        return AUTO
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        value = str(value)  # e.g. a torch.device: "cpu", "cuda:1"
    if isinstance(value, int):
        if value < 0:
            raise UsageError(f"device {value}: a CUDA index is 0 or more (expected {SPELLINGS})")
        return Device("cuda", value)
    text = value.strip().lower()
    if text in ("auto", "cpu", "cuda"):
        return Device(text)
    index = text.removeprefix("cuda:")
    if index.isdigit() and index.isascii():
        return Device("cuda", int(index))
    raise UsageError(f"device {value!r}: expected {SPELLINGS} (e.g. cuda:1)")


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> tuple[int, str]:
    """(number of CUDA devices, why there are none), asked of the NVIDIA driver library itself; cached per process.

    No CUDA Python package is needed, so the probe is cheap and works in the base install; it keeps ONNX Runtime from
    trying (and loudly failing) to load its CUDA provider on machines without a GPU.
    """
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return 0, "no NVIDIA driver (libcuda not found)"
    status = lib.cuInit(0)
    if status != 0:
        return 0, f"the NVIDIA driver failed to initialise CUDA (cuInit error {status})"
    count = ctypes.c_int(0)
    status = lib.cuDeviceGetCount(ctypes.byref(count))
    if status != 0 or count.value == 0:
        return 0, "the NVIDIA driver reports no CUDA device"
    return count.value, ""


def _checked(device: Device, count: int, why: str, *, fix: str) -> Device:
    """``device`` with auto decided and a CUDA request checked against ``count`` devices (``why``: why none)."""
    if device.type == "auto":
        return Device("cuda", 0) if count else CPU
    if not device.is_cuda:
        return device
    if count == 0:
        raise DeviceError(f"device {device} asked for, but this machine has no CUDA device ({why}); use --device "
                          f"cpu, or auto (CUDA when present){fix}")
    index = device.index or 0
    if index >= count:
        raise DeviceError(f"device {device} asked for, but only {count} CUDA device(s) are visible "
                          f"(cuda:0 … cuda:{count - 1})")
    return Device("cuda", index)


def resolve(value: DeviceLike) -> Device:
    """``value`` as the device the runtime uses: auto → cuda:0 when the NVIDIA driver reports a GPU, else cpu; a CUDA
    device is checked against the driver's count (``cuda`` → cuda:0). DeviceError when it is not there."""
    count, why = cuda_device_count()
    return _checked(parse_device(value), count, why, fix="")


def torch_device(value: DeviceLike | torch.device) -> torch.device:
    """``value`` as a ``torch.device``: auto → cuda:0 when PyTorch sees CUDA, else cpu; a CUDA device is checked
    against what PyTorch sees (a CPU build of torch sees none, whatever the machine has). DeviceError otherwise."""
    import torch

    if torch.cuda.is_available():
        count, why = torch.cuda.device_count(), ""
    else:
        why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None else
               "PyTorch sees no CUDA device")
        count = 0
    return torch.device(str(_checked(parse_device(value), count, why, fix="")))


def runtime_index(value: DeviceLike) -> int | str:
    """The resolved device as the runtime's backends take it: a CUDA index, or "cpu"."""
    device = resolve(value)
    return "cpu" if device.is_cpu else device.index


__all__ = ["Device", "DeviceLike", "DeviceError", "AUTO", "CPU", "SPELLINGS", "parse_device", "resolve", "torch_device",
           "runtime_index", "cuda_device_count"]
