"""Random-init members and exports for benchmarks without trained weights.

Latency does not depend on the weight values (no operator of the graph is data-dependent), so any weights of the
right shapes give the real cost. Label agreement between precisions or backends does depend on them: the registry's
N(0, 0.01) initialisation gives near-uniform logits whose argmax is one class everywhere, where every comparison is
trivially equal. The members here are therefore *calibrated*: Kaiming-normal convolutions, random BN affines and BN
statistics measured on random images, so logits have realistic scales and predictions vary over the image.

Checkpoints and files are written under a work folder and reused when present (exports of DeepLab-v2 R101 take a
minute), named after the model, the number of members, the working size, the precision and flip fusion.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

WEIGHTS_NOTE = ("random-init checkpoints (Kaiming convolutions, BN calibrated on random images); latency does not "
                "depend on weight values")


def calibrated_random_model(model: str, seed: int, **config: Any) -> Any:
    """The registered ``model`` with seeded random weights of realistic scale (see the module docstring), in eval
    mode."""
    import torch
    from torch import nn

    from ftadapt.models.registry import create_model

    torch.manual_seed(seed)
    net = create_model(model, **config)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    with torch.no_grad():
        net.train()
        for _ in range(4):
            net(torch.randn(2, 3, 48, 64) * 50)
    return net.eval()


def random_checkpoints(work: Path, model: str, members: int = 1) -> list[Path]:
    """``members`` checkpoint folders of calibrated random-init ``model`` under ``work`` (seeds 0, 1, …; reused when
    present): ``<model>-random`` for the first, ``<model>-random-<k>`` for member k ≥ 2."""
    from ftadapt.checkpoint import save_checkpoint

    paths = []
    for k in range(members):
        path = work / (f"{model}-random" if k == 0 else f"{model}-random-{k + 1}")
        if not path.is_dir():
            net = calibrated_random_model(model, k)
            save_checkpoint(path, model_state=net.state_dict(), model_config=net.config,
                            meta={"method": "random-init", "metrics": {}})
        paths.append(path)
    return paths


def export_random_model(work: Path, model: str, working_size: tuple[int, int], precision: str = "fp32",
                        flip: bool = False, members: int = 1) -> Path:
    """An ONNX export of ``members`` random-init ``model`` checkpoints (equal weights) under ``work`` (reused when
    present); with ``flip`` the members also run on the mirrored frame inside the graph (the paper's flip fusion)."""
    ensemble = f"{members}x" if members > 1 else ""
    out = work / f"{ensemble}{model}-{working_size[0]}x{working_size[1]}-{precision}{'-flip' if flip else ''}.onnx"
    if out.is_file():
        return out
    from ftadapt.ensemble import load_ensemble
    from ftadapt.export.onnx_export import export_onnx

    paths = random_checkpoints(work, model, members)
    export_onnx(load_ensemble([str(p) for p in paths], flip=flip), out, precision=precision, working_size=working_size,
                verify=False, progress=False)
    return out


__all__ = ["WEIGHTS_NOTE", "calibrated_random_model", "export_random_model", "random_checkpoints"]
