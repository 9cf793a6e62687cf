"""The facts of the machine a benchmark ran on, attached to every report (``ftadapt.commands.common.emit`` prints
the reports): the host (CPU model, cores, load), the GPU and its driver (``nvidia-smi``), torch with CUDA and cuDNN,
and the deployment stack (ONNX Runtime and the providers it offers, TensorRT, pycuda). What a result actually ran on —
the providers a session really got, the precision, the working size — is recorded in the result itself."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from typing import Any

from ftadapt.version import __version__


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info(**versions: str) -> dict[str, Any]:
    """The host a benchmark ran on, with the versions of ``versions`` (e.g. numpy=…) and the load average: other
    work on a shared machine skews the figures."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"ftadapt": __version__, "platform": platform.platform(), "cpu_model": cpu_model(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "usable_cores": usable, "python": platform.python_version(), **versions,
            "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()]}


def torch_info(device: Any = None) -> dict[str, Any]:
    """torch's version and CPU threads and, for a CUDA ``device`` (a torch.device or a name such as "cuda"), the GPU:
    name, compute capability, memory, SMs, CUDA, cuDNN and the TF32 switches. Imports torch only here (the runtime
    benchmarks run without it)."""
    try:
        import torch
    except ImportError:
        return {"torch": "not installed"}
    info: dict[str, Any] = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if device is None or torch.device(device).type != "cuda":
        return info
    if not torch.cuda.is_available():
        return {**info, "gpu": "none visible to torch"}
    props = torch.cuda.get_device_properties(torch.device(device))
    return {**info, "gpu": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2**30, 1), "multiprocessors": props.multi_processor_count,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "tf32_conv": torch.backends.cudnn.allow_tf32, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}


def nvidia_smi() -> dict[str, Any]:
    """Every GPU as ``nvidia-smi`` reports it (name, driver, memory, power limit, max SM clock, performance state), or
    why it could not be asked."""
    query = "name,driver_version,memory.total,power.limit,clocks.max.sm,pstate"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError) as exc:
        return {"nvidia_smi": f"not available: {exc}"}
    return {"nvidia_smi": [dict(zip(query.split(","), (v.strip() for v in line.split(",")))) for line in out]}


def runtime_versions() -> dict[str, Any]:
    """ONNX Runtime (version, the providers this build offers — not necessarily loadable), TensorRT and pycuda, each
    as a version or "not available: <why>"."""
    from ftadapt.runtime import BackendUnavailable
    from ftadapt.runtime.ort_backend import import_onnxruntime
    from ftadapt.runtime.trt_api import import_pycuda, import_tensorrt

    info: dict[str, Any] = {}
    try:
        ort = import_onnxruntime()
        info.update(onnxruntime=ort.__version__, onnxruntime_available_providers=ort.get_available_providers())
    except BackendUnavailable as exc:
        info["onnxruntime"] = f"not available: {exc}"
    try:
        info["tensorrt"] = import_tensorrt().__version__
    except BackendUnavailable as exc:
        info["tensorrt"] = f"not available: {exc}"
    try:
        driver = import_pycuda()
    except BackendUnavailable as exc:
        info["pycuda"] = f"not available: {exc}"
    else:
        info["pycuda"] = _distribution_version("pycuda")
        if hasattr(driver, "get_driver_version"):
            info["cuda_driver_version"] = driver.get_driver_version()  # e.g. 12080 for a CUDA 12.8 driver
    return info


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "installed (version unknown)"


def environment(device: Any = None) -> dict[str, Any]:
    """Everything above for a benchmark on ``device`` (a torch device or name; "cpu" when None): host, torch (with
    the GPU for a CUDA device), ``nvidia-smi`` and the deployment stack."""
    import numpy as np

    return {**host_info(numpy=np.__version__), **torch_info(device), "device": str(device or "cpu"), **nvidia_smi(),
            **runtime_versions()}
