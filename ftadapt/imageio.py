"""PNG/JPEG decoding, encoding and the protocol resizes, shared by the datasets, the doctor, the evaluator and the
runtime's ``predict`` (numpy + Pillow).

Decoding uses Pillow: it releases the GIL while inflating, so a thread pool scales across cores, and it is the
decoder the reference code used (so BICUBIC resizes match). Every failure becomes a ``DatasetError`` naming the file —
an image above Pillow's decompression-bomb limit too (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 Mpx, refused beyond
twice that); the environment variable ``FTADAPT_MAX_IMAGE_PIXELS`` sets that limit for every command.

Images of more than 8 bits per sample are scaled to 8 bits, never clipped: 16-bit samples (PNG, PGM/PPM, TIFF; Pillow
modes ``I;16*`` and ``I`` within 0–65535) become round(v · 255 / 65535), floating-point ones (mode ``F``) in 0–1
round(v · 255); other ranges are refused. Pillow keeps only the high byte of 16-bit colour PNGs, so those are decoded
here exactly (:func:`png16_colour_samples`, also what SYNTHIA's 16-bit labels need).
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ftadapt.errors import DatasetError
from ftadapt.fsutil import atomic_path

_LABEL_MODES = ("L", "P")
PIXELS_ENV = "FTADAPT_MAX_IMAGE_PIXELS"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RGB16_MODES = {2: "RGB", 6: "RGBA"}  # PNG colour type → Pillow mode, for 16-bit RGB and RGBA
_GRAY_ALPHA16 = 4  # PNG colour type of gray + alpha


def _apply_pixel_limit() -> None:
    """Pillow's decompression-bomb limit from ``FTADAPT_MAX_IMAGE_PIXELS`` when it is set (Pillow's own otherwise)."""
    value = os.environ.get(PIXELS_ENV)
    if value is None:
        return
    if not value.strip().isdigit() or int(value) < 1:
        raise DatasetError(f"{PIXELS_ENV}={value!r}: expected a positive whole number of pixels")
    Image.MAX_IMAGE_PIXELS = int(value)


def pixel_limit() -> int:
    """The largest image, in pixels, that every reader here decodes without complaint (Pillow's limit, or
    ``FTADAPT_MAX_IMAGE_PIXELS``): what the images this project writes must stay within."""
    _apply_pixel_limit()
    return int(Image.MAX_IMAGE_PIXELS)


def _too_large(path: Path, exc: Exception) -> DatasetError:
    return DatasetError(f"{path}: too large to decode safely ({exc}); downscale it, or, if you need images this "
                        f"large, raise the limit: {PIXELS_ENV}=<pixels> in the environment (Python: "
                        "PIL.Image.MAX_IMAGE_PIXELS = <pixels>; Pillow refuses images over twice the limit)")


def _open(path: Path) -> Image.Image:
    """Open and decode an image; every failure is a DatasetError naming the file."""
    _apply_pixel_limit()
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable or corrupt image ({exc}); re-extract or re-download this "
                           "file") from None
    return img


def verify_image(path: str | os.PathLike) -> tuple[int, int]:
    """(W, H) of an image whose file checks out (header and, for PNG, chunk CRCs) without decoding its pixels; a
    DatasetError naming the file otherwise (what the dataset doctor reports)."""
    path = Path(path)
    _apply_pixel_limit()
    try:
        with Image.open(path) as img:
            img.verify()
            return img.size
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except Exception as exc:  # verify() raises whatever the damage provokes (struct.error, SyntaxError, OSError …)
        raise DatasetError(f"{path}: corrupt or unreadable image ({exc})") from None


def png_chunks(data: bytes, path: Path) -> tuple[bytes, bytes]:
    """The IHDR payload and the concatenated IDAT payloads of PNG file contents, with every chunk's CRC checked; a
    DatasetError naming ``path`` for anything that is not a whole PNG."""
    if not data.startswith(_PNG_SIGNATURE):
        raise DatasetError(f"{path}: not a PNG file (bad signature); re-extract or re-download this file")
    pos, header, idat = len(_PNG_SIGNATURE), None, []
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


def png16_colour_samples(header: bytes, idat: bytes) -> np.ndarray | None:
    """Every sample of a 16-bit RGB, RGBA or gray+alpha PNG exactly (from :func:`png_chunks`), or None for any
    other PNG (8-bit, 16-bit gray: Pillow reads those exactly).

    Pillow keeps only the high byte of these. Rather than unfiltering rows in Python (the Average and Paeth filters
    are sequential along a row), Pillow's own zip decoder runs on the pixel stream with raw modes of the same pixel
    size: ``RGB;16B`` / ``RGB;16L`` give the high / low byte of every RGB(A) sample, 8-bit ``RGBA`` the four bytes of a
    gray+alpha pixel; the decoder's interlace flag undoes Adam7 as Pillow's PNG reader does. Shape: (H, W, C) uint16,
    C = 3, 4 or 2.
    """
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header[:13])
    if depth != 16 or colour not in (*_RGB16_MODES, _GRAY_ALPHA16):
        return None
    size, adam7 = (width, height), int(interlace == 1)
    if colour == _GRAY_ALPHA16:
        raw = np.asarray(Image.frombytes("RGBA", size, idat, "zip", "RGBA", adam7))  # gray high, low, alpha high, low
        high, low = raw[..., 0::2], raw[..., 1::2]
    else:
        mode = _RGB16_MODES[colour]
        high = np.asarray(Image.frombytes(mode, size, idat, "zip", f"{mode};16B", adam7))
        low = np.asarray(Image.frombytes(mode, size, idat, "zip", f"{mode};16L", adam7))
    return (high.astype(np.uint16) << 8) | low


def _png16_colour(path: Path) -> np.ndarray | None:
    """:func:`png16_colour_samples` of the file ``path`` (None unless it is a 16-bit colour PNG)."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)  # signature, IHDR length and type, width, height, bit depth, colour type
        if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[24] != 16:
            return None
        return png16_colour_samples(*png_chunks(path.read_bytes(), path))
    except (OSError, ValueError, zlib.error) as exc:
        raise DatasetError(f"{path}: unreadable or corrupt PNG ({exc}); re-extract or re-download this file") from None


