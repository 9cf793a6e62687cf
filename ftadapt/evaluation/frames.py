"""The labelled frames an evaluation runs over, and what one decoded frame gives the predictors (numpy + Pillow).

A Cityscapes split is known either by its root (``leftImg8bit/`` + ``gtFine/``: images and labels, what a model
needs) or by its ``gtFine/<split>`` folder alone (labels only: enough to score prediction PNGs). Frames are named by
their Cityscapes frame id (``<city>_<seq>_<frame>``), which is also how prediction files are matched to them.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ftadapt.errors import DatasetError, UsageError
from ftadapt.evaluation.protocols import Protocol
from ftadapt.imageio import read_label, read_rgb_pil, resize_label
from ftadapt.labels import CITYSCAPES_LUT
from ftadapt.machine import cpu_cores

FRAME_ID = re.compile(r"[a-z]+_\d{6}_\d{6}")
GT_SUFFIX = "_gtFine_labelIds.png"
_SPLITS = ("train", "val", "test")
_SHOWN = 5
# The table of labels.cityscapes_to_trainid, applied with Pillow's point(): 5× faster than numpy fancy indexing.
_LUT_LIST = CITYSCAPES_LUT.tolist()


@dataclass(frozen=True)
class EvalFrame:
    """One labelled frame: its id, its gtFine label-id file and, when known, its image."""

    name: str
    label: Path
    image: Path | None = None


@dataclass
class Sample:
    """A decoded frame as predictors see it: ``label`` holds trainIds at the protocol's ground-truth resolution,
    ``rgb`` the image as decoded (None when no predictor needs pixels). ``cache`` lets predictors share work on
    the frame (e.g. the resized model input) within one decoding thread. ``mismatch`` describes an image and a label
    file of different sizes (None when they agree): a model's prediction of that frame cannot be scored."""

    name: str
    label: np.ndarray
    rgb: Image.Image | None = None
    cache: dict[Any, Any] = field(default_factory=dict)
    mismatch: str | None = None


@dataclass(frozen=True)
class LabelledSplit:
    """The frames of one labelled split, sorted by frame id; ``where`` names it in messages, ``split`` (when known)
    goes into results."""

    frames: tuple[EvalFrame, ...]
    where: str
    split: str | None = None

    @classmethod
    def from_root(cls, root: str | os.PathLike, split: str = "val") -> LabelledSplit:
        """Images and labels of Cityscapes ``root``/``split`` (every image must have its label)."""
        from ftadapt.data.cityscapes import Cityscapes  # the layout's scanner (imports torch's Dataset)

        dataset = Cityscapes(root, split=split, with_labels=True)
        frames = tuple(EvalFrame(f.name, f.label, f.image) for f in dataset.frames)
        return cls(frames, f"cityscapes {split} at {root}", split)

    @classmethod
    def from_gt_dir(cls, gt_dir: str | os.PathLike) -> LabelledSplit:
        """The labels of a ``gtFine/<split>`` folder, without images."""
        frames = tuple(EvalFrame(name, path) for name, path in index_ground_truth(gt_dir).items())
        return cls(frames, str(gt_dir))

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.frames]

    def head(self, limit: int | None) -> LabelledSplit:
        """The first ``limit`` frames (in frame-id order; all of them for None), e.g. for a quick check."""
        if limit is None or limit >= len(self.frames):
            return self
        if limit < 1:
            raise UsageError(f"limit {limit}: expected a positive number of frames")
        return LabelledSplit(self.frames[:limit], f"{self.where} (first {limit} frames)", self.split)

    def require_images(self) -> None:
        """A UsageError unless every frame has its image (a model needs pixels; a gtFine folder has none)."""
        if any(f.image is None for f in self.frames):
            raise UsageError(f"{self.where} holds labels only; evaluating a model needs the images too: pass the "
                             "Cityscapes root (--data cityscapes:ROOT) instead of the gtFine folder")


def labelids_to_trainids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids → trainIds (255 = ignore), same table as ``labels.cityscapes_to_trainid``.

    Shape: (H, W) uint8 → (H, W) uint8.
    """
    return np.asarray(Image.fromarray(label_ids).point(_LUT_LIST))


def decode(frame: EvalFrame, protocol: Protocol, *, with_image: bool) -> Sample:
    """Read one frame: its trainIds at the protocol's ground-truth resolution and, with ``with_image``, its RGB."""
    label = labelids_to_trainids(read_label(frame.label))
    (lh, lw), mismatch = label.shape, None
    if protocol.gt_resolution == "input":
        label = resize_label(label, protocol.input_size)
    rgb = read_rgb_pil(frame.image) if with_image and frame.image is not None else None
    if rgb is not None and rgb.size != (lw, lh):
        mismatch = f"image {rgb.width}x{rgb.height}, ground truth {lw}x{lh}"
    return Sample(frame.name, label, rgb, mismatch=mismatch)


def index_ground_truth(gt_dir: str | os.PathLike) -> dict[str, Path]:
    """Frame id → ``<city>/<frame>_gtFine_labelIds.png`` under ``gt_dir`` (the ``gtFine/<split>`` folder).

    If ``gt_dir`` is the Cityscapes root, the ``gtFine`` folder or a city folder, the error says what to pass.
    """
    gt_dir = Path(gt_dir)
    found = {p.name[: -len(GT_SUFFIX)]: p for p in sorted(gt_dir.glob(f"*/*{GT_SUFFIX}"))}
    if found:
        return found
    if (gt_dir / "gtFine").is_dir():
        hint = f"it looks like the Cityscapes root: pass {gt_dir / 'gtFine' / 'val'} (or another split)"
    elif any(next((gt_dir / s).glob(f"*/*{GT_SUFFIX}"), None) for s in _SPLITS):
        hint = f"it looks like the gtFine folder: pass {gt_dir / 'val'} (or another split)"
    elif next(gt_dir.glob(f"*{GT_SUFFIX}"), None):
        hint = f"it looks like one city folder: pass its parent {gt_dir.parent}"
    else:
        hint = "pass the gtFine/<split> folder of Cityscapes (e.g. Cityscapes/gtFine/val)"
    raise DatasetError(f"{gt_dir}: no <city>/<frame>{GT_SUFFIX} files; {hint}")


def listing(names: list[str], what: str, shown: int = _SHOWN) -> str:
    """'N <what>: a, b, c, … (+k more)' for a problem report."""
    more = f", … (+{len(names) - shown} more)" if len(names) > shown else ""
    return f"{len(names)} {what}: {', '.join(names[:shown])}{more}"


def default_workers() -> int:
    """Decoding threads: one per CPU core this process may use."""
    return cpu_cores()


__all__ = ["EvalFrame", "Sample", "LabelledSplit", "decode", "index_ground_truth", "labelids_to_trainids",
           "listing", "default_workers", "FRAME_ID", "GT_SUFFIX"]
