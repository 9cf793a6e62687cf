"""``ftadapt demo``: every stage on the built-in synthetic data, on a CPU, ending in ``OUT/report.md``
(``ftadapt.demo``)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ftadapt.config import SEED_MAX
from ftadapt.demo.settings import DEMO_STEPS, DemoSettings


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default="ftadapt-demo",
              show_default=True, help="Folder for the synthetic data and every artefact the demo produces.")
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=0, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=DEMO_STEPS, show_default=True,
              help="Training steps of each method.")
@click.option("--overwrite", is_flag=True,
              help="Start afresh: remove an earlier demo's files in --out (by default a rerun continues it).")
def demo(out_dir: Path, seed: int, steps: int, overwrite: bool) -> None:
    """Run every stage on built-in synthetic data, on the CPU, and write OUT/report.md.

    Ctrl-C or SIGTERM stops the whole demo; running it again reuses what finished and resumes the rest.
    """
    from ftadapt.demo.run import run_demo
    from ftadapt.demo.state import DemoStopped

    try:
        run_demo(out_dir, DemoSettings(seed=seed, steps=steps), overwrite=overwrite)
    except DemoStopped as exc:
        click.echo(f"\n{exc}", err=True)
        sys.exit(130)
