"""The ``ftadapt`` command line: a click group; each command parses, calls one library function, prints.

Heavy imports (torch, onnx, …) happen inside the commands so ``ftadapt --help`` stays fast. Project errors are
printed without a traceback: exit 1 for failures, 2 for usage errors.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ftadapt import __version__
from ftadapt.errors import FtadaptError


def emit_json(payload: dict, path: str | None) -> None:
    """Write ``payload`` as JSON to ``path`` atomically ('-' = stdout); nothing when ``path`` is None."""
    if path is None:
        return
    text = json.dumps(payload, indent=2, sort_keys=False, allow_nan=False) + "\n"
    if path == "-":
        click.echo(text, nl=False)
        return
    from ftadapt.fsutil import write_text_atomic

    write_text_atomic(path, text)
    click.echo(f"wrote {path}", err=True)


def parse_dataset_spec(spec: str) -> tuple[str, Path]:
    """Parse ``kind:ROOT`` (e.g. ``gta5:/data/GTA5``) into (kind, root)."""
    kind, sep, root = spec.partition(":")
    if not sep or not root or kind not in ("gta5", "cityscapes", "synthia"):
        raise click.BadParameter(f"{spec!r}: expected KIND:ROOT with KIND one of gta5, cityscapes, synthia "
                                 "(e.g. cityscapes:/data/Cityscapes)")
    return kind, Path(root)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ftadapt")
def cli() -> None:
    """ftadapt: train domain-adaptive segmentation (Feature To Adapt), fuse into ONNX, deploy with TensorRT FP16."""


# ----------------------------------------------------------------------------------------------------------------
# demo
@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="ftadapt-demo", show_default=True,
              help="Folder for the synthetic data and every artefact the demo produces.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out_dir: str, seed: int) -> None:
    """Run every stage on built-in synthetic data, on the CPU."""
    from ftadapt.demo import run_demo

    run_demo(Path(out_dir), seed=seed)


# ----------------------------------------------------------------------------------------------------------------
# data
@cli.group()
def data() -> None:
    """Synthetic data and the dataset doctor."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning project errors into one clean message."""
    try:
        cli.main(args=argv, prog_name="ftadapt", standalone_mode=False)
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