def _to_8_bit(samples: np.ndarray, path: Path, scale: int) -> np.ndarray:
    """Samples of 0..``scale`` as uint8 round(v · 255 / scale); a DatasetError for samples outside that range."""
    low, high = (samples.min(), samples.max()) if samples.size else (0, 0)
    if not (low >= 0 and high <= scale):  # NaN fails too
        kind = "floating-point" if samples.dtype.kind == "f" else f"{8 * samples.dtype.itemsize}-bit integer"
        raise DatasetError(f"{path}: {kind} samples from {low} to {high}, outside 0–{scale} (how to show them as "
                           "colours is not known); convert it to an 8-bit RGB image (PNG or JPEG)")
    if samples.dtype.kind == "f":
        return np.rint(samples.astype(np.float64) * 255 / scale).astype(np.uint8)
    return ((samples.astype(np.uint32) * 255 + scale // 2) // scale).astype(np.uint8)  # v · 255 / scale, rounded


def _rgb8(path: Path) -> Image.Image:
    """Decode an image as 8-bit RGB, samples of more than 8 bits scaled (module docstring), alpha dropped."""
    img = _open(path)
    if img.format == "PNG" and img.mode in ("RGB", "RGBA"):  # a 16-bit colour PNG opens as one of these
        samples = _png16_colour(path)
        if samples is not None:
            gray = samples.shape[-1] == 2
            rgb = _to_8_bit(np.repeat(samples[..., :1], 3, axis=-1) if gray else samples[..., :3], path, 65535)
            return Image.fromarray(np.ascontiguousarray(rgb))
    if img.mode.startswith("I") or img.mode == "F":  # 16-bit ("I;16*", "I"), 32-bit or floating-point samples
        samples = np.asarray(img)
        gray = _to_8_bit(samples, path, 1) if img.mode == "F" else _to_8_bit(samples, path, 65535)
        return Image.fromarray(np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1)))
    return img if img.mode == "RGB" else img.convert("RGB")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image as 8-bit RGB (deeper samples scaled, never clipped: module docstring). Shape: (H, W, 3)
    uint8."""
    return np.asarray(_rgb8(Path(path)))


def read_rgb_pil(path: str | os.PathLike) -> Image.Image:
    """Decode an image as an 8-bit RGB ``PIL.Image`` (for PIL resizes with the reference filters), as
    :func:`read_rgb`."""
    return _rgb8(Path(path))


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Decode a single-channel 8-bit label PNG (mode ``L`` or palette ``P``: the raw values, not colours).

    Shape: (H, W) uint8. Any other mode (RGB colour maps, 16-bit) is rejected with the fix.
    """
    path = Path(path)
    img = _open(path)
    if img.mode not in _LABEL_MODES:
        raise DatasetError(
            f"{path}: label PNG has mode {img.mode!r}, expected a single-channel 8-bit image (mode 'L' or 'P') of "
            "label values; colourised maps (e.g. *_color.png) are not labels — use the *_labelIds.png / trainId file"
        )
    return np.asarray(img)


def resize_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize an RGB image to (W, H) with BICUBIC (the reference filter); a no-op at the same size."""
    size = (int(size[0]), int(size[1]))
    return image if image.size == size else image.resize(size, Image.Resampling.BICUBIC)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 label map to (W, H) with NEAREST (values are preserved, never blended).

    Shape: (H, W) uint8 → (size[1], size[0]) uint8.
    """
    if label.dtype != np.uint8 or label.ndim != 2:
        raise TypeError(f"resize_label expects an (H, W) uint8 array, got {label.shape} {label.dtype}")
    if (label.shape[1], label.shape[0]) == tuple(size):
        return label
    resized = Image.fromarray(label).resize((int(size[0]), int(size[1])), Image.Resampling.NEAREST)
    return np.asarray(resized)


def write_png(path: str | os.PathLike, array: np.ndarray, *, palette: np.ndarray | None = None,
              overwrite: bool = False) -> None:
    """Write an (H, W) uint8 or (H, W, 3) uint8 array as PNG, atomically; ``palette`` (256×3, or fewer rows) makes a
    ``P`` image; an existing file is replaced only with ``overwrite``."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"write_png expects uint8, got {array.dtype}")
    if palette is None:
        img = Image.fromarray(array)
    else:
        if array.ndim != 2:
            raise ValueError("a palette PNG needs an (H, W) array of indices")
        img = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
        img.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    with atomic_path(path, suffix=".png", overwrite=overwrite) as tmp:
        img.save(tmp, format="PNG", compress_level=1)
