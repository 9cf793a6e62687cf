"""Exact reading of 16-bit label PNGs (SYNTHIA's ``GT/LABELS``), which ``PIL.Image.open`` gets wrong.

Pillow opens a 16-bit-per-channel RGB(A) PNG as 8-bit RGB(A), keeping only the high byte of each sample, so class
ids above 255 (and any id stored in the low byte) are lost. Rather than unfiltering in Python — the Average and
Paeth filters are sequential along each row, so numpy cannot vectorise them — this module parses the PNG chunks and
hands the compressed pixel stream to Pillow's own C decoder (``Image.frombytes(..., "zip", rawmode)``) twice: with
rawmode ``RGB;16B`` it keeps the high byte of every sample, with ``RGB;16L`` the low one (for big-endian PNG data).
Single-channel 16-bit files and every 8-bit file are read by Pillow directly, which handles them correctly.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from ftadapt.errors import DatasetError

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RGB16_MODES = {2: "RGB", 6: "RGBA"}  # PNG colour type → Pillow mode, for 16-bit RGB and RGBA


def _chunks(data: bytes, path: Path) -> tuple[bytes, bytes]:
    """The IHDR payload and the concatenated IDAT payloads, with every chunk's CRC checked."""
    if not data.startswith(_SIGNATURE):
        raise DatasetError(f"{path}: not a PNG file (bad signature); re-extract or re-download this file")
    pos, header, idat = len(_SIGNATURE), None, []
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4:pos + 8]
        payload = data[pos + 8:pos + 8 + length]
        if len(payload) != length or pos + 12 + length > len(data):
            break
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        if zlib.crc32(kind + payload) != crc:
            raise DatasetError(f"{path}: corrupt PNG (CRC mismatch in a {kind.decode('latin-1')} chunk); "
                               "re-extract or re-download this file")
        if kind == b"IHDR":
            header = payload
        elif kind == b"IDAT":
            idat.append(payload)
        elif kind == b"IEND":
            if header is None or not idat:
                break
            return header, b"".join(idat)
        pos += 12 + length
    raise DatasetError(f"{path}: truncated or corrupt PNG (no complete IHDR/IDAT/IEND); re-extract or "
                       "re-download this file")


def read_label_channel0(path: str | os.PathLike) -> np.ndarray:
    """Decode a label PNG and return its first channel exactly: 16-bit files keep all 16 bits.

    Accepts 8- and 16-bit grayscale, RGB and RGBA (and 8-bit palette: the indices). Shape: (H, W) uint16 for
    16-bit files, uint8 for 8-bit ones.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    header, idat = _chunks(data, path)
    width, height, bit_depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", header[:13])
    try:
        if bit_depth == 16 and color_type in _RGB16_MODES:
            if interlace:
                raise DatasetError(f"{path}: interlaced 16-bit colour PNGs are not supported; re-save the label "
                                   "without interlacing")
            mode = _RGB16_MODES[color_type]
            high = np.asarray(Image.frombytes(mode, (width, height), idat, "zip", f"{mode};16B"))[..., 0]
            low = np.asarray(Image.frombytes(mode, (width, height), idat, "zip", f"{mode};16L"))[..., 0]
            return (high.astype(np.uint16) << 8) | low
        if bit_depth == 16 and color_type != 0:
            raise DatasetError(f"{path}: 16-bit PNG of colour type {color_type} (gray+alpha) is not a supported "
                               "label format; expected 16-bit gray, RGB or RGBA")
        with Image.open(io.BytesIO(data)) as img:
            array = np.asarray(img)
    except (OSError, ValueError, SyntaxError, zlib.error) as exc:
        raise DatasetError(f"{path}: unreadable or corrupt PNG ({exc}); re-extract or re-download this file") from None
    if array.ndim == 3:
        array = array[..., 0]
    return array if array.dtype == np.uint8 else array.astype(np.uint16)
