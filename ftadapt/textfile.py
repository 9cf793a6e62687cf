"""Reading the small text files a user hands to a command — a ``--config`` file, a ``--list-file``, a results JSON —
with one clear error when the file cannot be read or is not text.

A binary file given by mistake (``--config model.onnx``) would otherwise end in a ``UnicodeDecodeError`` traceback
from deep inside ``Path.read_text``; here it is one line that names the file, says it is not UTF-8 text and what to
give instead. Numpy-free, so every layer may use it.
"""
from __future__ import annotations

import codecs
import os
from pathlib import Path

from ftadapt.errors import FtadaptError, UsageError

_CHUNK = 1 << 20


def read_text_file(path: str | os.PathLike, *, what: str, fix: str,
                   error: type[FtadaptError] = UsageError) -> str:
    """The text of ``path`` decoded as UTF-8 (a leading byte-order mark, which some Windows editors write, dropped).

    ``what`` names the kind of file in messages ("config file"), ``fix`` says what to give instead. Raises ``error``
    (a UsageError unless the caller's layer has its own, e.g. DatasetError) when the file cannot be read (missing, a
    folder, no permission) or is not UTF-8 text. The file is decoded as it is read, so a large binary file given by
    mistake fails at its first undecodable megabyte instead of being read whole.
    """
    path = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    parts = []
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                parts.append(decoder.decode(chunk))
        parts.append(decoder.decode(b"", final=True))
    except OSError as exc:
        raise error(f"cannot read the {what} {path} ({exc.strerror or exc}); {fix}") from None
    except UnicodeDecodeError:
        raise error(f"{path} is not a text (UTF-8) {what}: it holds bytes that are not UTF-8 text (a binary file "
                    f"such as a model or an image?); {fix}") from None
    return "".join(parts)


__all__ = ["read_text_file"]
