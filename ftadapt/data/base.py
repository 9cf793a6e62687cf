"""What the real-layout datasets share: the frame list, the sample contract, list files and layout errors.

A sample (``dataset[key]``) is a dict:

- ``"image"``: float32 (3, H, W), BGR minus ``IMG_MEAN_BGR`` (no /255), at the protocol size × the random scale;
- ``"label"``: int64 (H, W) trainIds, 255 = ignore, at the protocol size. The key is **absent** when the dataset has
  no labels (Cityscapes with ``with_labels=False``, the unlabeled target of training);
- ``"name"``: the file stem (GTA5, SYNTHIA) or Cityscapes frame id;
- ``"orig_hw"``: (H, W) of the original image file.

``key`` is an int index (never augmented) or ``(index, sample_seed)`` or ``(index, sample_seed, scale)``: with
``augment="clan"`` the seed decides the mirror and, unless the loader passes the batch's ``scale``, the rescale factor
(``augment="maxsquare"``: the mirror and the blur).

Decoding: images with Pillow (``ftadapt.imageio``), the reference decoder, so the BICUBIC resize matches the reference
code; on a 1914×1052 PNG it measured as fast as ``torchvision.io.decode_png`` (96 vs 110 ms). SYNTHIA's 16-bit labels
go through ``ftadapt.data.png16``. A file that fails raises ``DatasetError`` (no silent fallback to a neighbour).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from torch.utils.data import Dataset

from ftadapt.data import transforms as T
from ftadapt.errors import DatasetError, UsageError
from ftadapt.imageio import read_rgb_pil
from ftadapt.textfile import read_text_file

SampleKey = int | tuple[int, int] | tuple[int, int, float]

_SHOW = 5  # how many offending paths an error message lists


@dataclass(frozen=True)
class Frame:
    """One image and its label file (``label`` is None when the label is missing or not wanted)."""

    name: str
    image: Path
    label: Path | None


@dataclass
class Scan:
    """What a walk of a dataset root found: frames (existing images), list entries whose image is missing, and label
    files without an image. The datasets refuse incomplete scans; the doctor reports them."""

    frames: list[Frame]
    missing_images: list[Path] = field(default_factory=list)
    orphan_labels: list[Path] = field(default_factory=list)


def _listing(paths: Sequence[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:_SHOW])
    return shown + (f" … ({len(paths)} in all)" if len(paths) > _SHOW else "")


def _find_nearby(root: Path, marker: str) -> Path | None:
    """A folder near ``root`` (3 levels up, 2 down) that holds ``marker``: where the user probably meant."""
    for parent in list(root.parents)[:3]:
        if (parent / marker).is_dir():
            return parent
    level = [root]
    for _ in range(2):
        children = []
        for folder in level:
            try:
                children += sorted(Path(e.path) for e in os.scandir(folder) if e.is_dir() and e.name != marker)
            except OSError:
                continue
        for child in children:
            if (child / marker).is_dir():
                return child
        level = children
    return None


def check_root(root: str | os.PathLike, marker: str, dataset: str, layout: str) -> Path:
    """Return ``root`` as a Path if it holds the folder ``marker``; otherwise a ``DatasetError`` with the likely fix."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such folder; pass the {dataset} root, the folder that holds {layout}")
    if not root.is_dir():
        raise DatasetError(f"{root}: is a file; pass the {dataset} root, the folder that holds {layout}")
    if (root / marker).is_dir():
        return root
    message = f"{root}: not a {dataset} root (no {marker}/ inside; expected {layout})"
    nearby = _find_nearby(root, marker)
    if nearby is not None:
        message += f"; did you mean --root {nearby}?"
    raise DatasetError(message)


def read_list_file(path: str | os.PathLike) -> list[str]:
    """Entries of a list file: one relative path per line, blank lines skipped."""
    path = Path(path)
    lines = read_text_file(path, what="list file", fix="give a plain-text list file that names one image per line",
                           error=DatasetError).splitlines()
    entries = [line.strip() for line in lines if line.strip()]
    if not entries:
        raise DatasetError(f"{path}: the list file is empty; it should name one image per line")
    return entries


