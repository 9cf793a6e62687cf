"""How fast one loader process prepares training samples, and how many ``data.num_workers`` a training speed needs.

    python -m ftadapt.commands.investigate loader-speed [--samples 24] [--steps-per-s 28] [--json OUT]

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
import time
from typing import Any

import torch

from ftadapt.bench.report import host_info, torch_info
from ftadapt.bench.train_step import RAW_SIZES, synthetic_training_sets
from ftadapt.config import DataConfig


def measure_loading(samples: int = 24, steps_per_s: float = 28.0, frames: int = 4, seed: int = 0) -> dict[str, Any]:
    """Per-sample loading cost of each domain in this process (one torch thread) and the loader workers per domain
    needed for ``steps_per_s``; see the module docstring."""
    cfg = DataConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        with synthetic_training_sets(cfg.source_size, cfg.target_size, RAW_SIZES, frames, seed) as datasets:
            domains = {}
            for name, dataset, raw, size in zip(("source", "target"), datasets, RAW_SIZES,
                                                (cfg.source_size, cfg.target_size)):
                dataset[0]  # first touch: imports, file-system caches
                start = time.perf_counter()
                for i in range(samples):
                    dataset[i % len(dataset)]
                ms = 1000.0 * (time.perf_counter() - start) / samples
                domains[name] = {"raw_size": list(raw), "size": list(size), "ms_per_sample": round(ms, 2),
                                 "samples_per_s_per_worker": round(1000.0 / ms, 2),
                                 "workers_needed": math.ceil(steps_per_s * ms / 1000.0)}
    finally:
        torch.set_num_threads(threads)
    needed = max(d["workers_needed"] for d in domains.values())
    return {"benchmark": "loader_speed", "samples_per_domain": samples, "steps_per_s": steps_per_s,
            "domains": domains, "workers_needed_per_domain": needed, "default_num_workers": cfg.num_workers,
            "default_suffices": cfg.num_workers >= needed,
            "machine": {**host_info(), **torch_info()}}
