"""DeepLab-v2 on a Caffe-style ResNet with the ASPP classifier, in the exact layout of the official UDA repositories.

State-dict key names are the official ones (``reference/methods.md`` §1.5) so released AdaptSegNet, CLAN, MaxSquare and
Feature-To-Adapt checkpoints load with ``strict=True``. The forward returns every head's stride-8 logits (not upsampled)
and the layer4 feature map that the step-wise feature-norm loss reads.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from ftadapt.errors import UsageError

ASPP_DILATIONS = (6, 12, 18, 24)
ASPP_BRANCHES = {"full": 4, "reduced": 2}  # "reduced": AdaptSegNet/MaxSquare sum only the 6- and 12-dilation branches
HEAD_LAYOUTS = ("clan", "multi", "single")
HEAD_RULES = ("sum", "main")
DEFAULT_HEAD_RULE = {"clan": "sum", "multi": "main", "single": "main"}
DEPTH_BLOCKS = {101: (3, 4, 23, 3), 50: (3, 4, 6, 3)}
HEAD_NAMES = ("layer5", "layer6")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a DeepLab-v2 model; what a checkpoint's ``config.json`` stores under ``"model"``.

    ``blocks`` are the bottleneck counts of layer1–4 and ``width`` the stem / layer1 planes (64 for the real ResNets;
    layer4 outputs ``32·width`` channels). ``freeze_bn_affine``: "all" freezes every BN weight and bias (AdaptSegNet,
    CLAN, FTA), "stem" only the stem ``bn1`` (MaxSquare). ``freeze_bn_stats``: keep BN in eval mode even in
    ``model.train()``; the reference code leaves it False, so running statistics keep updating during training.
    """

    blocks: tuple[int, int, int, int] = DEPTH_BLOCKS[101]
    width: int = 64
    aspp: Literal["full", "reduced"] = "full"
    heads: Literal["clan", "multi", "single"] = "clan"
    num_classes: int = 19
    freeze_bn_affine: Literal["all", "stem"] = "all"
    freeze_bn_stats: bool = False

    def __post_init__(self) -> None:
        blocks = tuple(self.blocks)
        object.__setattr__(self, "blocks", blocks)
        if len(blocks) != 4 or not all(isinstance(b, int) and b >= 1 for b in blocks):
            raise UsageError(f"blocks={self.blocks!r}: expected four positive block counts for layer1-4")
        if not isinstance(self.width, int) or self.width < 1:
            raise UsageError(f"width={self.width!r}: expected a positive integer")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise UsageError(f"num_classes={self.num_classes!r}: expected a positive integer")
        for field, value, allowed in (("aspp", self.aspp, tuple(ASPP_BRANCHES)), ("heads", self.heads, HEAD_LAYOUTS),
                                      ("freeze_bn_affine", self.freeze_bn_affine, ("all", "stem"))):
            if value not in allowed:
                raise UsageError(f"{field}={value!r}: expected one of {', '.join(allowed)}")
        if not isinstance(self.freeze_bn_stats, bool):
            raise UsageError(f"freeze_bn_stats={self.freeze_bn_stats!r}: expected true or false")

    @property
    def depth(self) -> int | None:
        """101 or 50 for the standard ResNets, None for other block counts (e.g. the tiny test model)."""
        return next((d for d, b in DEPTH_BLOCKS.items() if b == self.blocks), None)

    @property
    def head_rule(self) -> str:
        """The rule that turns the heads into one prediction: "sum" for CLAN, "main" (layer6) for multi."""
        return DEFAULT_HEAD_RULE[self.heads]

    @property
    def feature_channels(self) -> int:
        """Channels of the layer4 feature map."""
        return 32 * self.width

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes`` applied; unknown names raise a UsageError listing the valid ones."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise UsageError(f"unknown model option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``arch`` names the family so later families can share config.json)."""
        return {"arch": "deeplabv2", **dataclasses.asdict(self), "blocks": list(self.blocks)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; raises UsageError for another arch or unknown keys."""
        data = dict(data)
        arch = data.pop("arch", "deeplabv2")
        if arch != "deeplabv2":
            raise UsageError(f"model arch {arch!r} is not supported (expected 'deeplabv2')")
        return cls().replace(**data)


