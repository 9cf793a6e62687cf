"""The Cityscapes 19-class label space shared by every stage (numpy only).

Facts from ``reference/methods.md`` §5 and §7: trainIds 0–18 in the standard Cityscapes order, 255 = ignore,
the Cityscapes/GTA5 label-id → trainId table, the SYNTHIA id → trainId table and the 16-/13-class SYNTHIA subsets.
The runtime imports this module, so it must never import torch.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ftadapt.errors import UsageError

IGNORE_INDEX = 255
NUM_CLASSES = 19

CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)

PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# Cityscapes label id -> trainId; GTA5 labels use the same ids. Every id not listed maps to IGNORE_INDEX.
CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
# The largest Cityscapes label id (33 = bicycle); -1 (license plate) is stored as 255 in uint8 files.
CITYSCAPES_MAX_ID = 33

# SYNTHIA-RAND-CITYSCAPES class id (channel 0 of the 16-bit label PNG) -> trainId.
SYNTHIA_ID_TO_TRAINID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9,
    1: 10, 10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}
SYNTHIA_MAX_ID = 22

# SYNTHIA evaluation subsets, as trainIds.
SYNTHIA_16: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
SYNTHIA_13: tuple[int, ...] = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)


def _lookup(table: dict[int, int], size: int) -> np.ndarray:
    lut = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    for src, dst in table.items():
        lut[src] = dst
    lut.setflags(write=False)
    return lut


# Lookup tables indexed by raw label value: ``CITYSCAPES_LUT[label_ids]`` gives trainIds (uint8) for any uint8 image.
CITYSCAPES_LUT: np.ndarray = _lookup(CITYSCAPES_ID_TO_TRAINID, 256)
SYNTHIA_LUT: np.ndarray = _lookup(SYNTHIA_ID_TO_TRAINID, 65536)


def cityscapes_to_trainid(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes/GTA5 label-id image (uint8) to trainIds (uint8, 255 = ignore)."""
    if label_ids.dtype != np.uint8:
        raise TypeError(f"Cityscapes label ids must be uint8, got {label_ids.dtype}")
    return CITYSCAPES_LUT[label_ids]


def synthia_to_trainid(label_ids: np.ndarray) -> np.ndarray:
    """Map SYNTHIA class ids (uint8 or uint16, channel 0 of the label PNG) to trainIds (uint8, 255 = ignore)."""
    if label_ids.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"SYNTHIA label ids must be uint8 or uint16, got {label_ids.dtype}")
    return SYNTHIA_LUT[label_ids]


def palette_table(palette: Sequence[Sequence[int]] = PALETTE) -> np.ndarray:
    """A read-only 256×3 uint8 lookup table: row c is class c's colour, every other value (255 = ignore …) black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    table.setflags(write=False)
    return table


def palette_array() -> np.ndarray:
    """The Cityscapes palette as a writable 256×3 uint8 array (for PNG palettes): trainId rows 0–18 coloured, every
    other value (ignore included) black."""
    return palette_table().copy()


_CITYSCAPES_TABLE = palette_table()


def colorize(labels: object, table: np.ndarray = _CITYSCAPES_TABLE) -> np.ndarray:
    """Colour a label map with ``table`` (from ``palette_table``; the Cityscapes palette by default); values outside
    0–255 and rows the table leaves black (255 = ignore) are black.

    Shape: integer (..., H, W) → uint8 (..., H, W, 3).
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise UsageError(f"colorize expects an integer label map, got dtype {labels.dtype}")
    inside = (labels >= 0) & (labels < table.shape[0])
    return table[np.where(inside, labels, IGNORE_INDEX).astype(np.intp)]


def class_ids(names: str | Sequence[str]) -> tuple[int, ...]:
    """trainIds of class names as a user writes them: a comma-separated string or a list; each item a name of
    ``CLASS_NAMES`` (case ignored, ``_`` or ``-`` for a space: ``traffic_sign``), its last word when that is unique
    (``sign``, ``light``) or a trainId (``13``). Order kept, duplicates dropped; an unknown name is a UsageError that
    lists the valid ones.
    """
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    if not items:
        raise UsageError("no class named; give names such as road,car,person (or trainIds 0–18)")
    last_words = [n.split()[-1] for n in CLASS_NAMES]
    lookup = {n: i for i, n in enumerate(CLASS_NAMES)}
    lookup.update({w: i for i, w in enumerate(last_words) if last_words.count(w) == 1 and w not in lookup})
    out: list[int] = []
    for item in items:
        key = item.lower().replace("_", " ").replace("-", " ")
        if key.isdigit() and int(key) < NUM_CLASSES:
            found = int(key)
        elif key in lookup:
            found = lookup[key]
        else:
            raise UsageError(f"unknown class {item!r}; classes: {', '.join(CLASS_NAMES)} (or trainIds 0–18)")
        if found not in out:
            out.append(found)
    return tuple(out)
