"""The facts of the machine a benchmark ran on, attached to every report (``ftadapt.commands.common.emit`` prints
the reports)."""
from __future__ import annotations

import os
import platform
from typing import Any

from ftadapt import __version__


def host_info(**versions: str) -> dict[str, Any]:
    """The host a benchmark ran on, with the versions of ``versions`` (e.g. numpy=…) and the load average: other
    work on a shared machine skews the figures."""
    return {"ftadapt": __version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), **versions,
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