class SegOutput(NamedTuple):
    """Model output. ``logits``: per-head stride-8 logits in state-dict order (layer5, then layer6), each
    N×num_classes×h×w. ``features``: the post-ReLU layer4 output, N×32·width×h×w."""

    logits: tuple[Tensor, ...]
    features: Tensor


def combine_heads(logits: tuple[Tensor, ...] | list[Tensor], rule: str) -> Tensor:
    """One prediction from the heads: "sum" adds all heads (CLAN p1 + p2), "main" takes the last head (layer6 of a
    multi model — the main, layer4 head — or the only head of a single model).

    Shape: each N×C×h×w → N×C×h×w.
    """
    if rule == "sum":
        out = logits[0]
        for extra in logits[1:]:
            out = out + extra
        return out
    if rule == "main":
        return logits[-1]
    raise UsageError(f"head rule {rule!r}: expected one of {', '.join(HEAD_RULES)}")


def upsample_logits(logits: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Bilinear resize with align_corners=True, as CLAN/FTA/AdaptSegNet upsample logits to the label or image size.

    Shared by the trainer and evaluation so both resize the same way. Keeps the input dtype.

    Shape: (N, C, h, w) → (N, C, H, W) with (H, W) = size_hw.
    """
    if logits.dim() != 4:
        raise UsageError(f"logits must be N×C×H×W, got shape {tuple(logits.shape)}")
    size_hw = tuple(int(s) for s in size_hw)
    if len(size_hw) != 2 or min(size_hw) < 1:
        raise UsageError(f"size_hw must be two positive ints (H, W), got {size_hw}")
    if tuple(logits.shape[-2:]) == size_hw:
        return logits
    return F.interpolate(logits, size=size_hw, mode="bilinear", align_corners=True)


class Bottleneck(nn.Module):
    """Caffe-style bottleneck: the stride sits on the first 1×1 conv; the 3×3 conv is dilated, padding = dilation."""

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Shape: N×inplanes×H×W → N×4·planes×H'×W' (H' = ceil(H / stride))."""
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class ASPP(nn.Module):
    """DeepLab-v2 classifier (``Classifier_Module``): parallel 3×3 convs with dilations 6/12/18/24, outputs summed.

    All four branches are parameters (so official checkpoints load strictly), but ``branches=2`` sums only the first
    two, as the AdaptSegNet/MaxSquare code does; the unused branches are frozen so optimizers and DDP skip them.
    """

    def __init__(self, inplanes: int, num_classes: int, branches: int) -> None:
        super().__init__()
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(inplanes, num_classes, 3, padding=d, dilation=d, bias=True) for d in ASPP_DILATIONS)
        self.branches = branches
        for conv in self.conv2d_list[branches:]:
            conv.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: N×inplanes×h×w → N×num_classes×h×w."""
        out = self.conv2d_list[0](x)
        for conv in self.conv2d_list[1:self.branches]:
            out = out + conv(x)
        return out


class DeepLabV2(nn.Module):
    """DeepLab-v2 (output stride 8) with one or two ASPP heads; see :class:`ModelConfig` for the options.

    Head layouts: "clan" — layer5 and layer6 both on layer4; "multi" — layer5 on layer3 (auxiliary), layer6 on layer4
    (main); "single" — only layer5, on layer4 (AdaptSegNet's oracle model).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self._inplanes = w
        self.layer1 = self._make_layer(w, config.blocks[0], stride=1, dilation=1)
        self.layer2 = self._make_layer(2 * w, config.blocks[1], stride=2, dilation=1)
        self.layer3 = self._make_layer(4 * w, config.blocks[2], stride=1, dilation=2)
        self.layer4 = self._make_layer(8 * w, config.blocks[3], stride=1, dilation=4)
        branches = ASPP_BRANCHES[config.aspp]
        head_inputs = {"clan": (32 * w, 32 * w), "multi": (16 * w, 32 * w), "single": (32 * w,)}[config.heads]
        for name, channels in zip(HEAD_NAMES, head_inputs):
            self.add_module(name, ASPP(channels, config.num_classes, branches))
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
        # Every layer's first block has a downsample branch (channel change, stride or dilation, as in the reference).
        downsample = nn.Sequential(nn.Conv2d(self._inplanes, planes * 4, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self._inplanes, planes, stride, dilation, downsample)]
        self._inplanes = planes * 4
        layers += [Bottleneck(self._inplanes, planes, 1, dilation, None) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        frozen = self.modules() if self.config.freeze_bn_affine == "all" else [self.bn1]
        for m in frozen:
            if isinstance(m, nn.BatchNorm2d):
                m.requires_grad_(False)

    @property
    def head_modules(self) -> list[ASPP]:
        """The ASPP heads in state-dict order (layer5, then layer6 if present)."""
        return [getattr(self, name) for name in HEAD_NAMES if hasattr(self, name)]

    def train(self, mode: bool = True) -> DeepLabV2:
        """As nn.Module.train, but BN layers stay in eval mode when ``config.freeze_bn_stats`` is set — SyncBatchNorm
        too (``sync_bn`` converts them, and it is not a BatchNorm2d subclass)."""
        super().train(mode)
        if mode and self.config.freeze_bn_stats:
            for m in self.modules():
                if isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> SegOutput:
        """Shape: x N×3×H×W (BGR, mean-subtracted) → logits each N×num_classes×h×w and features N×32·width×h×w,
        h = ⌈(⌈(⌈H/2⌉ − 1)/2⌉ + 1)/2⌉ (ceil-mode pooling), e.g. 512×1024 → 65×129, 720×1280 → 91×161."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x3 = self.layer3(x)
        x4 = self.layer4(x3)
        if self.config.heads == "multi":
            logits = (self.layer5(x3), self.layer6(x4))
        else:
            logits = tuple(head(x4) for head in self.head_modules)
        return SegOutput(logits, x4)

    def predict_logits(self, x: Tensor, rule: str | None = None) -> Tensor:
        """Combined stride-8 logits under ``rule`` (default: the config's head rule) — what evaluation and export run.

        Shape: N×3×H×W → N×num_classes×h×w.
        """
        return combine_heads(self(x).logits, rule or self.config.head_rule)


def deeplab_v2(depth: int = 101, *, aspp: str = "full", heads: str = "clan", num_classes: int = 19,
               **options: Any) -> DeepLabV2:
    """DeepLab-v2 on ResNet-``depth`` (101 or 50); ``options`` are further :class:`ModelConfig` fields."""
    if depth not in DEPTH_BLOCKS:
        raise UsageError(f"depth={depth!r}: expected one of {', '.join(map(str, DEPTH_BLOCKS))}")
    config = ModelConfig(blocks=DEPTH_BLOCKS[depth]).replace(aspp=aspp, heads=heads, num_classes=num_classes, **options)
    return DeepLabV2(config)


def optim_param_groups(model: DeepLabV2, lr: float) -> list[dict[str, Any]]:
    """SGD parameter groups of the reference code: trainable backbone params at ``lr``, heads at 10×``lr``.

    Frozen parameters (BN affine, unused ASPP branches) are left out. Each group carries ``lr_mult`` so a schedule can
    set ``group["lr"] = base_lr · factor · group["lr_mult"]``.
    """
    head_ids = {id(p) for head in model.head_modules for p in head.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    backbone = [p for p in trainable if id(p) not in head_ids]
    heads = [p for p in trainable if id(p) in head_ids]
    return [{"params": backbone, "lr": lr, "lr_mult": 1.0}, {"params": heads, "lr": 10 * lr, "lr_mult": 10.0}]


def is_head_key(key: str) -> bool:
    """True for state-dict keys of the ASPP heads (layer5 / layer6), which an initialisation checkpoint skips."""
    return key.split(".", 1)[0] in HEAD_NAMES


def count_parameters(model: nn.Module) -> int:
    """All parameters, frozen ones included (the figure the papers quote: 45.30 M for R101 CLAN layout)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["ModelConfig", "SegOutput", "DeepLabV2", "ASPP", "Bottleneck", "deeplab_v2", "combine_heads",
           "optim_param_groups", "is_head_key", "count_parameters", "DEFAULT_HEAD_RULE", "HEAD_RULES"]
