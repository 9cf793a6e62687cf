"""Shared fixtures: one small synthetic two-domain dataset per test session."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """A small synthetic GTA5-layout source and Cityscapes-layout target (see ftadapt.data.synthetic)."""
    from ftadapt.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic(root, n_source=6, n_target_train=4, n_target_val=3, source_size=(160, 96),
                           target_size=(128, 64), seed=0)
