"""Atomic writes and the one rule for every output ftadapt writes (DESIGN.md §9), numpy-free.

Outputs appear whole or not at all (:func:`atomic_path`: a temporary beside the target, renamed onto it at the end).
Before any work a command checks each of its targets with :func:`check_target`, the files it will add to an output
folder with :func:`check_new_files`, and its targets against each other with :func:`refuse_overlap`:

- an existing target is refused unless replacing it was asked for (``overwrite=True``; the CLI's ``--overwrite``);
- ``--overwrite`` replaces only what ftadapt wrote: a regular file, or a folder ftadapt wrote whole (a checkpoint
  folder, or one it marked as its own: ``ftadapt.layout.OUTPUT_MARK``). Never a folder of other files, nor the folder
  the command runs in (or one holding it), nor a named pipe, a device or a socket;
- a symbolic link is never written through or replaced: a run's ``checkpoints/last`` and ``oracle_best`` are links,
  and replacing one would point the run at other weights. A link in the folder part of a path is followed, and the
  rule applies to where the target really lies;
- a target that is an input, lies inside one, or would replace a folder holding one is refused even with
  ``overwrite``: a command never writes into what it reads;
- a target inside a run folder or a checkpoint folder is refused even with ``overwrite``: only training writes
  there (a checkpoint's weights are hashed in its ``meta.json``; a run's config decides whether it can resume);
- the outputs of one command are separate: never the same path twice (relative or absolute) or one inside another.

:func:`atomic_path` applies the rule for the target itself (kind, link, existence) again at the moment of writing, so
no caller can skip it and nothing that appeared meanwhile is replaced.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from ftadapt.errors import OutputError
from ftadapt.layout import OUTPUT_MARK, is_checkpoint_folder, is_marked_output, is_run_folder

OVERWRITE_FLAG = "--overwrite"
Kind = Literal["file", "folder", "merge", "run", "any"]
_SPECIAL = ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
            (stat.S_ISSOCK, "socket"))
_STDOUT_HINT = " (for standard output give '-')"


def _label(what: str, path: Path) -> str:
    return f"{what} {path}".strip()


def _real(path: str | os.PathLike) -> Path:
    """Where writing ``path`` lands: its folder resolved (links, ``..``), its last component kept as it is (``.``
    and ``..`` get their real names)."""
    absolute = Path(os.path.abspath(Path(path).expanduser()))
    if absolute.name in ("", ".", ".."):
        return absolute.resolve()
    return absolute.parent.resolve() / absolute.name


def _special(path: Path) -> str | None:
    """What ``path`` (or what a link there leads to) is when it is neither a regular file nor a folder."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((name for test, name in _SPECIAL if test(mode)), None)


def _holds_cwd(real: Path) -> bool:
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the working folder was deleted
        return False
    return real == cwd or real in cwd.parents


def check_replaceable(path: str | os.PathLike, *, overwrite: bool, what: str = "", kind: Kind = "any") -> None:
    """OutputError unless ``path`` itself may be written (module docstring): it is absent, an empty folder, or — with
    ``overwrite`` — a regular file or a folder ftadapt wrote whole; never a link or anything but a file or folder.

    ``kind``: what the command writes there — a ``file``, a ``folder`` written whole, a folder that outputs are added
    to (``merge``, ``run``: it may exist; its files are checked one by one), or ``any`` (:func:`atomic_path`, before
    it knows).
    """
    path = Path(path)
    label = _label(what, path)
    special = _special(path)
    hint = _STDOUT_HINT if what == "--json" and (special or str(path).startswith(("/dev/", "/proc/"))) else ""
    if path.is_symlink() and special:
        raise OutputError(f"{label} is a link to a {special} ({os.readlink(path)}); ftadapt writes only regular files "
                          f"and folders{hint}")
    if path.is_symlink():
        raise OutputError(f"{label} is a symbolic link (to {os.readlink(path)}); outputs never replace or write "
                          f"through links (a run's checkpoints/last is one): give the real path instead{hint}")
    if not os.path.lexists(path):
        return
    if special:
        noun = "file" if kind in ("file", "any") else "folder"
        raise OutputError(f"{label} is a {special}, not a regular file or folder; ftadapt never replaces one, even "
                          f"with {OVERWRITE_FLAG}: give the path of a new {noun}{hint}")
    if not path.is_dir():
        if kind in ("folder", "merge", "run"):
            raise OutputError(f"{label} is a file; give a folder")
        if not overwrite:
            raise OutputError(f"{label} already exists; pass {OVERWRITE_FLAG} to replace it, or choose another path")
        return
    if kind in ("merge", "run"):
        return
    if kind == "file":
        raise OutputError(f"{label} is a folder; give the path of a file")
    if _holds_cwd(_real(path)):
        raise OutputError(f"{label} is the folder this command runs in, or holds it; a command never replaces its own "
                          "working folder: choose another path")
    if not any(path.iterdir()):
        return  # an empty folder holds nothing to lose
    if not (is_checkpoint_folder(path) or is_marked_output(path)):
        raise OutputError(f"{label} is a folder that ftadapt did not write (it has no {OUTPUT_MARK} mark), so it is "
                          f"never replaced, even with {OVERWRITE_FLAG}: choose another path, or move its files away "
                          "yourself")
    if not overwrite:
        raise OutputError(f"{label} already exists; pass {OVERWRITE_FLAG} to replace it, or choose another path")


