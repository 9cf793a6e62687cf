"""GTA5 in its official layout: ``images/NNNNN.png`` and ``labels/NNNNN.png`` (palette PNGs whose indices are
Cityscapes label ids, so they share Cityscapes' decoder, id→trainId table and valid ids)."""
from __future__ import annotations

import os
from pathlib import Path

from ftadapt.data.base import Scan, SegmentationDataset, check_root, require_complete, scan_same_names
from ftadapt.data.cityscapes import CITYSCAPES_VALID_IDS, Cityscapes
from ftadapt.errors import DatasetError, UsageError
from ftadapt.protocol import GTA5_SIZE

LAYOUT = "images/NNNNN.png and labels/NNNNN.png"


class GTA5(SegmentationDataset):
    """GTA5 image/label pairs, sorted by name or in the order of a list file.

    Args:
        root: the folder holding ``images/`` and ``labels/``.
        size: protocol (W, H), 1280×720 by default.
        augment: CLAN training augmentation (see ``ftadapt.data.base``).
        list_file: names such as ``00001.png``, one per line, relative to ``images/`` (the AdaptSegNet list), or
            integer ids such as ``1`` (MaxSquare's lists of the official split: 12,403 train images).
    """

    kind = "gta5"
    valid_ids = CITYSCAPES_VALID_IDS
    read_label_ids = staticmethod(Cityscapes.read_label_ids)
    to_trainid = staticmethod(Cityscapes.to_trainid)

    def __init__(self, root: str | os.PathLike, *, size: tuple[int, int] = GTA5_SIZE, augment: bool | str = False,
                 list_file: str | os.PathLike | None = None) -> None:
        scan = self.scan(root, list_file=list_file)
        self.root = Path(root).expanduser()
        fix = f"put each image's label under {self.root / 'labels'} with the same name, or leave it out of a list file"
        super().__init__(require_complete(scan, self.root / "images", fix), size=size, augment=augment)

    @classmethod
    def scan(cls, root: str | os.PathLike, *, split: str | None = None,
             list_file: str | os.PathLike | None = None) -> Scan:
        """Pairs found by listing ``images/`` (or reading ``list_file``) and looking up ``labels/<same name>``."""
        if split is not None:
            raise UsageError(f"GTA5 has no splits (got {split!r}); select images with a list file")
        root = check_root(root, "images", "GTA5", LAYOUT)
        labels_dir = root / "labels"
        if not labels_dir.is_dir():
            raise DatasetError(f"{root}: no labels/ folder beside images/; extract the GTA5 label archives so that "
                               f"{labels_dir}/NNNNN.png exist")
        return scan_same_names(root / "images", labels_dir, list_file, name_of=_list_name)


def _list_name(entry: str) -> str:
    """A list entry as a file name: ``00001.png`` as it is (AdaptSegNet's lists), ``1`` as ``00001.png`` (MaxSquare's
    integer-id lists of the official GTA5 train/val split)."""
    return f"{int(entry):05d}.png" if entry.isdigit() else entry
