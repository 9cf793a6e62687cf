"""Shared fixtures: one torch thread for the whole suite, one small synthetic two-domain dataset per session."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The suite's tensors are tiny: intra-op threads gain nothing and, on a shared 2-core machine, their
    spin-waiting makes steps several times slower."""
    try:
        import torch
    except ImportError:  # the base install: torch-free tests still run
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """A small synthetic GTA5-layout source and Cityscapes-layout target (see ftadapt.data.synthetic)."""
    from ftadapt.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic(root, n_source=6, n_target_train=4, n_target_val=3, source_size=(160, 96),
                           target_size=(128, 64), seed=0)