def _written_whole(folder: Path) -> str | None:
    """What ``folder`` is if only training writes it, and only whole (a checkpoint folder, a run folder), else None."""
    if is_checkpoint_folder(folder):
        return f"the checkpoint folder {folder}"
    if is_run_folder(folder):
        return f"the run folder {folder}"
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
                 what: str = "", kind: Kind = "file") -> Path:
    """Apply the output rule (module docstring) to ``path`` before any work; return where it lands.

    ``what`` names the option in messages (``--out``). ``kind`` (:func:`check_replaceable`): a ``merge`` folder
    (``predict --out``) may exist, but not be, contain or lie inside an input folder, nor be or lie inside a run or
    checkpoint folder — the files planned in it go through :func:`check_new_files`; a ``run`` folder is a merge folder
    that may be a run's (``train --out``, which resumes it); a ``folder`` written whole may replace a whole checkpoint
    folder (``convert --out``) but nothing inside one or inside a run.
    """
    if not str(path).strip():
        raise OutputError(f"{what} '{path}' is an empty path; give a file or folder name (for --json, '-' is standard "
                          "output)".strip())
    path = Path(path)
    label = _label(what, path)
    real = _real(path)
    _refuse_inputs(real, inputs, label, merge=kind in ("merge", "run"))
    check_replaceable(path, overwrite=overwrite, what=what, kind=kind)
    for folder in [real, *real.parents]:
        whole = _written_whole(folder)
        if whole is None or (folder == real and (kind == "run" or (kind == "folder" and is_checkpoint_folder(real)))):
            continue
        where = "is" if folder == real else "lies inside"
        raise OutputError(f"{label} {where} {whole}, which only `ftadapt train` writes, and only whole, even with "
                          f"{OVERWRITE_FLAG}: choose a path outside it")
    return real


def refuse_overlap(*targets: tuple[str, str | os.PathLike | None]) -> None:
    """The outputs of one command, ``(option, path)`` pairs (None and '-' skipped), must be separate: no two the same
    path (relative or absolute, through links) and none inside another."""
    given = [(what, Path(p), _real(p)) for what, p in targets if p is not None and str(p) != "-"]
    for i, (a, path_a, real_a) in enumerate(given):
        for b, path_b, real_b in given[i + 1:]:
            if real_a == real_b:
                why, fix = "are the same path", "another path"
            elif real_a in real_b.parents or real_b in real_a.parents:
                why, fix = "overlap (one lies inside the other)", f"a path outside {path_a}"
            else:
                continue
            raise OutputError(f"{a} {path_a} and {b} {path_b} {why}; the outputs of one command must be separate: "
                              f"give {b} {fix}")


def check_new_files(paths: Iterable[str | os.PathLike], *, overwrite: bool, inputs: Iterable[str | os.PathLike] = (),
                    what: str = "") -> None:
    """The files a command will add to an output folder: none may be an input, a link, a folder or anything but a
    regular file (even with ``overwrite``), and none may exist unless ``overwrite``; the message names the first
    offender and how many there are."""
    paths = [Path(p) for p in paths]
    sources = {Path(p).expanduser().resolve() for p in inputs}
    clashes = [p for p in paths if _real(p) in sources]
    if clashes:
        raise OutputError(f"{_label(what, clashes[0])} would replace an input ({len(clashes)} output(s) would); a "
                          "command never writes into what it reads: choose another output folder")
    for path in paths:
        check_replaceable(path, overwrite=True, what=what, kind="file")
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
    replaced only as :func:`check_replaceable` allows (a folder only once the new one is complete), checked before and
    again after the work; anything else raises :class:`~ftadapt.errors.OutputError` and writes nothing.
    """
    path = _real(path)
    check_replaceable(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        check_replaceable(path, overwrite=overwrite, kind="folder" if tmp.is_dir() else "file")
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