def _entries(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder`` (none when it does not exist); a folder that cannot be listed is a DatasetError."""
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DatasetError(f"{folder}: cannot list this folder ({exc.strerror or exc}); check that it exists and "
                           "that you may read it") from None


def _is(entry: os.DirEntry, kind: str) -> bool:
    """Whether ``entry`` is a file / dir. An entry whose link cannot be followed (a loop) counts as a file, so that
    reading it names the problem instead of the image silently disappearing from the set."""
    try:
        return entry.is_file() if kind == "file" else entry.is_dir()
    except OSError:
        return kind == "file"


def png_names(folder: Path) -> list[str]:
    """Sorted names of the ``*.png`` files directly in ``folder`` (empty when it does not exist)."""
    return sorted(e.name for e in _entries(folder) if e.name.endswith(".png") and _is(e, "file"))


def folder_names(folder: Path) -> list[str]:
    """Sorted names of the folders directly in ``folder`` (empty when it does not exist)."""
    return sorted(e.name for e in _entries(folder) if _is(e, "dir"))


def scan_same_names(image_dir: Path, label_dir: Path, list_file: str | os.PathLike | None,
                    name_of: Callable[[str], str] = str) -> Scan:
    """Pairs of ``image_dir/<name>`` and ``label_dir/<same name>`` (GTA5, SYNTHIA): every ``*.png`` in ``image_dir``
    sorted, or the names of ``list_file`` in order (each entry through ``name_of``)."""
    label_names = set(png_names(label_dir))
    if list_file is None:
        names, missing_images = png_names(image_dir), []
        orphans = [label_dir / n for n in sorted(label_names.difference(names))]
    else:
        entries = [name_of(e) for e in read_list_file(list_file)]
        names = [e for e in entries if (image_dir / e).is_file()]
        missing_images = [image_dir / e for e in entries if not (image_dir / e).is_file()]
        orphans = []
    frames = [Frame(Path(n).stem, image_dir / n, label_dir / n if n in label_names else None) for n in names]
    return Scan(frames, missing_images, orphans)


def require_complete(scan: Scan, where: Path, fix: str, *, labels: bool = True) -> list[Frame]:
    """The frames of ``scan``, or a ``DatasetError`` for no images, missing images or (if ``labels``) missing labels."""
    if scan.missing_images:
        raise DatasetError(f"{len(scan.missing_images)} images named by the list file do not exist: "
                           f"{_listing(scan.missing_images)}; fix the list file or the root")
    if not scan.frames:
        raise DatasetError(f"{where}: no .png images found; {fix}")
    missing = [f.image for f in scan.frames if f.label is None]
    if labels and missing:
        raise DatasetError(f"{len(missing)} of {len(scan.frames)} images have no label file: {_listing(missing)}; "
                           f"{fix} (`ftadapt data check` lists every problem)")
    return scan.frames


class SegmentationDataset(Dataset):
    """Frames of one dataset with the shared sample pipeline; subclasses say how labels are read and mapped.

    Args:
        frames: the images (and label files) in order.
        size: protocol (W, H) every sample is resized to.
        augment: the training augmentation drawn from the key's seed: "clan" (random image-only rescale, mirror),
            "maxsquare" (mirror, Gaussian blur) or "none"; True / False mean "clan" / "none".
    """

    kind: ClassVar[str]
    #: the splits ``scan`` accepts (``(None,)`` for a dataset without splits)
    splits: ClassVar[tuple[str | None, ...]] = (None,)
    #: bool mask over raw label values: which ids the label files may hold
    valid_ids: ClassVar[np.ndarray]

    def __init__(self, frames: Sequence[Frame], *, size: tuple[int, int], augment: bool | str = False) -> None:
        if len(size) != 2 or min(int(s) for s in size) < 1:
            raise UsageError(f"size must be (W, H) with positive ints, got {size!r}")
        styles = {True: "clan", False: "none", "clan": "clan", "maxsquare": "maxsquare", "none": "none"}
        if augment not in styles:
            raise UsageError(f"augment={augment!r}: expected 'clan', 'maxsquare' or 'none'")
        self.frames = list(frames)
        self.size = (int(size[0]), int(size[1]))
        self.augment = styles[augment]

    # Subclass hooks -------------------------------------------------------------------------------------------
    @classmethod
    def scan(cls, root: str | os.PathLike, *, split: str | None = None, list_file: str | os.PathLike | None = None,
             ) -> Scan:
        """Find the frames under ``root`` (layout errors raise ``DatasetError``); missing pieces are reported, not
        raised."""
        raise NotImplementedError

    @staticmethod
    def read_label_ids(path: Path) -> np.ndarray:
        """Decode a label file to its raw class ids. Shape: (H, W) uint8 or uint16."""
        raise NotImplementedError

    @staticmethod
    def to_trainid(ids: np.ndarray) -> np.ndarray:
        """Map raw class ids to trainIds. Shape: (H, W) → (H, W) uint8, 255 = ignore."""
        raise NotImplementedError

    # Public API ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} frames, size={self.size}, augment={self.augment})"

    @property
    def has_labels(self) -> bool:
        return all(f.label is not None for f in self.frames)

    def image_path(self, index: int) -> Path:
        return self.frames[index].image

    def label_path(self, index: int) -> Path | None:
        """The label file of frame ``index`` (None without labels): the evaluator reads it at full resolution."""
        return self.frames[index].label

    def trainid_label(self, index: int) -> np.ndarray:
        """The label of frame ``index`` as trainIds at the file's own resolution. Shape: (H, W) uint8."""
        path = self.frames[index].label
        if path is None:
            raise DatasetError(f"{self.frames[index].image}: this dataset was opened without labels")
        return self.to_trainid(self.read_label_ids(path))

    def __getitem__(self, key: SampleKey) -> dict:
        index, augment = self._resolve(key)
        frame = self.frames[index]
        image = read_rgb_pil(frame.image)
        orig_hw = (image.height, image.width)
        label = None if frame.label is None else self.to_trainid(self.read_label_ids(frame.label))
        image_t, label_t = T.sample_from(image, label, size=self.size, augment=augment)
        sample = {"image": image_t}
        if label_t is not None:
            sample["label"] = label_t
        sample["name"] = frame.name
        sample["orig_hw"] = orig_hw
        return sample

    def _resolve(self, key: SampleKey) -> tuple[int, T.Augment]:
        if isinstance(key, tuple):
            if len(key) not in (2, 3):
                raise TypeError(f"dataset key must be index, (index, seed) or (index, seed, scale), got {key!r}")
            index, seed = int(key[0]), int(key[1])
            scale = float(key[2]) if len(key) == 3 else None
            augment = T.draw_augment(seed, scale, self.augment)
        else:
            index, augment = int(key), T.NO_AUGMENT
        if not -len(self.frames) <= index < len(self.frames):
            raise IndexError(f"index {index} out of range for {len(self.frames)} frames")
        return index % len(self.frames), augment
