"""The synthetic two-domain dataset: layouts, label values, class coverage, determinism, domain gap, CLI."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ftadapt.data.synthetic import (
    DEFAULT_N_SOURCE,
    DEFAULT_N_TARGET_TRAIN,
    DEFAULT_N_TARGET_VAL,
    DEFAULT_SOURCE_SIZE,
    DEFAULT_TARGET_SIZE,
    write_synthetic,
)
from ftadapt.errors import UsageError
from ftadapt.labels import CITYSCAPES_ID_TO_TRAINID, PALETTE, cityscapes_to_trainid

IGNORED_IDS = {0, 1, 3, 4, 5, 6, 9, 10, 15, 18}  # the ignored ids the generator may write
TINY = {"n_source": 2, "n_target_train": 2, "n_target_val": 1, "source_size": (96, 64), "target_size": (96, 48)}


def _sources(layout):
    return sorted((layout.gta5_root / "labels").glob("*.png"))


def _targets(layout, split):
    return sorted((layout.cityscapes_root / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))


def _image_of(label_path):
    """The image file that belongs to a label file of either layout."""
    if label_path.parent.name == "labels":
        return label_path.parent.parent / "images" / label_path.name
    split, city = label_path.parent.parent.name, label_path.parent.name
    root = label_path.parents[3]
    return root / "leftImg8bit" / split / city / label_path.name.replace("_gtFine_labelIds", "_leftImg8bit")


def _ids(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_layout_and_file_names(synthetic):
    assert synthetic.gta5_root == synthetic.root / "gta5"
    assert synthetic.cityscapes_root == synthetic.root / "cityscapes"
    names = ["00001.png", "00002.png", "00003.png", "00004.png", "00005.png", "00006.png"]
    assert sorted(p.name for p in (synthetic.gta5_root / "images").iterdir()) == names
    assert sorted(p.name for p in (synthetic.gta5_root / "labels").iterdir()) == names
    cs = synthetic.cityscapes_root
    expected = {"train": ["aachen/aachen_000000_000019", "aachen/aachen_000001_000019",
                          "bochum/bochum_000000_000019", "bochum/bochum_000001_000019"],
                "val": ["frankfurt/frankfurt_000000_000019", "frankfurt/frankfurt_000001_000019",
                        "lindau/lindau_000000_000019"]}
    for split, frames in expected.items():
        images = sorted(p.relative_to(cs / "leftImg8bit" / split).as_posix() for p in
                        (cs / "leftImg8bit" / split).glob("*/*"))
        labels = sorted(p.relative_to(cs / "gtFine" / split).as_posix() for p in (cs / "gtFine" / split).glob("*/*"))
        assert images == [f + "_leftImg8bit.png" for f in frames]
        assert labels == [f + "_gtFine_labelIds.png" for f in frames]
        assert all(re.fullmatch(r"[a-z]+/[a-z]+_\d{6}_\d{6}", f) for f in frames)
    for path in (synthetic.gta5_root / "images").iterdir():
        with Image.open(path) as img:
            assert (img.mode, img.size) == ("RGB", (160, 96))
    for path in (cs / "leftImg8bit").glob("*/*/*.png"):
        with Image.open(path) as img:
            assert (img.mode, img.size) == ("RGB", (128, 64))
    meta = json.loads((synthetic.root / "synthetic.json").read_text())
    assert (meta["n_source"], meta["n_target_train"], meta["n_target_val"], meta["seed"]) == (6, 4, 3, 0)


def test_label_modes_and_values(synthetic):
    valid = set(CITYSCAPES_ID_TO_TRAINID) | IGNORED_IDS
    for path in _sources(synthetic):
        with Image.open(path) as img:
            assert img.mode == "P"
            palette = np.array(img.getpalette()[: 256 * 3]).reshape(256, 3)
        assert tuple(palette[26]) == PALETTE[CITYSCAPES_ID_TO_TRAINID[26]]  # index 26 (car) drawn in the car colour
        assert tuple(palette[7]) == PALETTE[0]
    source_ids = np.unique(np.concatenate([_ids(p).ravel() for p in _sources(synthetic)]))
    target_paths = _targets(synthetic, "train") + _targets(synthetic, "val")
    for path in target_paths:
        with Image.open(path) as img:
            assert img.mode == "L"
        ids = _ids(path)
        assert (ids[0] == 3).all() and (ids[:, -1] == 3).all(), "out-of-roi frame around Cityscapes-layout labels"
        assert (ids[-3, ids.shape[1] // 2] == 1), "ego vehicle at the bottom centre"
    target_ids = np.unique(np.concatenate([_ids(p).ravel() for p in target_paths]))
    for ids in (source_ids, target_ids):
        assert set(ids.tolist()) <= valid
        assert len(set(ids.tolist()) & IGNORED_IDS) >= 3, "labels should carry several ids that map to ignore"


def test_all_classes_occur_in_a_small_set(synthetic):
    for paths in (_sources(synthetic), _targets(synthetic, "train") + _targets(synthetic, "val")):
        per_image = [set(np.unique(cityscapes_to_trainid(_ids(p))).tolist()) - {255} for p in paths]
        assert set().union(*per_image) == set(range(19))
        assert np.mean([len(s) for s in per_image]) >= 14, "most images should show most classes"


def test_same_seed_same_data_and_prefix_stable(tmp_path):
    a = write_synthetic(tmp_path / "a", **TINY, seed=3)
    b = write_synthetic(tmp_path / "b", **TINY, seed=3)
    c = write_synthetic(tmp_path / "c", **{**TINY, "n_source": 1}, seed=3)
    d = write_synthetic(tmp_path / "d", **TINY, seed=4)
    for pa, pb in zip(_sources(a) + _targets(a, "train"), _sources(b) + _targets(b, "train"), strict=True):
        assert pa.read_bytes() == pb.read_bytes()
        assert np.array_equal(_ids(_image_of(pa)), _ids(_image_of(pb)))
    first = _sources(a)[0]
    assert np.array_equal(_ids(_image_of(first)), _ids(_image_of(_sources(c)[0])))  # independent of the count
    assert not np.array_equal(_ids(first), _ids(_sources(d)[0]))


def _saturation(rgb: np.ndarray) -> float:
    rgb = rgb.astype(np.float32)
    hi, lo = rgb.max(-1), rgb.min(-1)
    return float(np.mean((hi - lo) / np.maximum(hi, 1.0)))


def test_domains_differ_measurably(synthetic):
    """Saturation, sky colour and edge sharpness separate the rendered source from the photographed target."""
    stats = {}
    for domain, paths in (("source", _sources(synthetic)), ("target", _targets(synthetic, "train"))):
        sat, sky_blue, edge = [], [], []
        for path in paths:
            ids, rgb = _ids(path), _ids(_image_of(path)).astype(np.float32)
            sat.append(_saturation(rgb))
            sky = ids == 23
            if sky.any():
                sky_blue.append(float(np.mean(rgb[sky][:, 2] - rgb[sky][:, 0])))
            # colour step across vertical label boundaries: crisp in the source, blurred in the target
            step = np.abs(rgb[:, 1:] - rgb[:, :-1]).sum(-1)
            boundary = ids[:, 1:] != ids[:, :-1]
            edge.append(float(step[boundary].mean() / max(step[~boundary].mean(), 1e-6)))
        stats[domain] = np.mean(sat), np.mean(sky_blue), np.mean(edge)
    (s_sat, s_sky, s_edge), (t_sat, t_sky, t_edge) = stats["source"], stats["target"]
    assert s_sat > 1.5 * t_sat
    assert s_sky > t_sky + 60
    assert s_edge > 1.5 * t_edge


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for overwrite in (False, True):  # not a synthetic set: not even --overwrite replaces it
        with pytest.raises(UsageError, match="ftadapt did not write .*never replaced, even with --overwrite"):
            write_synthetic(out, **TINY, overwrite=overwrite)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # untouched, nothing half-written beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    first = write_synthetic(tmp_path / "set", **TINY, seed=1)
    write_synthetic(tmp_path / "set", **TINY, seed=2, overwrite=True)
    assert json.loads((first.root / "synthetic.json").read_text())["seed"] == 2
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        write_synthetic(tmp_path / "file", **TINY)


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    from ftadapt.data import synthetic

    real, calls = synthetic.synthesize, []

    def fail_on_third(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "synthesize", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        synthetic.write_synthetic(tmp_path / "set", **TINY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad, match", [({"n_source": 0}, "n_source"), ({"source_size": (32, 16)}, "source_size"),
                                        ({"target_size": (640,)}, "target_size")])
def test_rejects_bad_arguments(tmp_path, bad, match):
    with pytest.raises(UsageError, match=match):
        write_synthetic(tmp_path / "x", **{**TINY, **bad})
    assert not (tmp_path / "x").exists()


def test_cli_synth_writes_the_set(tmp_path):
    from ftadapt.cli import cli
    from ftadapt.commands.data import synth as data_synth

    out, report = tmp_path / "synth", tmp_path / "synth.json"
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(out), "--n-source", "2", "--n-train", "2",
                                      "--n-val", "1", "--source-size", "96x64", "--target-size", "96x48",
                                      "--seed", "5", "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert "source  train        2  96x64" in result.output
    assert len(list((out / "gta5" / "images").glob("*.png"))) == 2
    assert len(list((out / "cityscapes" / "gtFine" / "val").glob("*/*_labelIds.png"))) == 1
    payload = json.loads(report.read_text())
    assert payload["seed"] == 5 and [s["images"] for s in payload["splits"]] == [2, 2, 1]
    defaults = {p.name: p.default for p in data_synth.params}
    assert (defaults["n_source"], defaults["n_train"], defaults["n_val"]) == (
        DEFAULT_N_SOURCE, DEFAULT_N_TARGET_TRAIN, DEFAULT_N_TARGET_VAL)
    assert defaults["source_size"] == "{}x{}".format(*DEFAULT_SOURCE_SIZE)
    assert defaults["target_size"] == "{}x{}".format(*DEFAULT_TARGET_SIZE)


def test_cli_bad_size_is_a_usage_error(tmp_path, capsys):
    from ftadapt.cli import main

    out = tmp_path / "s"
    with pytest.raises(SystemExit) as exc:
        main(["data", "synth", "--out", str(out), "--source-size", "320by180"])
    assert exc.value.code == 2
    assert "'320by180' is not WIDTHxHEIGHT" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["data", "synth", "--out", str(out), "--target-size", "16x8"])
    assert exc.value.code == 2
    assert "target_size must be (W, H)" in capsys.readouterr().err
    assert not out.exists()


def test_real_loaders_read_the_output(synthetic):
    pytest.importorskip("torch")
    from ftadapt.data.cityscapes import Cityscapes
    from ftadapt.data.gta5 import GTA5

    gta = GTA5(synthetic.gta5_root, size=(160, 96))
    assert len(gta) == 6 and gta[0]["name"] == "00001"
    label = gta[0]["label"].numpy()
    assert label.shape == (96, 160) and set(np.unique(label).tolist()) <= set(range(19)) | {255}
    train = Cityscapes(synthetic.cityscapes_root, split="train", size=(128, 64))
    val = Cityscapes(synthetic.cityscapes_root, split="val", size=(128, 64))
    assert (len(train), len(val)) == (4, 3)
    assert val[2]["name"] == "lindau_000000_000019" and val[2]["image"].shape == (3, 64, 128)
    unlabeled = Cityscapes(synthetic.cityscapes_root, split="train", size=(128, 64), with_labels=False)
    assert "label" not in unlabeled[0]
