"""Convolutions with their output channels zero-padded to a multiple of k, for tensor-core alignment.

The DeepLab-v2 heads end in 19 channels (one per class) and the discriminator in 1; cuDNN's fast tensor-core
kernels want channel counts that are multiples of 8 (16-byte rows in bf16), and may fall back to slower kernels
otherwise. ``aligned_conv`` runs such a convolution with zero rows appended to its weight (and bias) and drops the
extra output channels again: the same values, and the same gradients for the real weights (the padding is built from
them each call, so optimizers, checkpoints and state-dict keys never see it).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def aligned_conv(conv: nn.Conv2d, x: Tensor, multiple: int) -> Tensor:
    """``conv(x)``, computed with the output channels padded up to a multiple of ``multiple`` (0 or 1: as is).

    Shape: N×C_in×H×W → N×C_out×H'×W', as ``conv``.
    """
    pad = -conv.out_channels % multiple if multiple > 1 else 0
    if not pad:
        return conv(x)
    weight = F.pad(conv.weight, (0, 0, 0, 0, 0, 0, 0, pad))
    bias = F.pad(conv.bias, (0, pad)) if conv.bias is not None else None
    out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return out[:, :conv.out_channels]


def set_channel_multiple(multiple: int, *modules: nn.Module | None) -> None:
    """Set ``channel_multiple`` on every submodule of ``modules`` that has one (ASPP heads, the discriminator)."""
    for module in modules:
        for m in module.modules() if module is not None else ():
            if hasattr(m, "channel_multiple"):
                m.channel_multiple = multiple


__all__ = ["aligned_conv", "set_channel_multiple"]
