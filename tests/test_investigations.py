"""The investigations (``python -m ftadapt.commands.investigate``): they still run and measure what they claim."""
from __future__ import annotations

import math

import pytest
import torch

from ftadapt.bench.investigations.loader_speed import measure_loading
from ftadapt.machine import loader_workers


@pytest.mark.slow
def test_loader_speed_times_both_domains_at_the_real_file_sizes_and_sizes_the_worker_count():
    report = measure_loading(samples=2, steps_per_s=1000.0, frames=1)
    src, tgt = report["domains"]["source"], report["domains"]["target"]
    assert (src["raw_size"], src["size"], tgt["raw_size"], tgt["size"]) == ([1914, 1052], [1280, 720],
                                                                          [2048, 1024], [1024, 512])
    for domain in (src, tgt):
        assert domain["ms_per_sample"] > 1  # decoding a megapixel PNG costs milliseconds
        assert domain["workers_needed"] == math.ceil(1000.0 * domain["ms_per_sample"] / 1000.0)
    # 1000 steps/s is beyond any default: the report says so
    assert report["workers_needed_per_domain"] == max(src["workers_needed"], tgt["workers_needed"])
    assert report["default_num_workers"] == loader_workers() and report["default_suffices"] is False  # sized here
    assert torch.get_num_threads() == report["machine"]["torch_threads"]  # restored after the one-thread timing
