"""Atomic writes and the one rule for every output ftadapt writes (DESIGN.md §9), numpy-free.

Outputs appear whole or not at all (:func:`atomic_path`: a temporary beside the target, renamed onto it at the end).
Before any work a command checks its targets with :func:`check_target` (and the files it will add to an output folder
with :func:`check_new_files`):

- an existing target is refused unless replacing it was asked for (``overwrite=True``; the CLI's ``--overwrite``);
- a symbolic link is never written through or replaced, even with ``overwrite``: a run's ``checkpoints/last`` and
  ``oracle_best`` are links, and replacing one would point the run at other weights;
- a target that is an input, lies inside one, or would replace a folder holding one is refused even with
  ``overwrite``: a command never writes into what it reads;
- a target inside a folder ftadapt writes only whole is refused even with ``overwrite``: a checkpoint folder (its
  weights are hashed in its ``meta.json``) and a run's ``checkpoints/`` folder (only training adds to it).

:func:`atomic_path` enforces the first two again at the moment of writing, so no caller can skip them.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ftadapt.errors import OutputError

OVERWRITE_FLAG = "--overwrite"
# How ftadapt.checkpoint names a checkpoint folder's files and ftadapt.run_folder a run's checkpoint folder
# (tests/test_outputs.py checks that the names agree); folders recognised by them are written only whole.
CHECKPOINT_MARKERS = ("model.pt", "meta.json")
RUN_CHECKPOINTS, RUN_CONFIG = "checkpoints", "config.json"


def _label(what: str, path: Path) -> str:
    return f"{what} {path}".strip()


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def refuse_existing(path: str | os.PathLike, *, overwrite: bool, what: str = "") -> None:
    """OutputError when ``path`` is a symbolic link (always) or exists while ``overwrite`` is off (an empty folder
    counts as absent: it holds nothing to lose)."""
    path = Path(path)
    if path.is_symlink():
        raise OutputError(f"{_label(what, path)} is a symbolic link (to {os.readlink(path)}); outputs never replace or "
                          "write through links (a run's checkpoints/last is one): give the real path instead")
    if not overwrite and os.path.lexists(path) and not _is_empty_dir(path):
        raise OutputError(f"{_label(what, path)} already exists; pass {OVERWRITE_FLAG} to replace it, or choose "
                          "another path")


def _real(path: Path) -> Path:
    """Where writing ``path`` lands: its folder resolved (links, ``..``), its last component kept as it is."""
    absolute = Path(os.path.abspath(Path(path).expanduser()))
    return absolute.parent.resolve() / absolute.name


def whole_folder(folder: Path) -> str | None:
    """What ``folder`` is if ftadapt writes it only whole (a checkpoint folder, a run's checkpoints folder), else
    None."""
    if all((folder / name).is_file() for name in CHECKPOINT_MARKERS):
        return f"the checkpoint folder {folder}"
    if folder.name == RUN_CHECKPOINTS and (folder.parent / RUN_CONFIG).is_file():
        return f"{folder}, the checkpoints of the run in {folder.parent} (only `ftadapt train` writes there)"
    return None


def _refuse_inputs(real: Path, inputs: Iterable[str | os.PathLike], label: str, *, merge: bool) -> None:
    for given in inputs:
        source = Path(given).expanduser().resolve()
        if real == source:
            why = "is the input"
        elif source in real.parents:
            why = "lies inside the input"
        elif real in source.parents and (not merge or source.is_dir()):
            why = "would replace or mix with the input"
        else:
            continue
        raise OutputError(f"{label} {why} {given}; a command never writes into what it reads: choose a path "
                          "outside its inputs")


def check_target(path: str | os.PathLike, *, overwrite: bool, inputs: Iterable[str | os.PathLike] = (),
                 what: str = "", merge: bool = False) -> Path:
    """Apply the output rule (module docstring) to ``path`` before any work; return where it lands.

    ``what`` names the option in messages (``--out``). ``merge``: ``path`` is a folder that outputs are added to
    (``predict --out``, a run folder): it may exist, but not be, contain or lie inside an input folder, nor lie
    inside or be a folder written only whole; the files planned in it go through :func:`check_new_files`.
    """
    path = Path(path)
    label = _label(what, path)
    refuse_existing(path, overwrite=overwrite or merge, what=what)
    real = _real(path)
    _refuse_inputs(real, inputs, label, merge=merge)
    for folder in ([real] if merge else []) + list(real.parents):
        whole = whole_folder(folder)
        if whole is not None:
            where = "is" if folder == real else "lies inside"
            raise OutputError(f"{label} {where} {whole}, which is written only whole; choose a path outside it")
    if merge and path.exists() and not path.is_dir():
        raise OutputError(f"{label} is a file; give a folder")
    return real


def check_new_files(paths: Iterable[str | os.PathLike], *, overwrite: bool, inputs: Iterable[str | os.PathLike] = (),
                    what: str = "") -> None:
    """The files a command will add to an output folder: none may be a link or an input (even with ``overwrite``),
    and none may exist unless ``overwrite``; the message names the first offender and how many there are."""
    paths = [Path(p) for p in paths]
    sources = {Path(p).expanduser().resolve() for p in inputs}
    clashes = [p for p in paths if _real(p) in sources]
    if clashes:
        raise OutputError(f"{_label(what, clashes[0])} would replace an input ({len(clashes)} output(s) would); a "
                          "command never writes into what it reads: choose another output folder")
    for path in paths:
        refuse_existing(path, overwrite=True, what=what)  # links only
    existing = [p for p in paths if os.path.lexists(p)]
    if existing and not overwrite:
        raise OutputError(f"{_label(what, existing[0])} already exists ({len(existing)} of the {len(paths)} outputs "
                          f"do); pass {OVERWRITE_FLAG} to replace them, or choose another folder")


def remove_entry(path: Path) -> None:
    """Remove a file, link or folder tree (links themselves, never what they point to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "", overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error remove it.

    Works for files and folders (the caller creates whichever it needs at the yielded path). An existing target is
    replaced only with ``overwrite`` (a folder only once the new one is complete) and a link never (checked before and
    again after the work); anything else raises :class:`~ftadapt.errors.OutputError` and writes nothing.
    """
    path = Path(path)
    refuse_existing(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        refuse_existing(path, overwrite=overwrite)
        if tmp.is_dir() and path.is_dir():
            old = path.with_name(f".{path.name}.old")
            remove_entry(old)
            os.replace(path, old)
            os.replace(tmp, path)
            remove_entry(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            remove_entry(tmp)
        raise


def remove_stale_temporaries(folder: str | os.PathLike, names: str = "*") -> list[Path]:
    """Remove what interrupted :func:`atomic_path` writes of ``names`` (a glob) left in ``folder`` — the hidden
    ``.NAME.*.tmp`` temporaries and ``.NAME.old`` replaced folders — and return them. Only for folders one process
    writes (a run's checkpoints), where no such write can be under way."""
    folder = Path(folder)
    stale = sorted({*folder.glob(f".{names}.*.tmp"), *folder.glob(f".{names}.old")})
    for path in stale:
        remove_entry(path)
    return stale


def write_text_atomic(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> None:
    """Write ``text`` to ``path`` atomically (an existing file only with ``overwrite``)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
