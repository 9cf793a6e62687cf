"""``ftadapt predict``: run a Segmenter over image files, folders of images or videos and write the results.

For every frame it writes ``<name>.png`` — the label map as a palette PNG whose pixel values are the class ids (what
``ftadapt eval --pred-dir`` reads; Cityscapes file names keep their frame id) — and ``<name>_color.png``, the
palette colours blended over the frame (``*_color.png`` is ignored by the evaluator). Folders keep their
sub-folders; a video's frames go to ``<out>/<video name>/<video name>_<index>.png``. Images are decoded with
Pillow, videos with OpenCV when it is installed. Every file is written atomically.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ftadapt.errors import UsageError
from ftadapt.fsutil import atomic_path
from ftadapt.runtime.frames import overlay

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclasses.dataclass(frozen=True)
class Source:
    """One input: an image or a video file, and the output name (without suffix) relative to the output folder."""

    path: Path
    name: str
    video: bool = False


def collect_sources(inputs: Sequence[str | os.PathLike]) -> list[Source]:
    """Expand image files, videos and folders (their images, recursively) into sources with distinct output names."""
    sources: list[Source] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not images:
                raise UsageError(f"{item} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            sources += [Source(p, str(p.relative_to(item).with_suffix(""))) for p in images]
        elif item.suffix.lower() in VIDEO_SUFFIXES and item.is_file():
            sources.append(Source(item, item.stem, video=True))
        elif item.suffix.lower() in IMAGE_SUFFIXES and item.is_file():
            sources.append(Source(item, item.stem))
        elif not item.exists():
            raise UsageError(f"input {item} does not exist")
        else:
            raise UsageError(f"input {item} is neither an image ({', '.join(IMAGE_SUFFIXES)}), a video "
                             f"({', '.join(VIDEO_SUFFIXES)}) nor a folder")
    seen: dict[str, Path] = {}
    for s in sources:
        if s.name in seen:
            raise UsageError(f"{seen[s.name]} and {s.path} would both be written as {s.name}.png; pass them in "
                             "separate runs or rename one")
        seen[s.name] = s.path
    return sources


def read_image(path: Path) -> np.ndarray:
    """Decode an image as RGB. Shape: (H, W, 3) uint8."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable image ({exc})") from None


def _open_video(path: Path) -> Any:
    try:
        import cv2
    except ImportError:
        raise UsageError(f"{path} is a video; reading videos needs OpenCV: pip install opencv-python-headless "
                         "(or extract its frames to images first)") from None
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UsageError(f"{path}: OpenCV cannot open this video (unsupported codec or corrupt file)")
    return cv2, capture


def video_frame_count(path: Path, every: int) -> int | None:
    """How many frames ``video_frames`` will yield, when the container says (for the progress bar)."""
    cv2, capture = _open_video(path)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return -(-total // every) if total > 0 else None


def video_frames(path: Path, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) of every ``every``-th frame. Shape: (H, W, 3) uint8."""
    cv2, capture = _open_video(path)
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            if index % every == 0:
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def _frames(sources: Sequence[Source], every: int) -> Iterator[tuple[str, np.ndarray]]:
    for s in sources:
        if s.video:
            for index, frame in video_frames(s.path, every):
                yield f"{s.name}/{s.name}_{index:06d}", frame
        else:
            yield s.name, read_image(s.path)


def _save_png(path: Path, array: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write (H, W) uint8 indices with a palette, or (H, W, 3) uint8 RGB, as a PNG, atomically."""
    array = np.ascontiguousarray(array)
    if palette is None:
        img = Image.fromarray(array)
    else:
        img = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
        img.putpalette(palette.reshape(-1).tolist())
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG", compress_level=1)


def predict_files(segmenter: Any, sources: Sequence[Source], out_dir: str | os.PathLike, *, alpha: float = 0.5,
                  every: int = 1, progress: bool = True) -> dict[str, Any]:
    """Segment every frame of ``sources`` (from ``collect_sources``) into ``out_dir`` (see the module docstring);
    returns a summary: frame count, wall time, end-to-end frames per second, mean per-frame model latency."""
    from tqdm import tqdm

    if every < 1:
        raise UsageError(f"every={every}: expected a positive integer")
    counts = [video_frame_count(s.path, every) if s.video else 1 for s in sources]
    total = None if None in counts else sum(counts)
    out_dir = Path(out_dir)
    palette = segmenter.palette
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = palette
    model_seconds, frames, start = 0.0, 0, time.perf_counter()
    with tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True) as bar:
        for name, frame in _frames(sources, every):
            t0 = time.perf_counter()
            labels = segmenter(frame)
            model_seconds += time.perf_counter() - t0
            _save_png(out_dir / f"{name}.png", labels.astype(np.uint8), table)
            _save_png(out_dir / f"{name}_color.png", overlay(frame, segmenter.colorize(labels), alpha))
            frames += 1
            bar.update(1)
            bar.set_postfix(model_ms=f"{1000 * model_seconds / frames:.1f}")
    seconds = time.perf_counter() - start
    return {"frames": frames, "out": str(out_dir), "seconds": round(seconds, 3),
            "fps": round(frames / seconds, 3) if seconds > 0 else None,
            "model_ms_mean": round(1000 * model_seconds / frames, 3) if frames else None}


__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "Source", "collect_sources", "predict_files", "read_image",
           "video_frames"]
