"""The dataset doctor on good and broken trees, and the `ftadapt data check` command."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from datatrees import make_cityscapes, make_gta5, make_synthia, write_png16

from ftadapt.cli import main
from ftadapt.data.check import check_dataset, format_report
from ftadapt.errors import DatasetError, UsageError
from ftadapt.imageio import write_png


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", *args])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_good_gta5_tree_is_usable_with_exact_histogram(tmp_path):
    report = check_dataset("gta5", make_gta5(tmp_path / "GTA5", n=3, size=(25, 4)), progress=False)
    [split] = report.splits
    assert report.usable and (split.n_images, split.n_labels, split.n_pairs) == (3, 3, 3)
    assert split.problems == [] and split.n_errors == split.n_warnings == 0
    # 25 columns cycling ids 7, 8, 26, 0, 255 → road, sidewalk, car 5 columns each, ignore 10; × 4 rows × 3 images
    expected = [0] * 20
    expected[0] = expected[1] = expected[13] = 5 * 4 * 3
    expected[19] = 10 * 4 * 3
    assert split.histogram == expected
    rows = report.to_dict()["splits"][0]["histogram"]
    assert rows[13] == {"train_id": 13, "name": "car", "pixels": 60, "percent": 20.0}
    assert rows[19]["train_id"] == 255 and rows[19]["percent"] == 40.0
    text = format_report(report)
    assert "usable" in text and "car" in text and "NOT" not in text


def test_broken_gta5_tree_lists_every_kind_of_problem(tmp_path):
    root = make_gta5(tmp_path / "GTA5", n=6, size=(24, 12))
    (root / "labels" / "00001.png").unlink()  # image without label
    (root / "images" / "00002.png").unlink()  # label without image
    (root / "images" / "00003.png").write_bytes((root / "images" / "00003.png").read_bytes()[:60])  # truncated
    write_png(root / "labels" / "00004.png", np.zeros((10, 24), dtype=np.uint8), overwrite=True)  # size mismatch
    write_png(root / "labels" / "00005.png", np.full((12, 24), 40, dtype=np.uint8), overwrite=True)  # not a label id
    report = check_dataset("gta5", root, progress=False)
    [split] = report.splits
    assert not report.usable
    assert split.problem_counts == {"label-without-image": 1, "missing-label": 1, "unreadable": 1,
                                    "size-mismatch": 1, "bad-values": 1}
    assert (split.n_errors, split.n_warnings) == (3, 2)
    assert (split.n_images, split.n_labels, split.n_pairs) == (5, 5, 4)
    by_kind = {p.kind: p for p in split.problems}
    assert by_kind["missing-label"].path.endswith("images/00001.png")
    assert by_kind["unreadable"].path.endswith("images/00003.png")
    assert by_kind["size-mismatch"].severity == "warning" and "24×10 vs image 24×12" in by_kind["size-mismatch"].detail
    assert "outside the known ids 0..33, 255: 40 (288 px)" in by_kind["bad-values"].detail
    assert "NOT usable" in format_report(report)


def test_problem_list_is_capped_but_all_are_counted(tmp_path):
    root = make_gta5(tmp_path / "GTA5", n=5, size=(8, 4))
    for i in range(1, 6):
        (root / "labels" / f"{i:05d}.png").unlink()
    [split] = check_dataset("gta5", root, max_problems=2, progress=False).splits
    assert len(split.problems) == 2 and split.problem_counts == {"missing-label": 5} and split.n_errors == 5


def test_corrupt_label_and_wrong_mode_are_unreadable(tmp_path):
    root = make_gta5(tmp_path / "GTA5", n=2, size=(8, 4))
    (root / "labels" / "00001.png").write_bytes(b"garbage")
    write_png(root / "labels" / "00002.png", np.zeros((4, 8, 3), dtype=np.uint8), overwrite=True)
    [split] = check_dataset("gta5", root, progress=False).splits
    details = sorted(p.detail for p in split.problems)
    assert split.problem_counts == {"unreadable": 2}
    assert "label PNG has mode 'RGB'" in details[0] and "unreadable or corrupt image" in details[1]


def test_synthia_values_are_checked_on_16_bits(tmp_path):
    root = make_synthia(tmp_path / "SYNTHIA", n=2, size=(20, 10))
    ids = np.full((10, 20), 3, dtype=np.uint16)
    ids[0, 0] = 300
    write_png16(root / "GT" / "LABELS" / "0000001.png", np.stack([ids] * 3, axis=-1))
    report = check_dataset("synthia", root, progress=False)
    [split] = report.splits
    assert [p.kind for p in split.problems] == ["bad-values"]
    assert "0..22: 300 (1 px)" in split.problems[0].detail
    assert split.histogram[0] == 50 + 199  # road: 5 stripes × 10 rows in image 0, 199 pixels of image 1
    assert split.histogram[10] == split.histogram[13] == 50 and split.histogram[19] == 50 + 1


def test_cityscapes_checks_both_splits_and_train_labels_are_optional(tmp_path):
    root = make_cityscapes(tmp_path / "cs", {"train": 2, "val": 2}, labels=False)
    make_cityscapes(root, {"val": 2})
    report = check_dataset("cityscapes", root, progress=False)
    train, val = report.splits
    assert (train.split, val.split) == ("train", "val") and report.usable
    assert train.problem_counts == {"no-labels": 1} and train.n_warnings == 1 and train.n_errors == 0
    assert sum(train.histogram) == 0 and sum(val.histogram) == 2 * 32 * 16
    assert "no labels read in train" in format_report(report)
    make_cityscapes(root, {"train": 1})  # one train frame labelled: the other one's missing label is a warning
    [train] = check_dataset("cityscapes", root, splits=["train"], progress=False).splits
    assert train.usable and train.problem_counts == {"missing-label": 1} and train.n_warnings == 1
    (root / "gtFine/val/aachen/aachen_000001_000019_gtFine_labelIds.png").unlink()
    [val] = check_dataset("cityscapes", root, splits=["val"], progress=False).splits
    assert not val.usable and val.problem_counts == {"missing-label": 1}


def test_layout_and_usage_errors(tmp_path):
    root = make_gta5(tmp_path / "data" / "GTA5", n=1)
    with pytest.raises(DatasetError, match="did you mean --root"):
        check_dataset("gta5", tmp_path / "data", progress=False)
    with pytest.raises(UsageError, match="no splits"):
        check_dataset("gta5", root, splits=["val"], progress=False)
    with pytest.raises(UsageError, match="unknown dataset"):
        check_dataset("kitti", root, progress=False)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labels").mkdir()
    [split] = check_dataset("gta5", empty, progress=False).splits
    assert not split.usable and split.problem_counts == {"no-images": 1}


def test_cli_good_dataset_prints_table_and_writes_json(tmp_path, capsys):
    root = make_gta5(tmp_path / "GTA5", n=2, size=(10, 4))
    out = tmp_path / "report.json"
    code, stdout, _ = run_cli(capsys, "--dataset", "gta5", "--root", str(root), "--json", str(out))
    assert code == 0
    assert "usable" in stdout and "road" in stdout and "ignore" in stdout
    report = json.loads(out.read_text())
    assert report["usable"] is True and report["splits"][0]["n_pairs"] == 2


def test_cli_json_to_stdout_stays_parseable(tmp_path, capsys):
    root = make_cityscapes(tmp_path / "cs", {"val": 1})
    code, stdout, stderr = run_cli(capsys, "--dataset", "cityscapes", "--root", str(root), "--split", "val",
                                   "--json", "-")
    assert code == 0 and json.loads(stdout)["splits"][0]["split"] == "val" and "trainId" in stderr


def test_cli_broken_dataset_exits_1_with_the_problems(tmp_path, capsys):
    root = make_gta5(tmp_path / "GTA5", n=2, size=(10, 4))
    (root / "labels" / "00002.png").unlink()
    code, stdout, stderr = run_cli(capsys, "--dataset", "gta5", "--root", str(root))
    assert code == 1
    assert "missing-label" in stdout and "00002.png" in stdout
    assert "error: gta5 at" in stderr and "not usable: 1 errors" in stderr


def test_cli_wrong_root_and_bad_options(tmp_path, capsys):
    root = make_gta5(tmp_path / "GTA5", n=1)
    code, _, stderr = run_cli(capsys, "--dataset", "gta5", "--root", str(root / "labels"))
    assert code == 1 and f"did you mean --root {root}?" in stderr
    code, _, stderr = run_cli(capsys, "--dataset", "gta5", "--root", str(root), "--split", "val")
    assert code == 2 and "no splits" in stderr
    code, _, stderr = run_cli(capsys, "--dataset", "kitti", "--root", str(root))
    assert code == 2 and "kitti" in stderr


def test_a_symlink_loop_and_an_unreadable_folder_are_named_not_a_traceback(tmp_path, capsys, monkeypatch):
    """Issue 16, case 4: the scan (shared by the doctor and training) crashed on ``a.png → b.png → a.png`` and on a
    ``labels/`` folder it may not list."""
    from ftadapt.data.gta5 import GTA5

    root = make_gta5(tmp_path / "GTA5", n=2)
    (root / "images" / "a.png").symlink_to("b.png")
    (root / "images" / "b.png").symlink_to("a.png")
    report = check_dataset("gta5", root, progress=False)
    [split] = report.splits
    looped = sorted(p.path for p in split.problems if p.kind == "unreadable")
    assert looped == [str(root / "images" / "a.png"), str(root / "images" / "b.png")] and not report.usable
    assert all("Too many levels of symbolic links" in p.detail for p in split.problems if p.kind == "unreadable")
    code, _, stderr = run_cli(capsys, "--dataset", "gta5", "--root", str(root))
    assert code == 1 and "Traceback" not in stderr and "not usable" in stderr
    real_scandir = os.scandir

    def refuse_labels(path):  # what a labels/ folder without read permission does (the suite may run as root)
        if str(path).endswith("labels"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_labels)
    code, _, stderr = run_cli(capsys, "--dataset", "gta5", "--root", str(root))
    assert code == 1 and "Traceback" not in stderr
    assert f"error: {root / 'labels'}: cannot list this folder (Permission denied); check that it exists" in stderr
    with pytest.raises(DatasetError, match="labels: cannot list this folder"):
        GTA5(root)  # training runs the same scan
