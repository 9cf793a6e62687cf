"""``ftadapt report``: saved evaluation results as one table in the paper's Table 1 shape, Markdown and CSV."""
from __future__ import annotations

from pathlib import Path

import click

from ftadapt.commands.common import labelled_path, overwrite_option


@click.command("report")
@click.argument("results", nargs=-1, required=True, metavar="[LABEL=]RESULT.json...")
@click.option("--baseline", default=None, metavar="LABEL",
              help="Add a table of every row's difference to this row, class by class (e.g. the CLAN baseline).")
@click.option("--paper", "with_paper", is_flag=True,
              help="Add the paper's Table 1 rows for reference (a note names the paper's typos they correct).")
@click.option("--out", "outs", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the table: .md as Markdown, .csv as CSV (repeatable).")
@overwrite_option("the --out files")
def report(results: tuple[str, ...], baseline: str | None, with_paper: bool, outs: tuple[Path, ...],
           overwrite: bool) -> None:
    """Render evaluation results (`ftadapt eval --json`, `ftadapt bench accuracy`'s results.json, …) as the paper's
    Table 1: one row per result, 19 classes and mIoU, with deltas against a baseline; what did not run and a parity
    gate's verdict are listed under the table.

    \b
    ftadapt report source-only.json "CLAN=clan.json" "CLAN + Norm=clan-norm.json" --baseline CLAN --paper \\
        --out table1.md --out table1.csv
    """
    from ftadapt.evaluation.report import csv_text, deltas, markdown, paper_notes, paper_rows, read_all
    from ftadapt.fsutil import check_target, refuse_overlap, write_text_atomic

    files = [labelled_path(spec) for spec in results]
    refuse_overlap(*(("--out", out) for out in outs))
    for out in outs:
        check_target(out, overwrite=overwrite, inputs=[path for _, path in files], what="--out")
        if out.suffix not in (".md", ".csv"):
            raise click.BadParameter(f"{out}: expected a .md or .csv file name", param_hint="--out")
    rows, notes = read_all(files)
    if with_paper:
        rows += paper_rows()
        notes += paper_notes()
    delta_rows = deltas(rows, baseline) if baseline else []
    table = markdown(rows, delta_rows, baseline, notes)
    click.echo(table, nl=False)
    for out in outs:
        write_text_atomic(out, table if out.suffix == ".md" else csv_text(rows, delta_rows), overwrite=overwrite)
        click.echo(f"wrote {out}", err=True)
