"""Speed variants of convolutions that compute the same values, and the switch that selects them.

The trainer selects them (``configure_convs``, from the config's ``speed`` section) on the modules that offer them, as
plain attributes: they are neither parameters nor state, so optimizers, checkpoints and state-dict keys never see them.

- ``aligned_conv`` (attribute ``channel_multiple``): four convolutions of the training step have channel counts that
  are not multiples of 8 — the backbone stem reads 3 image channels, the DeepLab-v2 heads end in 19 class channels,
  the discriminator reads 19 and ends in 1. cuDNN's fast tensor-core kernels want multiples of 8 (16-byte rows in
  bf16) and may fall back to slower kernels otherwise. The convolution runs with zero input channels appended to its
  input and weight, and zero output rows appended to its weight and bias, and the extra outputs are dropped.
- ``atrous_conv`` (attribute ``space_to_batch``): a k×k convolution with dilation d, stride 1 and padding d·(k−1)/2
  reads, for the output at (i, j), only inputs at (i + d·a, j + d·b) — positions congruent to (i, j) modulo d — so it
  splits into d² ordinary convolutions (dilation 1, padding (k−1)/2), one per sub-grid x[..., r::d, s::d]. The d²
  sub-grids are gathered into the batch dimension, one ordinary convolution runs, and the result is scattered back.
  When H or W is not a multiple of d the input is first zero-padded at the bottom/right to the next multiple: those
  zeros lie where the dilated convolution's own zero padding lies, so no output changes (the extra ones are cropped).
  DeepLab-v2's dilated 3×3 backbone convolutions (layer3 dilation 2, layer4 dilation 4) carry 45 % of G's
  convolution FLOPs at the paper's sizes; GPU libraries have often run dilated kernels several times slower than
  ordinary ones, at the price here of two copies of the activation per convolution.

Both give the same values and gradients for the real weights and input, up to the order of floating-point sums.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _is_channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


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
        channels_last = _is_channels_last(x)
        x = F.pad(x, (0, 0, 0, 0, 0, pad_in))
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)
    return out[:, :conv.out_channels] if pad_out else out


def atrous_conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)`` for a dilated convolution (stride 1, "same" padding), computed as one ordinary convolution over
    the d² sub-grids stacked in the batch; any other convolution runs as is. Keeps the memory format of ``x``.

    Shape: N×C_in×H×W → N×C_out×H×W.
    """
    d, (kh, kw) = conv.dilation[0], conv.kernel_size
    if (d == 1 or conv.dilation != (d, d) or conv.stride != (1, 1) or kh % 2 == 0 or kw % 2 == 0
            or conv.padding != (d * (kh - 1) // 2, d * (kw - 1) // 2)):
        return conv(x)
    n, c, h, w = x.shape
    hp, wp = -(-h // d) * d, -(-w // d) * d
    channels_last = _is_channels_last(x)
    # The rearrangement works on the tensor's physical order, so each step is one copy in either memory format.
    if channels_last:
        grid = F.pad(x.permute(0, 2, 3, 1), (0, 0, 0, wp - w, 0, hp - h))  # N×Hp×Wp×C
        grid = grid.reshape(n, hp // d, d, wp // d, d, c).permute(2, 4, 0, 1, 3, 5)
        batch = grid.reshape(d * d * n, hp // d, wp // d, c).permute(0, 3, 1, 2)
    else:
        grid = F.pad(x, (0, wp - w, 0, hp - h)).reshape(n, c, hp // d, d, wp // d, d).permute(3, 5, 0, 1, 2, 4)
        batch = grid.reshape(d * d * n, c, hp // d, wp // d)
    y = F.conv2d(batch, conv.weight, conv.bias, 1, ((kh - 1) // 2, (kw - 1) // 2), 1)
    co = y.shape[1]
    if channels_last:
        y = y.permute(0, 2, 3, 1).reshape(d, d, n, hp // d, wp // d, co).permute(2, 3, 0, 4, 1, 5)
        out = y.reshape(n, hp, wp, co)[:, :h, :w].permute(0, 3, 1, 2)
        return out if (hp, wp) == (h, w) else out.contiguous(memory_format=torch.channels_last)
    y = y.reshape(d, d, n, co, hp // d, wp // d).permute(2, 3, 4, 0, 5, 1)
    out = y.reshape(n, co, hp, wp)[:, :, :h, :w]
    return out if (hp, wp) == (h, w) else out.contiguous()


def configure_convs(*modules: nn.Module | None, channel_multiple: int = 0, space_to_batch: bool = False) -> None:
    """Select the convolution variants on every submodule of ``modules`` that offers them (``None`` entries are
    skipped): ``channel_multiple`` for ``aligned_conv`` (0: off), ``space_to_batch`` for ``atrous_conv``.

    Typed keywords, so a misspelt option is a TypeError; an option switched on that no submodule offers is a
    ValueError (a renamed attribute would otherwise switch nothing, silently).
    """
    options = {"channel_multiple": channel_multiple, "space_to_batch": space_to_batch}
    offered = dict.fromkeys(options, False)
    for module in modules:
        for m in module.modules() if module is not None else ():
            for name, value in options.items():
                if hasattr(m, name):
                    setattr(m, name, value)
                    offered[name] = True
    missing = [name for name, value in options.items() if value and not offered[name]]
    if missing:
        raise ValueError(f"no submodule offers the speed option(s) {', '.join(missing)}")


__all__ = ["aligned_conv", "atrous_conv", "configure_convs"]
