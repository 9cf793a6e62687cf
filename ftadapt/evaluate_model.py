"""Evaluate a segmentation model on a labelled Cityscapes split with the AdaptSegNet protocol (DESIGN.md §5).

Each image at the protocol input size (1024×512) → the model's logits under a head rule ("sum" for CLAN, "main" for
multi) → bilinear upsample (align_corners=True) to the ground truth's own resolution → argmax → one confusion matrix
over the whole split. ``flip`` is the paper's test-time augmentation: the mean of softmax(image) and the mirrored
softmax(mirrored image), upsampled and argmaxed. Used by periodic evaluation in training and ``ftadapt eval``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ftadapt.data.cityscapes import Cityscapes
from ftadapt.evaluate import ConfusionMatrix, EvalResult, adaptsegnet_protocol
from ftadapt.imageio import write_png
from ftadapt.labels import palette_array
from ftadapt.models.deeplab import combine_heads, upsample_logits
from ftadapt.protocol import CITYSCAPES_SIZE


class _WithFullLabels(Dataset):
    """(image at the protocol size, trainId label at the file's resolution, frame name) of a labelled dataset."""

    def __init__(self, dataset: Cityscapes) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, np.ndarray, str]:
        sample = self.dataset[index]
        return sample["image"], self.dataset.trainid_label(index), sample["name"]


@torch.no_grad()
def predict(model: nn.Module, image: Tensor, size_hw: tuple[int, int], *, rule: str | None = None,
            flip: bool = False) -> Tensor:
    """Predicted trainIds at ``size_hw``.

    Shape: image N×3×h×w (BGR − mean) → N×H×W int64.
    """
    rule = rule or model.config.head_rule
    logits = combine_heads(model(image).logits, rule).float()
    if not flip:
        return upsample_logits(logits, size_hw).argmax(dim=1)
    mirrored = combine_heads(model(image.flip(-1)).logits, rule).float().flip(-1)
    prob = (logits.softmax(dim=1) + mirrored.softmax(dim=1)) / 2
    return upsample_logits(prob, size_hw).argmax(dim=1)


def evaluate_dataset(model: nn.Module, dataset: Cityscapes, *, rule: str | None = None, flip: bool = False,
                     device: str | torch.device | None = None, num_workers: int = 2, progress: bool = True,
                     save_pred: str | os.PathLike | None = None) -> EvalResult:
    """mIoU of ``model`` (in eval mode, on ``device``) over a labelled dataset opened at the protocol input size.

    ``save_pred`` writes ``<frame>.png`` (trainIds) and ``<frame>_color.png`` (palette) per image there.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    rule = rule or model.config.head_rule
    confusion = ConfusionMatrix()
    loader = DataLoader(_WithFullLabels(dataset), batch_size=None, num_workers=num_workers)
    for image, label, name in tqdm(loader, total=len(dataset), disable=not progress, unit="img", desc="eval"):
        pred = predict(model, image[None].to(device), label.shape[-2:], rule=rule, flip=flip)[0]
        pred = pred.to(torch.uint8).cpu().numpy()
        confusion.update(label.numpy(), pred, name=name)
        if save_pred is not None:
            write_png(Path(save_pred) / f"{name}.png", pred)
            write_png(Path(save_pred) / f"{name}_color.png", pred, palette=palette_array())
    protocol = adaptsegnet_protocol(input_size=list(dataset.size), heads=rule, flip=flip)
    return EvalResult.from_confusion(confusion, n_images=len(dataset), protocol=protocol)


def evaluate_cityscapes(model: nn.Module, root: str | os.PathLike, *, split: str = "val",
                        size: tuple[int, int] = CITYSCAPES_SIZE, **options) -> EvalResult:
    """``evaluate_dataset`` on ``root``'s ``split`` at input ``size`` (W, H); ``options`` as there."""
    return evaluate_dataset(model, Cityscapes(root, split=split, size=size, with_labels=True), **options)
