"""The endless loader: epoch permutations, per-batch scale, seeded samples, exact resume with and without workers."""
from __future__ import annotations

import itertools

import pytest
import torch
from datatrees import make_cityscapes, make_gta5
from torch.utils.data import Dataset

from ftadapt.data import transforms as T
from ftadapt.data.cityscapes import Cityscapes
from ftadapt.data.gta5 import GTA5
from ftadapt.data.loader import EndlessBatchSampler, collate_samples, derive_seed, endless_batches
from ftadapt.errors import UsageError


class KeyEcho(Dataset):
    """Returns its key: image = (index, sample_seed mod 2**20, scale)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        index, seed, scale = key
        return {"image": torch.tensor([index, seed % 2**20, scale], dtype=torch.float64), "name": str(index),
                "orig_hw": (1, 1)}


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert len({derive_seed(0, a, b) for a in range(3) for b in range(50)}) == 150
    assert 0 <= derive_seed(2**40, 7) < 2**63


def test_each_epoch_is_a_permutation_and_epochs_differ():
    sampler = EndlessBatchSampler(10, batch_size=3, seed=4)  # drop_last: 3 batches per epoch, one frame skipped
    assert sampler.steps_per_epoch == 3
    epochs = [[k[0] for step in range(e * 3, e * 3 + 3) for k in sampler.keys(step)] for e in range(3)]
    for order in epochs:
        assert len(order) == 9 and len(set(order)) == 9 and set(order) <= set(range(10))
    assert epochs[0] != epochs[1] != epochs[2]
    assert [k[0] for k in EndlessBatchSampler(10, batch_size=3, seed=5).keys(0)] != epochs[0][:3]


def test_keep_last_yields_the_short_batch():
    sampler = EndlessBatchSampler(5, batch_size=2, seed=0, drop_last=False)
    sizes = [len(keys) for keys in take(iter(sampler), 6)]
    assert sizes == [2, 2, 1, 2, 2, 1]


def test_one_scale_per_batch_from_the_batch_seed():
    sampler = EndlessBatchSampler(64, batch_size=4, seed=1)
    scales = []
    for step in range(300):
        keys = sampler.keys(step)
        assert len({k[2] for k in keys}) == 1
        assert len({k[1] for k in keys}) == 4  # distinct mirror seeds within the batch
        scales.append(keys[0][2])
    assert set(scales) == {0.8, 1.0, 1.1}


def test_sampler_rejects_bad_arguments():
    with pytest.raises(UsageError, match="fewer than one batch"):
        EndlessBatchSampler(3, batch_size=4, seed=0)
    with pytest.raises(UsageError, match="batch_size"):
        EndlessBatchSampler(3, batch_size=0, seed=0)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_reproduces_the_fresh_run(num_workers):
    dataset = KeyEcho(7)
    fresh = [b["image"] for b in take(endless_batches(dataset, batch_size=2, num_workers=0, seed=3), 12)]
    with endless_batches(dataset, batch_size=2, num_workers=num_workers, seed=3, start_step=5) as resumed:
        assert resumed.step == 5
        again = [b["image"] for b in take(resumed, 7)]
        assert resumed.step == 12
    for a, b in zip(fresh[5:], again):
        assert torch.equal(a, b)


def test_real_dataset_batches_resume_bit_for_bit_with_workers(tmp_path):
    dataset = GTA5(make_gta5(tmp_path / "GTA5", n=5, size=(24, 12)), size=(24, 12), augment=True)
    fresh = take(endless_batches(dataset, batch_size=2, num_workers=0, seed=11), 8)
    resumed = take(endless_batches(dataset, batch_size=2, num_workers=2, seed=11, start_step=4), 4)
    for a, b in zip(fresh[4:], resumed):
        assert a["name"] == b["name"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    shapes = {tuple(b["image"].shape[2:]) for b in fresh}
    assert shapes <= {(12, 24), T.scaled_size((24, 12), 0.8)[::-1], T.scaled_size((24, 12), 1.1)[::-1]}
    assert all(b["label"].shape == (2, 12, 24) for b in fresh)


def test_collate_keeps_names_and_sizes_as_lists(tmp_path):
    dataset = Cityscapes(make_cityscapes(tmp_path / "cs", {"train": 2}, labels=False), with_labels=False,
                         size=(16, 8))
    batch = collate_samples([dataset[0], dataset[1]])
    assert set(batch) == {"image", "name", "orig_hw"}
    assert batch["image"].shape == (2, 3, 8, 16)
    assert batch["name"] == ["aachen_000001_000019", "bremen_000000_000019"]
    assert batch["orig_hw"] == [(16, 32), (16, 32)]
    with pytest.raises(ValueError, match="with and without labels"):
        collate_samples([{"image": torch.zeros(1), "label": torch.zeros(1), "name": "a", "orig_hw": (1, 1)},
                         {"image": torch.zeros(1), "name": "b", "orig_hw": (1, 1)}])
