"""Convolutions with their channel counts zero-padded to a multiple of k, for tensor-core alignment.

Four convolutions of the training step have channel counts that are not multiples of 8: the backbone stem reads 3
image channels, the DeepLab-v2 heads end in 19 class channels, the discriminator reads 19 and ends in 1. cuDNN's fast
tensor-core kernels want multiples of 8 (16-byte rows in bf16) and may fall back to slower kernels otherwise.
``aligned_conv`` runs such a convolution with zero input channels appended to its input and weight, and zero output
rows appended to its weight and bias, then drops the extra outputs: the same values, and the same gradients for the
real weights and input (the padding is built from them each call, so optimizers, checkpoints and state-dict keys never
see it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def aligned_conv(conv: nn.Conv2d, x: Tensor, multiple: int) -> Tensor:
    """``conv(x)``, computed with input and output channels padded up to a multiple of ``multiple`` (0 or 1: as is).

    Shape: N×C_in×H×W → N×C_out×H'×W', as ``conv``.
    """
    pad_in = -conv.in_channels % multiple if multiple > 1 and conv.groups == 1 else 0
    pad_out = -conv.out_channels % multiple if multiple > 1 and conv.groups == 1 else 0
    if not (pad_in or pad_out):
        return conv(x)
    weight = F.pad(conv.weight, (0, 0, 0, 0, 0, pad_in, 0, pad_out))
    bias = F.pad(conv.bias, (0, pad_out)) if conv.bias is not None else None
    if pad_in:
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        x = F.pad(x, (0, 0, 0, 0, 0, pad_in))
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)
    return out[:, :conv.out_channels] if pad_out else out


def set_channel_multiple(multiple: int, *modules: nn.Module | None) -> None:
    """Set ``channel_multiple`` on every submodule of ``modules`` that has one (ASPP heads, the discriminator)."""
    for module in modules:
        for m in module.modules() if module is not None else ():
            if hasattr(m, "channel_multiple"):
                m.channel_multiple = multiple


__all__ = ["aligned_conv", "set_channel_multiple"]
