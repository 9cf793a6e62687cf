"""Are DeepLab-v2's dilated 3×3 convolutions slow on this GPU, and does ``space_to_batch`` help?

    python -m ftadapt.bench.conv_speed [--device cuda] [--iters 20] [--json OUT]

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
from typing import Any

import click
import torch
import torch.nn.functional as F
from torch import nn

from ftadapt.bench.report import emit_report, host_info, torch_info
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
            variants = {"dilated": lambda: conv(x),
                        "space_to_batch": lambda: atrous_conv(conv, x),
                        "undilated": lambda: F.conv2d(x, conv.weight, None, 1, 1, 1)}
            flops = 3 * 2 * channels * channels * 9 * h * w  # forward, input gradient, weight gradient
            row: dict[str, Any] = {"layer": name, "input": domain, "channels": channels, "dilation": dilation,
                                   "feature_hw": [h, w]}
            for variant, forward in variants.items():
                ms = _time_ms(lambda: torch.autograd.grad(forward(), (x, conv.weight), grad), dev, iters)
                row[f"{variant}_ms"] = round(ms, 4)
                row[f"{variant}_tflops"] = round(flops / ms / 1e9, 2)
            row["space_to_batch_speedup"] = round(row["dilated_ms"] / row["space_to_batch_ms"], 3)
            results.append(row)
    total = {v: round(sum(r[f"{v}_ms"] for r in results), 4) for v in ("dilated", "space_to_batch", "undilated")}
    return {"benchmark": "conv_speed", "dtype": str(dtype).removeprefix("torch."), "channels_last": channels_last,
            "iters": iters, "convs": results, "sum_ms": total,
            "space_to_batch_faster": total["space_to_batch"] < total["dilated"],
            "machine": {**host_info(), **torch_info(dev)}}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--device", default="cuda", show_default=True, help="cuda, cuda:N or cpu.")
@click.option("--iters", type=click.IntRange(min=1), default=20, show_default=True, help="Timed passes per variant.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here.")
def main(device: str, iters: int, json_out: str | None) -> None:
    """Time the dilated backbone convolutions three ways and print JSON."""
    emit_report(measure_dilated_convs(device, iters=iters), json_out)


if __name__ == "__main__":
    main()
