"""The FP16 variant of an ensemble: BatchNorm folded into the convolutions in FP32, then the members cast to half.

FP16 lives in the graph, not in a TensorRT builder flag (DESIGN.md §7): a strongly typed build runs exactly the types
the ONNX carries. Folding happens before the cast so the folded weights are computed in FP32 and rounded once. The
ensemble's fusion weights stay FP32 and :class:`~ftadapt.ensemble.Ensemble` casts logits back to FP32 before
the softmax, so only the members' convolutions (and their ReLU / pooling / additions) run in half.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ftadapt.ensemble import Ensemble
from ftadapt.errors import UsageError

FP16_MAX = 65504.0


def _bn_partner(parent: nn.Module, name: str) -> str | None:
    """The name of the conv a BN child follows: ``bnK`` ← ``convK`` (ResNet blocks), index i ← i − 1 (Sequential)."""
    if isinstance(parent, nn.Sequential) and name.isdigit() and int(name) > 0:
        return str(int(name) - 1)
    if name.startswith("bn"):
        return "conv" + name[2:]
    return None


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every BatchNorm2d folded into the Conv2d before it and replaced by
    Identity: w' = w·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β, computed in FP32.

    Raises UsageError when a BatchNorm has no conv partner (a layout this fold does not know).
    """
    model = copy.deepcopy(model).float().eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.BatchNorm2d):
                continue
            partner = _bn_partner(parent, name)
            conv = getattr(parent, partner, None) if partner is not None else None
            if not isinstance(conv, nn.Conv2d):
                raise UsageError(f"cannot fold BatchNorm {name!r} of {type(parent).__name__}: no Conv2d before it")
            setattr(parent, partner, fuse_conv_bn_eval(conv, child))
            setattr(parent, name, nn.Identity())
    return model


def _largest_weight(model: nn.Module) -> float:
    return max(float(p.detach().abs().max()) for p in model.parameters())


def half_ensemble(ensemble: Ensemble) -> Ensemble:
    """A copy of ``ensemble`` whose members are BN-folded and in float16; fusion weights and metadata unchanged.

    Raises UsageError when a folded weight does not fit FP16 (|w| > 65504), which would turn into inf in the graph.
    """
    members = []
    for i, member in enumerate(ensemble.members):
        folded = fold_batchnorm(member)
        largest = _largest_weight(folded)
        if largest > FP16_MAX:
            name = ensemble.infos[i].name if ensemble.infos else f"#{i + 1}"
            raise UsageError(f"member {name}: a BN-folded weight reaches {largest:.4g}, beyond the FP16 range "
                             f"({FP16_MAX:g}); export it with --precision fp32")
        members.append(folded.to(torch.float16))
    return Ensemble(members, ensemble.weights.tolist(), rules=ensemble.rules, infos=ensemble.infos,
                    fusion=ensemble.fusion, flip=ensemble.flip).eval()


__all__ = ["fold_batchnorm", "half_ensemble", "FP16_MAX"]
