"""The ``ftadapt`` command line run in-process by the tests, with the exit code a shell would see."""
from __future__ import annotations

from ftadapt.cli import main


def exit_code(argv) -> int:
    """Run ``ftadapt ARGV`` (each item converted to str) and return its exit code (0 when it returns normally)."""
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code
    return 0
