"""GTA5, Cityscapes and SYNTHIA on tiny hand-made trees: sample contract, id mapping, augmentation, layout errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from datatrees import label_ids, make_cityscapes, make_gta5, make_synthia, write_png16
from PIL import Image

from ftadapt.data import transforms as T
from ftadapt.data.cityscapes import Cityscapes
from ftadapt.data.gta5 import GTA5
from ftadapt.data.png16 import read_label_channel0
from ftadapt.data.synthia import SYNTHIA
from ftadapt.errors import DatasetError, UsageError
from ftadapt.imageio import write_png
from ftadapt.protocol import CITYSCAPES_SIZE, GTA5_SIZE, SYNTHIA_SIZE

# trainIds of CITYSCAPES_IDS (7 road, 8 sidewalk, 26 car, 0 unlabeled, 255 license plate)
CITYSCAPES_TRAINIDS = [0, 1, 13, 255, 255]


@pytest.fixture
def gta5_root(tmp_path):
    return make_gta5(tmp_path / "GTA5", n=3, size=(24, 12))


def test_gta5_sample_contract_and_mapping(gta5_root):
    ds = GTA5(gta5_root, size=(24, 12))
    assert len(ds) == 3 and ds.size == (24, 12) and ds.has_labels
    sample = ds[1]
    assert list(sample) == ["image", "label", "name", "orig_hw"]
    assert sample["image"].shape == (3, 12, 24) and sample["image"].dtype == torch.float32
    assert sample["label"].shape == (12, 24) and sample["label"].dtype == torch.int64
    assert sample["name"] == "00002" and sample["orig_hw"] == (12, 24)
    assert sample["label"][0, :5].tolist() == CITYSCAPES_TRAINIDS
    rgb = np.asarray(Image.open(gta5_root / "images" / "00002.png"))
    torch.testing.assert_close(sample["image"], T.image_to_tensor(rgb))
    np.testing.assert_array_equal(ds.trainid_label(1), sample["label"].numpy())


def test_gta5_resizes_to_the_protocol_size_by_default(gta5_root):
    ds = GTA5(gta5_root)
    assert ds.size == GTA5_SIZE
    sample = ds[0]
    assert sample["image"].shape == (3, 720, 1280) and sample["label"].shape == (720, 1280)
    assert set(sample["label"].unique().tolist()) == {0, 1, 13, 255}
    assert sample["orig_hw"] == (12, 24)


def test_default_sizes_of_the_other_datasets(tmp_path):
    assert Cityscapes(make_cityscapes(tmp_path / "cs")).size == CITYSCAPES_SIZE
    assert SYNTHIA(make_synthia(tmp_path / "sy")).size == SYNTHIA_SIZE


def test_gta5_list_file_sets_order_and_missing_entries_fail(gta5_root, tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("00003.png\n\n00001.png\n")
    assert [f.name for f in GTA5(gta5_root, list_file=lst).frames] == ["00003", "00001"]
    lst.write_text("00003.png\n00009.png\n")
    with pytest.raises(DatasetError, match=r"00009\.png"):
        GTA5(gta5_root, list_file=lst)


def test_maxsquare_lists_of_integer_ids_and_split_prefixed_frames(gta5_root, tmp_path):
    """MaxSquare's lists: GTA5 integer ids (its 12,403-image train split), Cityscapes ``<split>_<frame>`` ids."""
    lst = tmp_path / "msq_gta5.txt"
    lst.write_text("3\n1\n")
    assert [f.name for f in GTA5(gta5_root, list_file=lst).frames] == ["00003", "00001"]
    root = make_cityscapes(tmp_path / "cs", {"val": 3})
    lst.write_text("val_bremen_000002_000019\nval_aachen_000001_000019\n")
    assert [f.name for f in Cityscapes(root, split="val", list_file=lst).frames] == [
        "bremen_000002_000019", "aachen_000001_000019"]


