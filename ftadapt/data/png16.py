"""Exact reading of 16-bit label PNGs (SYNTHIA's ``GT/LABELS``), which ``PIL.Image.open`` gets wrong.

Pillow opens a 16-bit-per-channel RGB(A) PNG as 8-bit RGB(A), keeping only the high byte of each sample, so class
ids above 255 (and any id stored in the low byte) are lost. The chunks are checked and the 16-bit colour samples
decoded exactly by ``ftadapt.imageio`` (``png_chunks``, ``png16_colour_samples``: Pillow's own C decoder, run once
for the high and once for the low byte of every sample). Single-channel 16-bit files and every 8-bit file are read by
Pillow directly, which handles them correctly.
"""
from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from ftadapt.errors import DatasetError
from ftadapt.imageio import png16_colour_samples, png_chunks


def read_label_channel0(path: str | os.PathLike) -> np.ndarray:
    """Decode a label PNG and return its first channel exactly: 16-bit files keep all 16 bits.

    Accepts 8- and 16-bit grayscale, gray+alpha, RGB and RGBA (and 8-bit palette: the indices). Shape: (H, W) uint16 for
    16-bit files, uint8 for 8-bit ones.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    header, idat = png_chunks(data, path)
    try:
        samples = png16_colour_samples(header, idat)  # 16-bit RGB, RGBA, gray+alpha: all 16 bits
        if samples is not None:
            return samples[..., 0]
        with Image.open(io.BytesIO(data)) as img:
            array = np.asarray(img)
    except (OSError, ValueError, SyntaxError, zlib.error) as exc:
        raise DatasetError(f"{path}: unreadable or corrupt PNG ({exc}); re-extract or re-download this file") from None
    if array.ndim == 3:
        array = array[..., 0]
    return array if array.dtype == np.uint8 else array.astype(np.uint16)
