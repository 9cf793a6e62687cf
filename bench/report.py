"""How every benchmark hands over its figures: indented JSON on stdout, and the same text in a file when asked."""
from __future__ import annotations

import json
from typing import Any

from ftadapt.fsutil import write_text_atomic


def emit_report(report: dict[str, Any], json_out: str | None) -> None:
    """Print ``report`` as JSON and, with ``json_out``, write it there atomically."""
    text = json.dumps(report, indent=2, default=str)
    print(text, flush=True)
    if json_out:
        write_text_atomic(json_out, text + "\n")