def test_augmentation_comes_from_the_key_seed(gta5_root):
    ds = GTA5(gta5_root, size=(24, 12), augment=True)
    plain = GTA5(gta5_root, size=(24, 12))[0]
    assert torch.equal(ds[0]["image"], plain["image"])  # an int key is never augmented
    seed = next(s for s in range(100) if T.draw_augment(s).mirror)
    a, b = ds[(0, seed, 1.0)], ds[(0, seed, 1.0)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert torch.equal(a["image"], plain["image"].flip(-1)) and torch.equal(a["label"], plain["label"].flip(-1))
    scaled = ds[(0, seed, 0.8)]
    assert scaled["image"].shape == (3, 9, 19) and scaled["label"].shape == (12, 24)
    drawn = T.draw_augment(seed)
    assert ds[(0, seed)]["image"].shape[1:] == T.scaled_size((24, 12), drawn.scale)[::-1]
    unaugmented = GTA5(gta5_root, size=(24, 12))[(0, seed, 0.8)]
    assert torch.equal(unaugmented["image"], plain["image"])  # augment=False ignores the seed
    maxsquare = GTA5(gta5_root, size=(24, 12), augment="maxsquare")[(0, seed, 0.8)]
    assert maxsquare["image"].shape == (3, 12, 24)  # no rescale in MaxSquare's augmentation
    with pytest.raises(UsageError, match="augment='crop'"):
        GTA5(gta5_root, augment="crop")


def test_index_errors(gta5_root):
    ds = GTA5(gta5_root, size=(24, 12))
    assert ds[-1]["name"] == "00003"
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(TypeError):
        ds[(0, 1, 1.0, 2)]


def test_gta5_root_one_level_too_high_or_low_suggests_the_right_folder(gta5_root):
    with pytest.raises(DatasetError, match=f"did you mean --root {gta5_root}\\?"):
        GTA5(gta5_root.parent)
    with pytest.raises(DatasetError, match=f"not a GTA5 root.*did you mean --root {gta5_root}\\?"):
        GTA5(gta5_root / "images")
    with pytest.raises(DatasetError, match="no such folder"):
        GTA5(gta5_root / "nope")


def test_gta5_missing_label_and_empty_folder(gta5_root, tmp_path):
    (gta5_root / "labels" / "00002.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 3 images have no label file: .*00002\.png"):
        GTA5(gta5_root)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labels").mkdir()
    with pytest.raises(DatasetError, match=r"no \.png images found"):
        GTA5(empty)
    (gta5_root / "labels").rename(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match="no labels/ folder"):
        GTA5(gta5_root)


def test_gta5_rejects_a_colour_label(gta5_root):
    write_png(gta5_root / "labels" / "00001.png", np.zeros((12, 24, 3), dtype=np.uint8), overwrite=True)
    with pytest.raises(DatasetError, match=r"00001\.png: label PNG has mode 'RGB'"):
        GTA5(gta5_root, size=(24, 12))[0]


def test_cityscapes_walk_order_labels_and_paths(tmp_path):
    root = make_cityscapes(tmp_path / "cs", {"train": 3, "val": 3})
    ds = Cityscapes(root, split="val", size=(32, 16))
    assert [f.name for f in ds.frames] == ["aachen_000001_000019", "bremen_000000_000019", "bremen_000002_000019"]
    sample = ds[0]
    assert sample["name"] == "aachen_000001_000019" and sample["label"][3, :5].tolist() == CITYSCAPES_TRAINIDS
    assert ds.label_path(0) == root / "gtFine/val/aachen/aachen_000001_000019_gtFine_labelIds.png"
    assert ds.image_path(0) == root / "leftImg8bit/val/aachen/aachen_000001_000019_leftImg8bit.png"


def test_cityscapes_target_training_needs_no_labels(tmp_path):
    root = make_cityscapes(tmp_path / "cs", {"train": 2}, labels=False)
    ds = Cityscapes(root, split="train", size=(32, 16), with_labels=False, augment=True)
    sample = ds[(0, 5, 1.1)]
    assert "label" not in sample and sample["image"].shape == (3, 17, 35)
    assert ds.label_path(0) is None and not ds.has_labels
    with pytest.raises(DatasetError, match=r"no gtFine labels for split 'train'.*with_labels=False"):
        Cityscapes(root, split="train")


def test_cityscapes_list_file(tmp_path):
    root = make_cityscapes(tmp_path / "cs", {"val": 3})
    lst = tmp_path / "val.txt"
    lst.write_text("bremen/bremen_000002_000019_leftImg8bit.png\naachen/aachen_000001_000019_leftImg8bit.png\n")
    assert [f.name for f in Cityscapes(root, split="val", list_file=lst).frames] == [
        "bremen_000002_000019", "aachen_000001_000019"]
    lst.write_text("bremen_000002_000019_leftImg8bit.png\n")
    with pytest.raises(DatasetError, match="entries must look like frankfurt/"):
        Cityscapes(root, split="val", list_file=lst)


def test_cityscapes_layout_errors(tmp_path):
    root = make_cityscapes(tmp_path / "cs", {"val": 1})
    with pytest.raises(DatasetError, match=r"splits found: val"):
        Cityscapes(root, split="train")
    with pytest.raises(DatasetError, match=f"did you mean --root {root}\\?"):
        Cityscapes(root / "leftImg8bit" / "val", split="val")
    (root / "gtFine/val/bremen/bremen_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 1 images have no label file.*gtFine_trainvaltest\.zip"):
        Cityscapes(root, split="val")


@pytest.mark.parametrize("size", [(3, 2), (37, 5)])
def test_read_label_channel0_keeps_16_bits_and_uses_channel_0(tmp_path, size):
    w, h = size
    ids = np.random.default_rng(w).integers(0, 65536, (h, w), dtype=np.uint16)
    ids[0, :3] = [3, 300, 65535]
    instances = np.full_like(ids, 7)  # id 7 would be "pole": reading channel 1 must not happen
    write_png16(tmp_path / "rgb.png", np.stack([ids, instances, ids[::-1]], axis=-1))
    write_png16(tmp_path / "rgba.png", np.stack([ids, instances, instances, instances], axis=-1))
    write_png16(tmp_path / "gray.png", ids)
    for name in ("rgb.png", "rgba.png", "gray.png"):
        out = read_label_channel0(tmp_path / name)
        assert out.dtype == np.uint16, name
        np.testing.assert_array_equal(out, ids, err_msg=name)
    # Pillow alone truncates the same file to 8 bits: the reason for the dedicated reader.
    assert np.asarray(Image.open(tmp_path / "rgb.png"))[0, 1, 0] != 300


def test_read_label_channel0_reads_8_bit_files_and_rejects_corrupt_ones(tmp_path):
    ids = np.array([[1, 2], [3, 250]], dtype=np.uint8)
    write_png(tmp_path / "l.png", ids)
    write_png(tmp_path / "rgb.png", np.stack([ids, ids + 1, ids], axis=-1))
    for name in ("l.png", "rgb.png"):
        out = read_label_channel0(tmp_path / name)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, ids)
    good = tmp_path / "good16.png"
    write_png16(good, np.stack([ids.astype(np.uint16)] * 3, axis=-1))
    data = bytearray(good.read_bytes())
    (tmp_path / "cut.png").write_bytes(data[:-20])
    data[-20] ^= 0xFF  # flip a byte inside the last IDAT chunk
    (tmp_path / "crc.png").write_bytes(bytes(data))
    (tmp_path / "text.png").write_text("not a png")
    for name, message in [("cut.png", "truncated"), ("crc.png", "CRC mismatch"), ("text.png", "not a PNG"),
                          ("missing.png", "file not found")]:
        with pytest.raises(DatasetError, match=f"{name}: .*{message}"):
            read_label_channel0(tmp_path / name)


