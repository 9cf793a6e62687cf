"""The log of a training process: ``metrics.jsonl`` of the run folder (``ftadapt.run_folder``), the same scalars as
TensorBoard events under ``tb/``, and a progress bar. On resume the log is cut back to the checkpoint's step, so each
step appears once."""
from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm import tqdm

from ftadapt.fsutil import write_text_atomic
from ftadapt.run_folder import METRICS_FILE, read_metrics


class RunLog:
    """Logging of one training process from ``start_step`` to ``total_steps``: JSONL, TensorBoard (when installed and
    wanted) and a tqdm bar with the loss terms and it/s."""

    def __init__(self, run_dir: str | Path, *, start_step: int, total_steps: int, tensorboard: bool = True,
                 progress: bool = True) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        kept = [r for r in read_metrics(run_dir) if r["step"] <= start_step]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept), overwrite=True)
        self._file = self.path.open("a")
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                pass
            else:
                self._writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=start_step + 1)
        self._bar = tqdm(total=total_steps, initial=start_step, disable=not progress, unit="step", dynamic_ncols=True,
                         smoothing=0.1)

    def advance(self) -> None:
        """One step done (moves the bar; its rate is the it/s)."""
        self._bar.update(1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record ``metrics`` of ``step`` everywhere; the bar shows the loss terms."""
        record = {"step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, value, step)
        losses = {k.removeprefix("loss/"): f"{v:.3g}" for k, v in metrics.items() if k.startswith("loss/")}
        self._bar.set_postfix(losses, refresh=False)

    def message(self, text: str) -> None:
        """Print a line without breaking the bar."""
        self._bar.write(text)

    def close(self) -> None:
        self._bar.close()
        self._file.close()
        if self._writer is not None:
            self._writer.close()


class SilentLog:
    """The RunLog of ranks other than 0: they write and print nothing."""

    def advance(self) -> None:
        pass

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


__all__ = ["RunLog", "SilentLog"]
