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


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned by the CLI into the same orderly unwinding as Ctrl-C (``ftadapt.cli.run_group``): a
    ``KeyboardInterrupt`` subclass, so every cleanup that an interruption runs (atomic outputs, loader workers, a
    training start removing what it wrote) runs for it too. CLI exit code 143 (128 + SIGTERM)."""

    exit_code = 143


def portable(exc: FtadaptError) -> FtadaptError:
    """``exc`` in a form that crosses a process boundary (pickle), for a loader worker handing it to the main process:
    ``exc`` itself when it comes back as the same class with the same message, else a plain ``FtadaptError`` (a
    ``UsageError`` for usage errors) with its message and exit code — a subclass whose ``__init__`` takes other
    arguments, or that holds what cannot be pickled, would otherwise fail to arrive at all."""
    import pickle

    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:  # whatever pickling raises, the message still crosses
        pass
    carried = (UsageError if isinstance(exc, UsageError) else FtadaptError)(str(exc))
    carried.exit_code = exc.exit_code
    return carried
