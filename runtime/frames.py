"""Frame validation and overlays: what a caller hands the runtime is checked once, here.

Every bad frame is a ``UsageError`` (a ``ValueError``) that says what was expected, so a mistake in an application
(BGR float frames, a grayscale image, a batch passed as one frame, a frame larger than the engine's profile) fails
at the call with a message instead of producing garbage or a CUDA error deep inside a backend.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ftadapt.errors import UsageError

Size = tuple[int, int]  # (W, H): frame sizes are W×H in every API and option of ftadapt
# The largest frame (W, H) ONNX Runtime takes unless told otherwise: it needs about 110 bytes per pixel of frame
# (measured: 8000×8000 took 6.9 GB), so a 16k×16k frame would exhaust a 24 GB machine; 4096×4096 stays under 2 GB.
# TensorRT's limit is its engine profile (``engine_cache.DEFAULT_MAX_FRAME``).
ORT_MAX_FRAME: Size = (4096, 4096)


def check_size(value: object, name: str) -> Size | None:
    """``None`` or a pair of positive ints (W, H) → that pair as a tuple; anything else is a UsageError."""
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise UsageError(f"{name}={value!r}: expected (W, H), two positive integers") from None
    if w < 1 or h < 1:
        raise UsageError(f"{name}={value!r}: expected (W, H), two positive integers")
    return w, h


def check_batch(value: object, name: str = "max_batch") -> int:
    """A batch limit: a positive int."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{name}={value!r}: expected a positive integer")
    return value


def _describe(frame: np.ndarray) -> str:
    return f"an array of shape {frame.shape} and dtype {frame.dtype}"


def check_frame(frame: object, *, max_frame: Size | None = None, min_frame: Size | None = None,
                what: str = "frame") -> np.ndarray:
    """Validate one RGB frame and return it C-contiguous (non-contiguous views are copied, others are not).

    ``max_frame``/``min_frame`` are (W, H). Shape: uint8 (H, W, 3) → uint8 (H, W, 3). Raises UsageError naming
    ``what`` and the expectation.
    """
    expected = "a uint8 RGB array of shape (H, W, 3)"
    if frame is None:
        raise UsageError(f"{what} is None; expected {expected}")
    if not isinstance(frame, np.ndarray):
        raise UsageError(f"{what} is a {type(frame).__name__}; expected {expected} (e.g. np.asarray(pil_image))")
    if frame.dtype != np.uint8:
        hint = " (scale 0–1 floats with (frame * 255).round().astype(np.uint8))" if frame.dtype.kind == "f" else ""
        if frame.dtype == np.uint16:  # clipping 16-bit samples to 255 would leave a white picture
            hint = " (scale 16-bit samples with ((frame.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8))"
        raise UsageError(f"{what} has dtype {frame.dtype}; expected {expected}{hint}")
    if frame.ndim == 4:
        raise UsageError(f"{what} is {_describe(frame)}, a batch; pass one (H, W, 3) frame, or use predict_batch")
    if frame.ndim == 2:
        raise UsageError(f"{what} is {_describe(frame)}, a single-channel image; expected {expected} "
                         "(stack gray to RGB with np.repeat(frame[..., None], 3, axis=-1))")
    if frame.ndim != 3:
        raise UsageError(f"{what} is {_describe(frame)}; expected {expected}")
    if frame.shape[2] != 3:
        hint = " (drop alpha with frame[..., :3])" if frame.shape[2] == 4 else ""
        raise UsageError(f"{what} has {frame.shape[2]} channels (shape {frame.shape}); expected {expected}{hint}")
    h, w = frame.shape[:2]
    if h == 0 or w == 0:
        raise UsageError(f"{what} is empty (shape {frame.shape}); expected {expected} with H, W ≥ 1")
    if max_frame is not None and (w > max_frame[0] or h > max_frame[1]):
        raise UsageError(f"{what} is {w}×{h} (W×H), larger than max_frame {max_frame[0]}×{max_frame[1]} this "
                         f"Segmenter was built for; resize it or create the Segmenter with max_frame=({w}, {h}) or "
                         "larger (ONNX Runtime needs about 110 bytes of memory per pixel)")
    if min_frame is not None and (w < min_frame[0] or h < min_frame[1]):
        raise UsageError(f"{what} is {w}×{h} (W×H), smaller than min_frame {min_frame[0]}×{min_frame[1]} of this "
                         "Segmenter's engine profile; create the Segmenter with a smaller min_frame")
    return np.ascontiguousarray(frame)


def stack_frames(frames: object, *, max_frame: Size | None = None, min_frame: Size | None = None) -> np.ndarray:
    """Validate a batch — a uint8 (N, H, W, 3) array or a sequence of equally sized frames — and stack it.

    Shape: → uint8 (N, H, W, 3), C-contiguous.
    """
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        if frames.shape[0] == 0:
            raise UsageError(f"the batch is empty (shape {frames.shape}); pass at least one frame")
        check_frame(frames[0], max_frame=max_frame, min_frame=min_frame, what="frames[0]")
        return np.ascontiguousarray(frames)
    if isinstance(frames, np.ndarray) or not isinstance(frames, Sequence) or isinstance(frames, (str, bytes)):
        shown = _describe(frames) if isinstance(frames, np.ndarray) else f"a {type(frames).__name__}"
        raise UsageError(f"frames is {shown}; expected a uint8 (N, H, W, 3) array or a list of (H, W, 3) frames")
    if not frames:
        raise UsageError("frames is empty; pass at least one frame")
    checked = [check_frame(f, max_frame=max_frame, min_frame=min_frame, what=f"frames[{i}]")
               for i, f in enumerate(frames)]
    first = checked[0].shape
    for i, f in enumerate(checked):
        if f.shape != first:
            raise UsageError(f"frames[{i}] is {f.shape[1]}×{f.shape[0]} but frames[0] is {first[1]}×{first[0]} "
                             "(W×H); a batch needs frames of one size (call the Segmenter per frame for mixed sizes)")
    return np.stack(checked)


def overlay(frame: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend colours over the frame: ``(1 - alpha) * frame + alpha * colours``. Shape: uint8 (H, W, 3) ×2 → same."""
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"alpha={alpha}: expected a value between 0 and 1")
    mixed = (1.0 - alpha) * frame.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
