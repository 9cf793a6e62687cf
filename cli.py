"""The ``ftadapt`` command line: one click group over the command modules in ``ftadapt.commands``.

Each command parses its options, calls one library function and prints; heavy imports (torch, onnx, …) happen inside
the commands, so ``ftadapt --help`` stays fast. Errors a user can fix are printed as one line without a traceback:
exit 1 for failures, 2 for usage errors. SIGINT (exit 130) and SIGTERM (exit 143) unwind in order: nothing
half-written remains.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import NoReturn

import click

from ftadapt.commands.analyze import analyze, visualize
from ftadapt.commands.bench import bench
from ftadapt.commands.data import data
from ftadapt.commands.demo import demo
from ftadapt.commands.deploy import build_engine, predict
from ftadapt.commands.evaluate import evaluate_cmd
from ftadapt.commands.export import export, inspect
from ftadapt.commands.report import report
from ftadapt.commands.train import convert, train
from ftadapt.errors import FtadaptError, Terminated
from ftadapt.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ftadapt")
def cli() -> None:
    """ftadapt: train domain-adaptive segmentation (Feature To Adapt), fuse into ONNX, deploy with TensorRT FP16."""


for _command in (demo, data, convert, train, evaluate_cmd, report, analyze, visualize, export, inspect, build_engine,
                 predict, bench):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning project errors into one clean message."""
    run_group(cli, argv, prog_name="ftadapt")


def run_group(group: click.Group, argv: list[str] | None, *, prog_name: str) -> None:
    """Run ``group`` on ``argv``: a project error is one line without a traceback (exit 1, or 2 for usage errors),
    Ctrl-C (SIGINT) exits 130 and SIGTERM 143 (128 + the signal), both after the same orderly unwinding
    (``_interruptible``): every output being written is removed, so nothing half-written remains."""
    try:
        with _interruptible():
            group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort as exc:  # click turns KeyboardInterrupt (and so Terminated) into Abort
        if isinstance(exc.__context__, Terminated):
            _stopped(exc.__context__)
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FtadaptError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Terminated as exc:
        _stopped(exc)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def _stopped(exc: Terminated) -> NoReturn:
    """SIGTERM's end: one line, exit 143."""
    click.echo("terminated", err=True)
    sys.exit(exc.exit_code)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signal.Signals(signum).name)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """While a command runs, SIGINT raises KeyboardInterrupt and SIGTERM raises :class:`~ftadapt.errors.Terminated`
    (a KeyboardInterrupt), so both unwind through every cleanup (``ftadapt.fsutil.atomic_path`` removes its
    temporary, loader workers stop); the previous handlers come back afterwards.

    SIGINT is set even when the process inherited it ignored — as a non-interactive shell starts a background job
    (``ftadapt export … &`` in a script), where Python keeps it ignored and ``kill -INT`` did nothing: every command
    answers SIGINT, as ``ftadapt train`` always did (it installs its own handlers for a clean stop; see
    ``ftadapt.training.loop.StopRequest``). Only the main thread can set handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
                signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_terminated)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


if __name__ == "__main__":
    main()
