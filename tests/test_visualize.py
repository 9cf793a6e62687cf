"""``ftadapt visualize`` (prediction grids with per-frame mIoU and error maps) and the training-curve figure."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from figure_checks import panels
from PIL import Image

from ftadapt.analysis import curves, grid
from ftadapt.analysis.grid import error_map, frame_miou, pick_frames, wrong_share
from ftadapt.checkpoint import save_checkpoint
from ftadapt.cli import main
from ftadapt.errors import UsageError
from ftadapt.evaluation import LabelledSplit
from ftadapt.evaluation.frames import labelids_to_trainids
from ftadapt.imageio import read_label, write_png
from ftadapt.labels import IGNORE_INDEX
from ftadapt.models.registry import create_model

IG = IGNORE_INDEX


def test_frame_miou_is_the_evaluation_rule_on_one_frame():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, IG]], np.uint8)
    pred = np.array([[0, 0, 0, 1], [0, 2, 1, 1]], np.uint8)
    # road: TP 3, FP 1, FN 1 → 3/5; sidewalk: TP 2, FP 0, FN 1 → 2/3 (the ignore pixel does not count);
    # building: predicted once, absent from gt → 0/1
    assert frame_miou(gt, pred) == pytest.approx(100 * (3 / 5 + 2 / 3 + 0) / 3)
    assert frame_miou(gt, gt) == pytest.approx(100.0)
    assert frame_miou(np.full((2, 2), IG, np.uint8), np.full((2, 2), IG, np.uint8)) is None
    assert wrong_share(gt, pred) == pytest.approx(100 * 2 / 7)


def test_error_maps_show_wrong_pixels_red_and_ignored_ones_grey():
    rgb = np.full((2, 3, 3), 200, np.uint8)
    gt = np.array([[0, 1, IG], [2, 2, 2]], np.uint8)
    pred = np.array([[0, 2, 5], [2, 0, 2]], np.uint8)
    out = error_map(rgb, gt, pred)
    assert out[0, 1].tolist() == list(grid.WRONG) and out[1, 1].tolist() == list(grid.WRONG)
    assert out[0, 2].tolist() == list(grid.IGNORED)  # ignore stays grey whatever was predicted
    assert out[0, 0].tolist() == [80, 80, 80]  # correct: the grey image dimmed (200 × 0.4)


def test_frames_are_picked_by_name_or_spread_over_the_split(synthetic):
    split = LabelledSplit.from_root(synthetic.cityscapes_root, "val")
    names = split.names
    assert pick_frames(split, count=2).names == [names[0], names[-1]]
    assert pick_frames(split, count=10).names == names
    assert pick_frames(split, [names[1], names[0]]).names == [names[1], names[0]]
    assert names[2].startswith("lindau") and pick_frames(split, ["lindau"]).names == [names[2]]  # a unique part
    with pytest.raises(UsageError, match="matches no frame"):
        pick_frames(split, ["nowhere_000000_000000"])
    with pytest.raises(UsageError, match="matches 3 frames"):
        pick_frames(split, ["_000019"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(4)
    model = create_model("tiny")
    path = tmp_path_factory.mktemp("vis") / "tiny"
    save_checkpoint(path, model_state=model.state_dict(), model_config=model.config,
                    meta={"method": "norm-only", "step": 1, "metrics": {}})
    return path


def test_visualize_draws_every_frame_and_column_with_the_frames_miou(synthetic, tiny, tmp_path, monkeypatch,
                                                                    capsys):
    """A checkpoint beside a prediction folder holding the ground truth itself (mIoU 100) and, for one frame, a
    constant prediction whose mIoU is known."""
    split = LabelledSplit.from_root(synthetic.cityscapes_root, "val")
    preds = tmp_path / "preds"
    for frame in split.frames:
        write_png(preds / f"{frame.name}_leftImg8bit.png", labelids_to_trainids(read_label(frame.label)))
    roads = np.zeros_like(read_label(split.frames[0].label))
    write_png(preds / f"{split.frames[0].name}_leftImg8bit.png", roads, overwrite=True)
    saved = {}
    original = grid.grid_figure
    monkeypatch.setattr(grid, "grid_figure", lambda *a, **k: saved.setdefault("fig", original(*a, **k)))
    out = tmp_path / "grid.png"
    main(["visualize", "--checkpoint", str(tiny), "--pred-dir", str(preds), "--data",
          f"cityscapes:{synthetic.cityscapes_root}", "--frames", "2", "--errors", "--size", "64x32", "--device",
          "cpu", "--tile-width", "128", "--out", str(out), "--json", str(tmp_path / "grid.json")])
    payload = json.loads((tmp_path / "grid.json").read_text())
    frames = [split.names[0], split.names[-1]]
    assert payload["frames"] == frames and payload["predictors"] == ["tiny", "predictions"]
    gt0 = labelids_to_trainids(read_label(split.frames[0].label))
    assert payload["per_frame"][frames[0]]["predictions"]["miou"] == pytest.approx(frame_miou(gt0, roads))
    assert payload["per_frame"][frames[1]]["predictions"] == {"miou": 100.0, "wrong_percent": 0.0}
    assert 0 <= payload["per_frame"][frames[1]]["tiny"]["miou"] <= 100
    drawn = panels(saved["fig"], out)
    titles = ["image", "ground truth", "tiny", "errors: tiny", "predictions", "errors: predictions"]
    assert [t for t, _ in drawn] == titles + [""] * 6  # 2 rows × 6 columns, titled on the first row only
    assert all(std > 5 for _, std in drawn), drawn  # pictures, not blank tiles
    text = capsys.readouterr().out
    assert f"{frames[1]}" in text and "100.0" in text
    assert Image.open(out).size[0] >= 6 * 128


def test_visualize_refuses_an_existing_file_and_unknown_frames(synthetic, tiny, tmp_path, capsys):
    out = tmp_path / "grid.png"
    out.write_bytes(b"not mine to replace")
    base = ["visualize", "--checkpoint", str(tiny), "--data", f"cityscapes:{synthetic.cityscapes_root}",
            "--size", "64x32", "--device", "cpu"]
    for extra, message in ((["--out", str(out)], "already exists; pass --overwrite"),
                           (["--out", str(tmp_path / "new.png"), "--frame", "nowhere"], "matches no frame"),
                           (["--out", str(tmp_path / "new.png"), "--fusion", "logits"], "--fusion applies to")):
        with pytest.raises(SystemExit) as exc:
            main([*base, *extra])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and "Traceback" not in err, err
    assert out.read_bytes() == b"not mine to replace" and not (tmp_path / "new.png").exists()
    with pytest.raises(SystemExit) as exc:
        main(["visualize", "--data", f"cityscapes:{synthetic.cityscapes_root}", "--out", str(tmp_path / "x.png")])
    assert exc.value.code == 2 and "say what to show" in capsys.readouterr().err


def test_training_curves_have_a_panel_per_quantity(tmp_path):
    runs = {}
    for name, keys in (("a", ("loss/seg", "feat_norm/src")),
                       ("b", ("loss/seg", "loss/norm_src", "loss/norm_tgt", "loss/adv", "feat_norm/src",
                              "feat_norm/tgt"))):
        folder = tmp_path / name
        folder.mkdir()
        records = [{"step": s, **{k: 1.0 / s + i for i, k in enumerate(keys)}} for s in (10, 20, 30)]
        records.append({"step": 40, "loss/seg": "nan"})  # a non-finite value is logged as a string: skipped
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        runs[name] = curves.read_curves(folder)
    assert runs["a"]["loss/seg"] == ([10, 20, 30], [0.1, 0.05, 1 / 30])
    assert curves.panels_of(runs) == ["loss/seg", "loss/norm", "loss/adv", "feat_norm"]
    fig = curves.curves_figure(runs, title="t")
    drawn = [ax for ax in fig.axes if ax.has_data()]
    assert len(drawn) == 4 and drawn[1].get_yscale() == "log"
    assert len(drawn[3].get_lines()) == 3  # a: source; b: source and target (dashed)
    assert curves.curves_figure({"a": {}}) is None


def test_a_grid_too_large_to_open_is_refused_before_any_prediction(synthetic, tiny, tmp_path, monkeypatch, capsys):
    """``--frames 500`` on Cityscapes val predicted every frame for hours and then wrote a 264-Mpx PNG that Pillow (and
    so every command here) refuses to open; the size is checked first, against the readers' own limit."""
    split = LabelledSplit.from_root(synthetic.cityscapes_root, "val")
    w, h = Image.open(split.frames[0].label).size
    rows = len(split.frames)
    width, height = 3 * 480, round(rows * (480 * h / w + 35))  # image, ground truth, one prediction; 0.35 in titles
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", width * height - 1)
    monkeypatch.setattr(grid, "predict_rows", lambda *a, **k: pytest.fail("predicted before the size check"))
    base = ["visualize", "--checkpoint", str(tiny), "--data", f"cityscapes:{synthetic.cityscapes_root}",
            "--size", "64x32", "--device", "cpu", "--out", str(tmp_path / "grid.png")]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--frames", "1000"])
    captured = capsys.readouterr()
    assert exc.value.code == 2 and "Traceback" not in captured.err
    assert f"note: --frames 1000, but {split.where} has {rows}: showing all of them" in captured.out
    assert (f"a grid of {rows} frames × 3 columns at --tile-width 480 would be {width}×{height} pixels" in captured.err
            and f"show at most {rows - 1} frames (--frames, --frame) or use narrower tiles" in captured.err)
    assert not (tmp_path / "grid.png").exists()
    assert grid.check_grid_size(pick_frames(split, count=rows - 1), 3, 480) == (width, height - height // rows)
