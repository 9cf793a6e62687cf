"""The label space: tables from reference/methods.md §5 and §7."""
from __future__ import annotations

import numpy as np
import pytest

from ftadapt import labels
from ftadapt.errors import UsageError


def test_nineteen_classes_with_names_and_palette():
    assert labels.NUM_CLASSES == 19 == len(labels.CLASS_NAMES) == len(labels.PALETTE)
    assert labels.CLASS_NAMES[0] == "road" and labels.CLASS_NAMES[10] == "sky" and labels.CLASS_NAMES[18] == "bicycle"
    assert labels.PALETTE[10] == (70, 130, 180)  # not MaxSquare's (0, 130, 180) typo
    assert labels.PALETTE[13] == (0, 0, 142)


def test_cityscapes_lookup_maps_ids_and_ignores_the_rest():
    ids = np.arange(256, dtype=np.uint8)
    train = labels.cityscapes_to_trainid(ids)
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for i in range(256):
        assert train[i] == expected.get(i, 255), i
    assert train.dtype == np.uint8


def test_synthia_lookup_reads_16_bit_ids():
    ids = np.array([[3, 4, 2, 21], [1, 8, 0, 1000]], dtype=np.uint16)
    assert labels.synthia_to_trainid(ids).tolist() == [[0, 1, 2, 3], [10, 13, 255, 255]]
    assert sorted(labels.SYNTHIA_ID_TO_TRAINID.values()) == list(range(19))


def test_lookups_reject_wrong_dtypes():
    with pytest.raises(TypeError, match="uint8"):
        labels.cityscapes_to_trainid(np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="uint16"):
        labels.synthia_to_trainid(np.zeros(3, dtype=np.float32))


def test_synthia_subsets():
    assert len(labels.SYNTHIA_16) == 16 and len(labels.SYNTHIA_13) == 13
    names16 = {labels.CLASS_NAMES[i] for i in labels.SYNTHIA_16}
    assert not names16 & {"terrain", "truck", "train"}
    assert set(labels.SYNTHIA_16) - set(labels.SYNTHIA_13) == {3, 4, 5}  # wall, fence, pole


def test_colorize_uses_palette_and_blacks_out_ignore():
    out = labels.colorize(np.array([[0, 18], [255, 40]], dtype=np.int32))
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [128, 64, 128] and out[0, 1].tolist() == [119, 11, 32]
    assert out[1].tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(UsageError, match="integer label map"):
        labels.colorize(np.zeros((2, 2), dtype=np.float32))
    custom = labels.palette_table([(1, 2, 3), (4, 5, 6)])
    assert labels.colorize(np.array([[1, 2, -1]]), custom).tolist() == [[[4, 5, 6], [0, 0, 0], [0, 0, 0]]]


def test_class_names_as_users_write_them():
    assert labels.class_ids("road, traffic_sign,Light,13,road") == (0, 7, 6, 13)
    assert labels.class_ids(["Traffic-Sign", "sign", "person"]) == (7, 11)
    with pytest.raises(UsageError, match="unknown class 'cars'; classes: road, sidewalk"):
        labels.class_ids("road,cars")
    with pytest.raises(UsageError, match="unknown class '19'"):
        labels.class_ids("19")
    with pytest.raises(UsageError, match="no class named"):
        labels.class_ids(" , ")
