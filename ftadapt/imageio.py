"""PNG/JPEG decoding, encoding and the protocol resizes, shared by the datasets, the doctor and the evaluator (numpy +
Pillow).

Decoding uses Pillow: it releases the GIL while inflating, so a thread pool scales across cores, and it is the
decoder the reference code used (so BICUBIC resizes match). Every failure becomes a ``DatasetError`` naming the file —
an image above Pillow's decompression-bomb limit too (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 Mpx, refused beyond
twice that); the environment variable ``FTADAPT_MAX_IMAGE_PIXELS`` sets that limit for every command.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ftadapt.errors import DatasetError
from ftadapt.fsutil import atomic_path

_LABEL_MODES = ("L", "P")
PIXELS_ENV = "FTADAPT_MAX_IMAGE_PIXELS"


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


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image as RGB. Shape: (H, W, 3) uint8."""
    img = _open(Path(path))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def read_rgb_pil(path: str | os.PathLike) -> Image.Image:
    """Decode an image as an RGB ``PIL.Image`` (for PIL resizes with the reference filters)."""
    img = _open(Path(path))
    return img if img.mode == "RGB" else img.convert("RGB")


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
