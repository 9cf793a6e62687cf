"""``ftadapt eval --checkpoint``: a checkpoint folder on a labelled Cityscapes split, under a named protocol.

Protocols (DESIGN.md §5, methods.md §6), always recorded in the result:

- ``adaptsegnet`` (default, the papers' tables): the image at the input size (1024×512), logits upsampled bilinearly
  (align_corners=True) to the ground truth's own resolution (2048×1024), one confusion matrix over the split.
- ``maxsquare``: MaxSquare's own evaluation — the ground truth is downsampled (NEAREST) to the input size and the
  prediction compared there. The smaller ground truth loses thin and small structures, which raises IoU, so its
  numbers are not comparable with the AdaptSegNet protocol's.

The head rule (``sum`` of both heads for CLAN-style models, ``main`` for multi-level ones) defaults to the model's
own and horizontal-flip TTA is off unless asked for; both are recorded too.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ftadapt.checkpoint import META_FILE, load_model, resolve_checkpoint
from ftadapt.data.check import require_usable
from ftadapt.data.cityscapes import Cityscapes
from ftadapt.data.transforms import resize_label
from ftadapt.errors import UsageError
from ftadapt.evaluate import EvalResult
from ftadapt.evaluate_model import evaluate_dataset
from ftadapt.models.deeplab import HEAD_RULES
from ftadapt.protocol import CITYSCAPES_SIZE

PROTOCOLS = ("adaptsegnet", "maxsquare")


class InputSizeLabels:
    """A labelled Cityscapes split whose ground truth is downsampled (NEAREST) to the input size: MaxSquare's
    evaluation. Everything else passes through."""

    def __init__(self, dataset: Cityscapes) -> None:
        self.dataset = dataset
        self.size = dataset.size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.dataset[index]

    def trainid_label(self, index: int) -> np.ndarray:
        """Shape: (H, W) uint8 at the input size (W, H) = ``self.size``."""
        return np.array(resize_label(self.dataset.trainid_label(index), self.size))  # writable, for torch


def evaluate_checkpoint(checkpoint: str | os.PathLike, root: str | os.PathLike, *, split: str = "val",
                        heads: str | None = None, flip: bool = False, protocol: str = "adaptsegnet",
                        size: tuple[int, int] = CITYSCAPES_SIZE, save_pred: str | os.PathLike | None = None,
                        device: str = "auto", num_workers: int = 2, progress: bool = True) -> EvalResult:
    """mIoU of the model in ``checkpoint`` on Cityscapes ``root``/``split`` under ``protocol`` at input ``size`` (W, H).

    ``checkpoint`` is a checkpoint folder or a run folder (its newest checkpoint). The root must pass the dataset
    doctor for ``split``. ``heads`` overrides the model's head rule; ``save_pred``
    writes ``<frame>.png`` (trainIds) and ``<frame>_color.png`` there. The result's ``protocol`` names the protocol,
    the ground-truth resolution, the input size, the head rule, flip, the split and the checkpoint.
    """
    if protocol not in PROTOCOLS:
        raise UsageError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if heads is not None and heads not in HEAD_RULES:
        raise UsageError(f"head rule {heads!r}: expected one of {', '.join(HEAD_RULES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    checkpoint = resolve_checkpoint(checkpoint)
    model = load_model(checkpoint, device=device)
    meta = json.loads((checkpoint / META_FILE).read_text())
    require_usable("cityscapes", root, [split], progress=progress)
    dataset = Cityscapes(root, split=split, size=size, with_labels=True)
    if protocol == "maxsquare":
        dataset = InputSizeLabels(dataset)
    result = evaluate_dataset(model, dataset, rule=heads, flip=flip, device=device, num_workers=num_workers,
                              progress=progress, save_pred=save_pred)
    result.protocol = {**result.protocol, "name": protocol, "gt_resolution": "input" if protocol == "maxsquare"
                       else "full", "split": split, "checkpoint": str(checkpoint), "method": meta.get("method"),
                       "step": meta.get("step")}
    return result


__all__ = ["evaluate_checkpoint", "InputSizeLabels", "PROTOCOLS"]
