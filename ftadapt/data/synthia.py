"""SYNTHIA-RAND-CITYSCAPES in its official layout: ``RGB/NNNNNNN.png`` images and ``GT/LABELS/NNNNNNN.png`` labels,
16-bit PNGs with the SYNTHIA class id in channel 0 (channel 1 holds instance ids).

Pillow truncates 16-bit-per-channel RGB(A) PNGs to 8 bits, so labels are read by ``ftadapt.data.png16``; images use
Pillow like the other datasets.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ftadapt.data.base import Scan, SegmentationDataset, check_root, require_complete, scan_same_names
from ftadapt.data.png16 import read_label_channel0
from ftadapt.errors import DatasetError, UsageError
from ftadapt.labels import SYNTHIA_MAX_ID, synthia_to_trainid
from ftadapt.protocol import SYNTHIA_SIZE

LAYOUT = "RGB/NNNNNNN.png and GT/LABELS/NNNNNNN.png"

SYNTHIA_VALID_IDS = np.zeros(65536, dtype=bool)
SYNTHIA_VALID_IDS[: SYNTHIA_MAX_ID + 1] = True
SYNTHIA_VALID_IDS.setflags(write=False)


class SYNTHIA(SegmentationDataset):
    """SYNTHIA-RAND-CITYSCAPES image/label pairs, sorted by name or in the order of a list file.

    Args:
        root: the folder holding ``RGB/`` and ``GT/LABELS/``.
        size: protocol (W, H), 1280×760 by default (the native size: no resize).
        augment: CLAN training augmentation (see ``ftadapt.data.base``).
        list_file: names such as ``0000000.png``, one per line, relative to ``RGB/``.
    """

    kind = "synthia"
    valid_ids = SYNTHIA_VALID_IDS
    read_label_ids = staticmethod(read_label_channel0)
    to_trainid = staticmethod(synthia_to_trainid)

    def __init__(self, root: str | os.PathLike, *, size: tuple[int, int] = SYNTHIA_SIZE, augment: bool | str = False,
                 list_file: str | os.PathLike | None = None) -> None:
        scan = self.scan(root, list_file=list_file)
        self.root = Path(root).expanduser()
        fix = f"put each image's label under {self.root / 'GT' / 'LABELS'} with the same name"
        super().__init__(require_complete(scan, self.root / "RGB", fix), size=size, augment=augment)

    @classmethod
    def scan(cls, root: str | os.PathLike, *, split: str | None = None,
             list_file: str | os.PathLike | None = None) -> Scan:
        """Pairs found by listing ``RGB/`` (or reading ``list_file``) and looking up ``GT/LABELS/<same name>``."""
        if split is not None:
            raise UsageError(f"SYNTHIA has no splits (got {split!r}); select images with a list file")
        root = check_root(root, "RGB", "SYNTHIA", LAYOUT)
        labels_dir = root / "GT" / "LABELS"
        if not labels_dir.is_dir():
            raise DatasetError(f"{root}: no GT/LABELS/ folder beside RGB/; extract the SYNTHIA-RAND-CITYSCAPES "
                               f"archive whole so that {labels_dir}/NNNNNNN.png exist")
        return scan_same_names(root / "RGB", labels_dir, list_file)
