"""A bench's ``--out DIR``: ``results.json`` (every number), ``report.md`` (the tables people read) and the PNG
figures, written into a temporary folder beside ``DIR`` and renamed into place at the end, so the folder appears whole
or not at all — an error or Ctrl-C while measuring or drawing leaves nothing behind. An existing ``DIR`` is
refused before any measuring starts (the output rule, ``ftadapt.fsutil.check_target``), unless ``--overwrite`` and the
folder is an earlier bench's (it carries ftadapt's mark): it is then replaced only once the new one is complete. A
folder of other files is never replaced.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ftadapt.fsutil import atomic_path
from ftadapt.layout import mark_output

RESULTS_FILE, REPORT_FILE = "results.json", "report.md"


def write_out_dir(out: str | os.PathLike, results: dict[str, Any], *, overwrite: bool = False) -> dict[str, Any]:
    """Write ``results.json``, ``report.md`` and the figures to ``out`` atomically (an existing folder only with
    ``overwrite``; the command checks that before measuring); return what was written (file → panel titles)."""
    from ftadapt.bench.figures import draw_figures
    from ftadapt.bench.tables import accuracy_markdown, latency_markdown

    out = Path(out)
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.mkdir()
        mark_output(tmp, f"ftadapt bench {results['benchmark']}")
        figures = draw_figures(results, tmp)
        pictures = [name for name, panels in figures.items() if isinstance(panels, list)]
        results = {**results, "figures": figures}
        render = accuracy_markdown if results["benchmark"] == "accuracy" else latency_markdown
        (tmp / REPORT_FILE).write_text(render(results, pictures))
        (tmp / RESULTS_FILE).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return {"folder": str(out), "files": [RESULTS_FILE, REPORT_FILE, *pictures], "figures": figures}


__all__ = ["write_out_dir", "RESULTS_FILE", "REPORT_FILE"]
