"""Atomic file and folder writes: outputs appear whole or not at all (numpy-free)."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ftadapt.errors import UsageError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error remove it.

    Works for files and folders (the caller creates whichever it needs at the yielded path). An existing folder at
    ``path`` is replaced only after the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def check_out_dir(path: str | os.PathLike, *, overwrite: bool, option: str = "--out") -> Path:
    """An output folder a command may write into: absent, empty, or — with ``overwrite`` — any folder (the command
    then replaces its own files there, one atomic file at a time, and leaves every other file alone). Anything else
    is a UsageError naming the fix. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file; choose a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UsageError(f"{option} {path} is not empty; choose a new folder, or pass --overwrite to replace the "
                         "files this command writes there")
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
