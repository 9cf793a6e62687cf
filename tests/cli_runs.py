"""The ``ftadapt`` command line (and the investigations' ``python -m ftadapt.commands.investigate``) run in-process
by the tests, with the exit code a shell would see."""
from __future__ import annotations

from ftadapt.cli import main


def exit_code(argv, entry=main) -> int:
    """Run ``ftadapt ARGV`` (each item converted to str; ``entry``: another ``main``) and return its exit code (0 when
    it returns normally)."""
    try:
        entry([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code
    return 0
