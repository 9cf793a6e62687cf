"""The ``ftadapt`` command line: one click group over the command modules in ``ftadapt.commands``.

Each command parses its options, calls one library function and prints; heavy imports (torch, onnx, …) happen inside
the commands, so ``ftadapt --help`` stays fast. Errors a user can fix are printed as one line without a traceback:
exit 1 for failures, 2 for usage errors.
"""
from __future__ import annotations

import sys

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
from ftadapt.errors import FtadaptError
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
    Ctrl-C exits 130."""
    try:
        group.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FtadaptError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
