"""Project exceptions. A user-caused error names the thing that is wrong and the fix; the CLI prints it without a
traceback and exits 1 (``FtadaptError``) or 2 (``UsageError``). Numpy-free so the runtime can use it."""
from __future__ import annotations


class FtadaptError(Exception):
    """A failure the user can act on (missing file, wrong layout, corrupt checkpoint …). CLI exit code 1."""

    exit_code = 1


class UsageError(FtadaptError, ValueError):
    """A bad argument or input value (wrong option, bad shape or dtype …). CLI exit code 2."""

    exit_code = 2


class DatasetError(FtadaptError):
    """A dataset root, file or label that cannot be used as it is."""


class CheckpointError(FtadaptError):
    """A checkpoint folder or weights file that is missing, corrupt or of the wrong layout."""


class OutputError(UsageError):
    """An output a command may not write: it exists (and replacing was not asked for), it is a symbolic link, it lies
    inside an input, or inside a folder ftadapt writes only whole (see ``ftadapt.fsutil.check_target``)."""
