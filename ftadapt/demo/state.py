"""What makes the demo resumable and stoppable as a whole.

The demo's folder holds ``demo.json``: the settings it runs with (seed, steps, ftadapt version) and the result of
every stage that finished. Run again with the same settings, the demo reuses each recorded stage whose outputs still
exist, up to the first one that is not recorded, and runs everything from there (a training run that was stopped
resumes from its last checkpoint: ``ftadapt.training`` saves one when it stops on a signal). Once one stage has run,
every later stage runs too, so nothing later is older than what it was computed from.

Ctrl-C (SIGINT) and SIGTERM stop the whole demo: inside a training run the loop finishes its step, saves a
checkpoint and returns, and the demo then stops instead of carrying on with a half-trained model; anywhere else the
signal interrupts at once (outputs are written atomically, so nothing half-written remains). Either way the demo
ends with ``DemoStopped``, whose message says where it stopped and how to continue.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ftadapt.errors import OutputError, UsageError
from ftadapt.fsutil import check_target, remove_entry, write_text_atomic

STATE_FILE = "demo.json"
FORMAT = 1


class DemoStopped(KeyboardInterrupt):
    """The demo stopped on a signal; the message says where and how to continue."""


@dataclass
class DemoState:
    """The record of one demo folder (module docstring)."""

    out: Path
    settings: dict[str, Any]
    stages: dict[str, dict] = field(default_factory=dict)
    current: str | None = None
    ran: bool = False  # a stage has run in this session: every later one runs as well

    @classmethod
    def open(cls, out: Path, settings: dict[str, Any], *, entries: Sequence[str], overwrite: bool) -> DemoState:
        """The state of the demo in ``out``: a new one for an absent or empty folder, the recorded one for an earlier
        demo with the same settings, a fresh start with ``overwrite`` (which first removes the demo's own
        ``entries`` there and nothing else: in a folder that holds no demo, an entry of the same name is someone
        else's and is refused); never a link or a folder written only whole (the output rule of
        ``ftadapt.fsutil.check_target``); anything else is a UsageError naming the fix. Writes ``demo.json``."""
        out = Path(out)
        check_target(out, overwrite=overwrite, what="--out", kind="merge")
        path = out / STATE_FILE
        theirs = [name for name in entries if not path.is_file() and os.path.lexists(out / name)]
        if overwrite and theirs:
            raise OutputError(f"--out {out} holds {', '.join(theirs)}, but no demo ({STATE_FILE}), so they are not the "
                              "demo's to replace, even with --overwrite: choose another folder, or move them away")
        if overwrite:
            for name in (STATE_FILE, *entries):
                remove_entry(out / name)
        state = cls(out, settings)
        if path.is_file():
            recorded = _read(path)
            if recorded.get("settings") != settings:
                raise UsageError(f"{out} holds a demo run with other settings ({_describe(recorded.get('settings'))}"
                                 f" instead of {_describe(settings)}); repeat those to continue it, or pass "
                                 "--overwrite to start afresh")
            state.stages = dict(recorded.get("stages", {}))
        elif not overwrite and out.is_dir() and any(out.iterdir()):
            raise OutputError(f"--out {out} is not empty and holds no demo ({STATE_FILE}); choose another folder, or "
                              "pass --overwrite to start a demo there (it replaces only the demo's own files)")
        state.save()
        return state

    def save(self) -> None:
        write_text_atomic(self.out / STATE_FILE, json.dumps(
            {"format": FORMAT, "settings": self.settings, "stages": self.stages}, indent=2, default=str) + "\n",
            overwrite=True)

    def run(self, name: str, title: str, stage: Callable[[], dict]) -> dict:
        """Run ``stage`` (it returns a JSON-ready dict; its ``outputs``, paths relative to the demo folder, must exist
        for a later reuse) and record it — or reuse its record (see the module docstring)."""
        recorded = self.stages.get(name)
        self.current = title
        if recorded is not None and not self.ran and all((self.out / p).exists() for p in recorded.get("outputs", [])):
            click.secho(f"\n== {title}", bold=True)
            click.echo("   (finished in an earlier run: reused)")
            return recorded
        self.ran = True
        self.stages.pop(name, None)
        click.secho(f"\n== {title}", bold=True)
        start = time.perf_counter()
        result = stage()
        result["seconds"] = round(time.perf_counter() - start, 1)
        self.stages[name] = result
        self.save()
        click.echo(f"   ({result['seconds']:.1f} s)")
        return result

    def stopped(self, reason: str) -> DemoStopped:
        """The exception that ends a stopped demo, saying where it stopped and how to continue."""
        where = f" during '{self.current}'" if self.current else ""
        return DemoStopped(f"demo stopped{where}: {reason}. Finished stages and training checkpoints are kept; run "
                           f"`ftadapt demo --out {self.out}` again to continue from there")


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} cannot be read ({exc}); pass --overwrite to start the demo afresh") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{path} was written by another ftadapt version; pass --overwrite to start afresh")
    return data


def _describe(settings: Any) -> str:
    if not isinstance(settings, dict):
        return "unknown"
    return ", ".join(f"{k} {v}" for k, v in settings.items())


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs, SIGTERM interrupts like Ctrl-C (a ``DemoStopped`` is raised in the main thread) instead
    of killing the process at once; SIGINT keeps raising KeyboardInterrupt. ``ftadapt.training.train`` installs its
    own handlers for its run and restores these afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise DemoStopped(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["DemoState", "DemoStopped", "stop_on_signals", "STATE_FILE"]
