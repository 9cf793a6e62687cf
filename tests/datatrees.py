"""Tiny hand-made dataset trees in the official GTA5 / Cityscapes / SYNTHIA layouts, for the data tests.

Every label holds a known pattern of raw ids (``label_ids``), so tests can compute trainIds and histograms by hand.
``write_png16`` is an independent minimal PNG encoder: SYNTHIA labels are 16-bit PNGs that Pillow cannot write.
The builders write over files a root already holds (tests call them again to add splits or change frames).
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from ftadapt.imageio import write_png
from ftadapt.labels import palette_array

# Raw Cityscapes ids used in GTA5/Cityscapes labels: road, sidewalk, car, unlabeled (0), license plate (255).
CITYSCAPES_IDS = (7, 8, 26, 0, 255)
# Raw SYNTHIA ids: sky (1 → 10), road (3 → 0), car (8 → 13), void (0 → ignore).
SYNTHIA_IDS = (1, 3, 8, 0)


def rgb_image(w: int, h: int, seed: int) -> np.ndarray:
    """A deterministic random RGB image. Shape: (h, w, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def label_ids(w: int, h: int, ids: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    """Vertical stripes cycling through ``ids`` (column x holds ``ids[x % len(ids)]``). Shape: (h, w)."""
    row = np.array([ids[x % len(ids)] for x in range(w)], dtype=dtype)
    return np.tile(row, (h, 1))


def _predict(kind: int, left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    """PNG filter predictor (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth) from reconstructed bytes."""
    if kind == 0:
        return np.zeros_like(left)
    if kind == 1:
        return left
    if kind == 2:
        return up
    if kind == 3:
        return (left + up) // 2
    p = left + up - up_left
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
    return np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))


def write_png16(path: Path, array: np.ndarray) -> None:
    """Write a 16-bit PNG (gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4)), cycling row filters through all five
    types and splitting the pixel stream over two IDAT chunks, so a decoder must handle both."""
    array = np.asarray(array, dtype=np.uint16)
    h, w = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    bpp = 2 * channels
    rows = array.astype(">u2").reshape(h, -1).view(np.uint8).reshape(h, w * bpp).astype(np.int32)
    raw = bytearray()
    for y in range(h):
        up = rows[y - 1] if y else np.zeros_like(rows[y])
        left = np.concatenate([np.zeros(bpp, np.int32), rows[y][:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        kind = y % 5
        raw += bytes([kind]) + ((rows[y] - _predict(kind, left, up, up_left)) % 256).astype(np.uint8).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2, 4: 6}[channels], 0, 0, 0)
    stream = zlib.compress(bytes(raw))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream[:7])
                     + chunk(b"IDAT", stream[7:]) + chunk(b"IEND", b""))


def make_gta5(root: Path, n: int = 3, size: tuple[int, int] = (24, 12)) -> Path:
    """``root/images/0000i.png`` RGB and ``root/labels/0000i.png`` palette PNGs of Cityscapes ids."""
    for i in range(1, n + 1):
        write_png(root / "images" / f"{i:05d}.png", rgb_image(*size, seed=i), overwrite=True)
        write_png(root / "labels" / f"{i:05d}.png", label_ids(*size, CITYSCAPES_IDS), palette=palette_array(),
                  overwrite=True)
    return root


def make_cityscapes(root: Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (32, 16),
                    labels: bool = True) -> Path:
    """Frames alternating between two cities per split; mode-L ``*_gtFine_labelIds.png`` labels when ``labels``."""
    for split, n in (counts or {"train": 3, "val": 2}).items():
        for i in range(n):
            city = ("bremen", "aachen")[i % 2]
            frame = f"{city}_{i:06d}_000019"
            write_png(root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", rgb_image(*size, seed=i),
                      overwrite=True)
            if labels:
                write_png(root / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png",
                          label_ids(*size, CITYSCAPES_IDS), overwrite=True)
    return root


def make_synthia(root: Path, n: int = 2, size: tuple[int, int] = (20, 10)) -> Path:
    """``RGB/000000i.png`` and 16-bit RGB ``GT/LABELS/000000i.png``: class ids in channel 0, instance ids (50 + x)
    in channel 1, zeros in channel 2."""
    for i in range(n):
        write_png(root / "RGB" / f"{i:07d}.png", rgb_image(*size, seed=i), overwrite=True)
        ids = label_ids(*size, SYNTHIA_IDS, dtype=np.uint16)
        instances = np.tile(np.arange(50, 50 + size[0], dtype=np.uint16), (size[1], 1))
        write_png16(root / "GT" / "LABELS" / f"{i:07d}.png", np.stack([ids, instances, np.zeros_like(ids)], axis=-1))
    return root
