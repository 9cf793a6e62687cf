"""Cityscapes in its official layout: ``leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png`` images and
``gtFine/<split>/<city>/<frame>_gtFine_labelIds.png`` labels (Cityscapes label ids, mapped to trainIds)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ftadapt.data.base import (
    Frame,
    Scan,
    SegmentationDataset,
    check_root,
    folder_names,
    png_names,
    read_list_file,
    require_complete,
)
from ftadapt.errors import DatasetError
from ftadapt.imageio import read_label
from ftadapt.labels import CITYSCAPES_MAX_ID, IGNORE_INDEX, cityscapes_to_trainid
from ftadapt.protocol import CITYSCAPES_SIZE

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
LAYOUT = f"leftImg8bit/<split>/<city>/*{IMAGE_SUFFIX} and gtFine/<split>/<city>/*{LABEL_SUFFIX}"

# Label ids a Cityscapes/GTA5 label file may hold: 0..33, and 255 (id -1, license plate, stored in uint8).
CITYSCAPES_VALID_IDS = np.zeros(256, dtype=bool)
CITYSCAPES_VALID_IDS[: CITYSCAPES_MAX_ID + 1] = True
CITYSCAPES_VALID_IDS[IGNORE_INDEX] = True
CITYSCAPES_VALID_IDS.setflags(write=False)


_MAXSQUARE_ENTRY = re.compile(r"(?:train|val|test)_([a-z]+)_(\d{6}_\d{6})")


def _list_entry(entry: str) -> str:
    """A list entry as ``<city>/<frame>_leftImg8bit.png``: AdaptSegNet's entries as they are, MaxSquare's
    ``train_aachen_000000_000019`` ids converted."""
    match = _MAXSQUARE_ENTRY.fullmatch(entry)
    return f"{match[1]}/{match[1]}_{match[2]}{IMAGE_SUFFIX}" if match else entry


class Cityscapes(SegmentationDataset):
    """Cityscapes frames of one split, sorted by city and frame, or in the order of a list file.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"train"`` or ``"val"`` (any split folder present is accepted).
        size: protocol (W, H), 1024×512 by default.
        augment: CLAN training augmentation (see ``ftadapt.data.base``).
        list_file: entries such as ``frankfurt/frankfurt_000001_007973_leftImg8bit.png`` relative to
            ``leftImg8bit/<split>/`` (the AdaptSegNet lists) or ``val_frankfurt_000001_007973`` (MaxSquare's lists).
        with_labels: False for the unlabeled target of training: samples then carry no ``"label"`` key.
    """

    kind = "cityscapes"
    splits = ("train", "val")
    valid_ids = CITYSCAPES_VALID_IDS

    def __init__(self, root: str | os.PathLike, *, split: str = "train", size: tuple[int, int] = CITYSCAPES_SIZE,
                 augment: bool | str = False, list_file: str | os.PathLike | None = None,
                 with_labels: bool = True) -> None:
        scan = self.scan(root, split=split, list_file=list_file, with_labels=with_labels)
        self.root = Path(root).expanduser()
        self.split = split
        gt_dir = self.root / "gtFine" / split
        if with_labels and not gt_dir.is_dir():
            raise DatasetError(f"{gt_dir}: no gtFine labels for split {split!r}; extract gtFine_trainvaltest.zip into "
                               f"{self.root} (the unlabeled target of training needs none: with_labels=False)")
        fix = (f"extract gtFine_trainvaltest.zip into {self.root}, or open the split with with_labels=False"
               if with_labels else f"extract leftImg8bit_trainvaltest.zip into {self.root}")
        super().__init__(require_complete(scan, self.root / "leftImg8bit" / split, fix, labels=with_labels),
                         size=size, augment=augment)

    @classmethod
    def scan(cls, root: str | os.PathLike, *, split: str | None = "train",
             list_file: str | os.PathLike | None = None, with_labels: bool = True) -> Scan:
        """Frames of ``split``: walked from ``leftImg8bit/<split>/`` or read from ``list_file``."""
        root = check_root(root, "leftImg8bit", "Cityscapes", LAYOUT)
        image_dir = root / "leftImg8bit" / str(split)
        if not image_dir.is_dir():
            found = ", ".join(folder_names(root / "leftImg8bit")) or "none"
            raise DatasetError(f"{image_dir}: no such split folder (splits found: {found}); extract "
                               f"leftImg8bit_trainvaltest.zip into {root}")
        gt_dir = root / "gtFine" / str(split)
        if list_file is None:
            entries = [f"{city}/{name}" for city in folder_names(image_dir) for name in png_names(image_dir / city)
                       if name.endswith(IMAGE_SUFFIX)]
        else:
            entries = [_list_entry(e) for e in read_list_file(list_file)]
            bad = [e for e in entries if not e.endswith(IMAGE_SUFFIX) or e.count("/") != 1]
            if bad:
                raise DatasetError(f"{list_file}: entries must look like frankfurt/frankfurt_000001_007973"
                                   f"{IMAGE_SUFFIX} (relative to {image_dir}), got {bad[0]!r}")
        labels_by_city: dict[str, set[str]] = {}
        frames, missing_images = [], []
        for entry in entries:
            city, image_name = entry.split("/")
            image = image_dir / city / image_name
            if list_file is not None and not image.is_file():
                missing_images.append(image)
                continue
            frame_id = image_name[: -len(IMAGE_SUFFIX)]
            label = None
            if with_labels:
                if city not in labels_by_city:
                    labels_by_city[city] = set(png_names(gt_dir / city))
                if frame_id + LABEL_SUFFIX in labels_by_city[city]:
                    label = gt_dir / city / (frame_id + LABEL_SUFFIX)
            frames.append(Frame(frame_id, image, label))
        orphans = []
        if with_labels and list_file is None:
            have = {f.name for f in frames}
            orphans = [gt_dir / city / name for city in folder_names(gt_dir) for name in png_names(gt_dir / city)
                       if name.endswith(LABEL_SUFFIX) and name[: -len(LABEL_SUFFIX)] not in have]
        return Scan(frames, missing_images, orphans)

    @staticmethod
    def read_label_ids(path: Path) -> np.ndarray:
        """Decode an 8-bit label-id PNG (also GTA5's palette PNGs, whose indices are Cityscapes ids).

        Shape: (H, W) uint8.
        """
        return read_label(path)

    @staticmethod
    def to_trainid(ids: np.ndarray) -> np.ndarray:
        return cityscapes_to_trainid(ids)
