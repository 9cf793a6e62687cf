"""``ftadapt predict``: run a Segmenter over image files, folders of images or videos and write the results.

For every frame it writes ``<name>.png`` — the label map as a palette PNG whose pixel values are the class ids (what
``ftadapt eval --pred-dir`` reads; Cityscapes file names keep their frame id) — and ``<name>_color.png``, the
palette colours blended over the frame (``*_color.png`` is ignored by the evaluator). Folders keep their
sub-folders; a video's frames go to ``<out>/<video name>/<video name>_<index>.png``. Images are decoded with
Pillow (``ftadapt.imageio``), videos with OpenCV when it is installed.

Outputs follow the one output rule (``ftadapt.fsutil``): before the first frame, the output folder must not be, lie
inside or hold an input folder; no planned file may exist unless ``overwrite`` (CLI ``--overwrite``) nor be an input;
and no two inputs may share an output file (``x.png`` and ``x_color.png`` in one folder would). Every file is written
atomically.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ftadapt.errors import UsageError
from ftadapt.fsutil import check_new_files, check_target
from ftadapt.imageio import read_rgb, write_png
from ftadapt.runtime.frames import overlay

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclasses.dataclass(frozen=True)
class Source:
    """One input: an image or a video file, the output name (without suffix) relative to the output folder, and the
    input it came from as the user gave it (the file itself, or the folder it was found in)."""

    path: Path
    name: str
    video: bool = False
    given: Path | None = None

    def outputs(self) -> list[str]:
        """What it writes, relative to the output folder: two PNGs for an image, one folder for a video."""
        return [self.name] if self.video else [f"{self.name}.png", f"{self.name}_color.png"]


def collect_sources(inputs: Sequence[str | os.PathLike]) -> list[Source]:
    """Expand image files, videos and folders (their images, recursively) into sources with distinct outputs."""
    sources: list[Source] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not images:
                raise UsageError(f"{item} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            sources += [Source(p, str(p.relative_to(item).with_suffix("")), given=item) for p in images]
        elif item.suffix.lower() in VIDEO_SUFFIXES and item.is_file():
            sources.append(Source(item, item.stem, video=True, given=item))
        elif item.suffix.lower() in IMAGE_SUFFIXES and item.is_file():
            sources.append(Source(item, item.stem, given=item))
        elif not item.exists():
            raise UsageError(f"input {item} does not exist")
        else:
            raise UsageError(f"input {item} is neither an image ({', '.join(IMAGE_SUFFIXES)}), a video "
                             f"({', '.join(VIDEO_SUFFIXES)}) nor a folder")
    _require_distinct_outputs(sources)
    return sources


def _require_distinct_outputs(sources: Sequence[Source]) -> None:
    """UsageError when two inputs would write one output file, e.g. ``x.png``'s overlay and ``x_color.png``'s labels."""
    seen: dict[str, Path] = {}
    for s in sources:
        for output in s.outputs():
            if output in seen:
                raise UsageError(f"{seen[output]} and {s.path} would both be written as {output}; pass them in "
                                 "separate runs or rename one")
            seen[output] = s.path


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


def _frames(sources: Sequence[Source], every: int) -> Iterator[tuple[str, np.ndarray, str]]:
    """(output name, RGB frame, where it came from) of every frame to segment."""
    for s in sources:
        if s.video:
            for index, frame in video_frames(s.path, every):
                yield f"{s.name}/{s.name}_{index:06d}", frame, f"{s.path} frame {index}"
        else:
            yield s.name, read_rgb(s.path), str(s.path)


def _check_frame_size(frame: np.ndarray, origin: str, max_frame: tuple[int, int] | None) -> None:
    """UsageError naming the input and the flag when ``frame`` exceeds the Segmenter's ``max_frame`` (W, H)."""
    (h, w), limit = frame.shape[:2], max_frame
    if limit is not None and (w > limit[0] or h > limit[1]):
        need = (max(w, limit[0]), max(h, limit[1]))
        raise UsageError(f"{origin}: the frame is {w}x{h} (W×H), larger than the largest frame this model was set up "
                         f"for, {limit[0]}x{limit[1]}; pass --max-frame {need[0]}x{need[1]} (Python: "
                         f"Segmenter(max_frame={need})) or resize the input")


def check_outputs(sources: Sequence[Source], out_dir: str | os.PathLike, *, overwrite: bool = False) -> None:
    """The output rule for a prediction run (module docstring), checked before the first frame: an OutputError
    otherwise."""
    out_dir = Path(out_dir)
    check_target(out_dir, overwrite=overwrite, inputs={s.given or s.path for s in sources}, what="--out", kind="merge")
    check_new_files([out_dir / o for s in sources for o in s.outputs()], overwrite=overwrite,
                    inputs=[s.path for s in sources], what="--out")


def predict_files(segmenter: Any, sources: Sequence[Source], out_dir: str | os.PathLike, *, alpha: float = 0.5,
                  every: int = 1, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Segment every frame of ``sources`` (from ``collect_sources``) into ``out_dir`` (see the module docstring;
    ``overwrite`` replaces earlier outputs of the same names); returns a summary: frame count, wall time, end-to-end
    frames per second, mean per-frame model latency."""
    from tqdm import tqdm

    if every < 1:
        raise UsageError(f"every={every}: expected a positive integer")
    out_dir = Path(out_dir)
    check_outputs(sources, out_dir, overwrite=overwrite)
    counts = [video_frame_count(s.path, every) if s.video else 1 for s in sources]
    total = None if None in counts else sum(counts)
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(segmenter.palette)] = segmenter.palette
    model_seconds, frames, start = 0.0, 0, time.perf_counter()
    with tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True) as bar:
        for name, frame, origin in _frames(sources, every):
            _check_frame_size(frame, origin, segmenter.max_frame)
            t0 = time.perf_counter()
            labels = segmenter(frame)
            model_seconds += time.perf_counter() - t0
            write_png(out_dir / f"{name}.png", labels.astype(np.uint8), palette=table, overwrite=overwrite)
            write_png(out_dir / f"{name}_color.png", overlay(frame, segmenter.colorize(labels), alpha),
                      overwrite=overwrite)
            frames += 1
            bar.update(1)
            bar.set_postfix(model_ms=f"{1000 * model_seconds / frames:.1f}")
    seconds = time.perf_counter() - start
    return {"frames": frames, "out": str(out_dir), "seconds": round(seconds, 3),
            "fps": round(frames / seconds, 3) if seconds > 0 else None,
            "model_ms_mean": round(1000 * model_seconds / frames, 3) if frames else None}


__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "Source", "check_outputs", "collect_sources", "predict_files",
           "video_frames"]
