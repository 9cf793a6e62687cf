"""How fast one loader process prepares training samples, and how many ``data.num_workers`` a training speed needs.

    python -m ftadapt.bench.loader_speed [--samples 24] [--steps-per-s 28] [--json OUT]

Writes a small synthetic set with files at the real datasets' sizes (GTA5 1914×1052 and Cityscapes 2048×1024 PNGs;
not timed), then times the training datasets' ``__getitem__`` in this process with one torch thread — the work of
one loader worker per sample: PNG decoding, the protocol resize, CLAN's random scale and mirror, the label mapping —
for the source (GTA5, labelled) and the target (Cityscapes train, unlabelled) at the paper's sizes. Reports ms per
sample, samples/s per worker, and the workers per domain that ``--steps-per-s`` (batch 1) needs beside the configured
default. Synthetic frames compress somewhat differently from photographs and game frames; run it on the real roots'
machine for the figure that matters (the decoding cost is per pixel, so the order of magnitude carries over).
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import torch

from ftadapt.bench.report import emit_report, host_info, torch_info
from ftadapt.config import DataConfig

RAW_SIZES = {"source": (1914, 1052), "target": (2048, 1024)}  # GTA5 and Cityscapes files, W×H


def measure_loading(samples: int = 24, steps_per_s: float = 28.0, frames: int = 4, seed: int = 0) -> dict[str, Any]:
    """Per-sample loading cost of each domain in this process (one torch thread) and the loader workers per domain
    needed for ``steps_per_s``; see the module docstring."""
    from ftadapt.data.cityscapes import Cityscapes
    from ftadapt.data.gta5 import GTA5
    from ftadapt.data.synthetic import write_synthetic

    cfg = DataConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        with tempfile.TemporaryDirectory(prefix="ftadapt-loader-") as tmp:
            layout = write_synthetic(Path(tmp) / "data", n_source=frames, n_target_train=frames, n_target_val=1,
                                     source_size=RAW_SIZES["source"], target_size=RAW_SIZES["target"], seed=seed)
            datasets = {"source": GTA5(layout.gta5_root, size=cfg.source_size, augment=cfg.augment),
                        "target": Cityscapes(layout.cityscapes_root, split="train", size=cfg.target_size,
                                             augment=cfg.augment, with_labels=False)}
            domains = {}
            for name, dataset in datasets.items():
                dataset[0]  # first touch: imports, file-system caches
                start = time.perf_counter()
                for i in range(samples):
                    dataset[i % len(dataset)]
                ms = 1000.0 * (time.perf_counter() - start) / samples
                domains[name] = {"raw_size": list(RAW_SIZES[name]),
                                 "size": list(cfg.source_size if name == "source" else cfg.target_size),
                                 "ms_per_sample": round(ms, 2), "samples_per_s_per_worker": round(1000.0 / ms, 2),
                                 "workers_needed": math.ceil(steps_per_s * ms / 1000.0)}
    finally:
        torch.set_num_threads(threads)
    needed = max(d["workers_needed"] for d in domains.values())
    return {"benchmark": "loader_speed", "samples_per_domain": samples, "steps_per_s": steps_per_s,
            "domains": domains, "workers_needed_per_domain": needed, "default_num_workers": cfg.num_workers,
            "default_suffices": cfg.num_workers >= needed,
            "machine": {**host_info(), **torch_info()}}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--samples", type=click.IntRange(min=1), default=24, show_default=True,
              help="Timed samples per domain.")
@click.option("--steps-per-s", type=click.FloatRange(min=0, min_open=True), default=28.0, show_default=True,
              help="Training speed (batch 1) the loaders must keep up with.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here.")
def main(samples: int, steps_per_s: float, json_out: str | None) -> None:
    """Time one loader worker's work per training sample and print JSON."""
    emit_report(measure_loading(samples, steps_per_s), json_out)


if __name__ == "__main__":
    main()