def test_synthia_sample_maps_channel_0_and_ignores_unknown_ids(tmp_path):
    root = make_synthia(tmp_path / "SYNTHIA", n=2, size=(20, 10))
    ids = np.array([[3, 300, 1, 10], [8, 0, 21, 65535]], dtype=np.uint16)
    write_png16(root / "GT" / "LABELS" / "0000001.png", np.stack([ids, ids + 5, ids], axis=-1))
    write_png(root / "RGB" / "0000001.png", np.zeros((2, 4, 3), dtype=np.uint8), overwrite=True)
    ds = SYNTHIA(root, size=(4, 2))
    assert [f.name for f in ds.frames] == ["0000000", "0000001"]
    assert ds[1]["label"].tolist() == [[0, 255, 10, 11], [13, 255, 3, 255]]
    assert ds[1]["orig_hw"] == (2, 4)
    full = SYNTHIA(root, size=(20, 10))[0]["label"]
    assert full[0, :4].tolist() == [10, 0, 13, 255]  # sky, road, car, void


def test_synthia_single_channel_label(tmp_path):
    root = make_synthia(tmp_path / "SYNTHIA", n=1, size=(20, 10))
    write_png16(root / "GT" / "LABELS" / "0000000.png", label_ids(20, 10, (3, 8), dtype=np.uint16))
    assert SYNTHIA(root, size=(20, 10))[0]["label"][0, :2].tolist() == [0, 13]


def test_synthia_layout_and_corrupt_label(tmp_path):
    root = make_synthia(tmp_path / "SYNTHIA", n=1)
    with pytest.raises(DatasetError, match=f"not a SYNTHIA root.*did you mean --root {root}\\?"):
        SYNTHIA(root / "GT")
    (root / "GT" / "LABELS" / "0000000.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DatasetError, match=r"0000000\.png: truncated or corrupt PNG"):
        SYNTHIA(root)[0]


def test_synthetic_dataset_loads_with_both_classes(synthetic):
    gta = GTA5(synthetic.gta5_root, size=(80, 48))
    city = Cityscapes(synthetic.cityscapes_root, split="val", size=(64, 32))
    assert len(gta) == 6 and len(city) == 3
    assert gta[0]["label"].shape == (48, 80) and city[0]["image"].shape == (3, 32, 64)
    assert len(Cityscapes(synthetic.cityscapes_root, split="train", with_labels=False)) == 4
    assert set(city[0]["label"].unique().tolist()) <= set(range(19)) | {255}
