"""Are DeepLab-v2's dilated 3×3 convolutions slow on this GPU, and does ``space_to_batch`` help?

    ftadapt bench conv-speed [--device cuda] [--iters 20] [--json OUT]

Times forward + backward (input and weight gradients) of the backbone's dilated 3×3 convolutions — layer3 (256
channels, dilation 2) and layer4 (512 channels, dilation 4) — at the feature-map sizes of the paper's source
(1280×720 → 91×161) and target (1024×512 → 65×129) inputs, batch 1, bf16, channels_last, cuDNN autotuned: as the
dilated convolution, as ``space_to_batch`` runs it (``models.speed.atrous_conv``: an ordinary convolution over the
d² sub-grids, plus the rearranging copies), and the same convolution without dilation (what an ordinary 3×3
convolution of that size costs: the bound ``space_to_batch`` can approach). Reports ms per pass and TFLOP/s. These
convolutions carry 45 % of G's convolution FLOPs per training step.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ftadapt.bench.report import host_info, torch_info
from ftadapt.models.speed import atrous_conv

LAYERS = (("layer3", 256, 2), ("layer4", 512, 4))  # name, channels, dilation
FEATURE_SIZES = {"source": (91, 161), "target": (65, 129)}  # H×W of layer3/4 for 1280×720 and 1024×512 inputs


def _time_ms(run, device: torch.device, iters: int) -> float:
    for _ in range(3):  # autotuning, allocation
        run()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        run()
    sync()
    return 1000.0 * (time.perf_counter() - start) / iters


def _passes(conv: nn.Conv2d, x: torch.Tensor, grad: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Forward + backward (input and weight gradients) of ``conv`` on ``x``: dilated as it is, as space_to_batch
    computes it, and undilated."""
    forwards = {"dilated": lambda: conv(x), "space_to_batch": lambda: atrous_conv(conv, x),
                "undilated": lambda: F.conv2d(x, conv.weight, None, 1, 1, 1)}
    return {name: (lambda f=forward: torch.autograd.grad(f(), (x, conv.weight), grad))
            for name, forward in forwards.items()}


def measure_dilated_convs(device: str = "cuda", *, iters: int = 20, dtype: torch.dtype = torch.bfloat16,
                          channels_last: bool = True, layers=LAYERS, sizes=FEATURE_SIZES) -> dict[str, Any]:
    """Forward + backward ms of each (layer, size) dilated conv three ways; see the module docstring."""
    dev = torch.device(device)
    torch.backends.cudnn.benchmark = True
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    results = []
    for name, channels, dilation in layers:
        conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        conv = conv.to(dev, dtype, memory_format=fmt)
        for domain, (h, w) in sizes.items():
            x = torch.randn(1, channels, h, w, device=dev, dtype=dtype).contiguous(memory_format=fmt)
            x.requires_grad_()
            grad = torch.randn(1, channels, h, w, device=dev, dtype=dtype).contiguous(memory_format=fmt)
            flops = 3 * 2 * channels * channels * 9 * h * w  # forward, input gradient, weight gradient
            row: dict[str, Any] = {"layer": name, "input": domain, "channels": channels, "dilation": dilation,
                                   "feature_hw": [h, w]}
            for variant, one_pass in _passes(conv, x, grad).items():
                ms = _time_ms(one_pass, dev, iters)
                row[f"{variant}_ms"] = round(ms, 4)
                row[f"{variant}_tflops"] = round(flops / ms / 1e9, 2)
            row["space_to_batch_speedup"] = round(row["dilated_ms"] / row["space_to_batch_ms"], 3)
            results.append(row)
    total = {v: round(sum(r[f"{v}_ms"] for r in results), 4) for v in ("dilated", "space_to_batch", "undilated")}
    return {"benchmark": "conv_speed", "dtype": str(dtype).removeprefix("torch."), "channels_last": channels_last,
            "iters": iters, "convs": results, "sum_ms": total,
            "space_to_batch_faster": total["space_to_batch"] < total["dilated"],
            "machine": {**host_info(), **torch_info(dev)}}


if __name__ == "__main__":  # python -m ftadapt.bench.conv_speed: the same as `ftadapt bench conv-speed`
    import sys

    from ftadapt.cli import main

    main(["bench", "conv-speed", *sys.argv[1:]])
