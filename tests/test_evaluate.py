"""The mIoU evaluator: confusion matrix and metrics, results/tables, prediction-folder evaluation, ``ftadapt eval``."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from cli_runs import exit_code
from PIL import Image

from ftadapt.errors import DatasetError, FtadaptError, UsageError
from ftadapt.evaluation.folder import evaluate_pred_dir, index_predictions
from ftadapt.evaluation.frames import index_ground_truth, labelids_to_trainids
from ftadapt.evaluation.metrics import ConfusionMatrix, EvalResult
from ftadapt.evaluation.protocols import ADAPTSEGNET
from ftadapt.evaluation.tables import format_comparison, format_result
from ftadapt.imageio import write_png
from ftadapt.labels import CITYSCAPES_ID_TO_TRAINID, CLASS_NAMES, SYNTHIA_13, SYNTHIA_16, cityscapes_to_trainid

TRAINID_TO_ID = np.zeros(256, dtype=np.uint8)  # trainId → Cityscapes label id; 255 → 0 ("unlabeled")
for _id, _train in CITYSCAPES_ID_TO_TRAINID.items():
    TRAINID_TO_ID[_train] = _id


def _cm(gt, pred) -> ConfusionMatrix:
    cm = ConfusionMatrix()
    cm.update(np.asarray(gt, dtype=np.uint8), np.asarray(pred, dtype=np.uint8))
    return cm


# ---------------------------------------------------------------------------------------------------------------
# ConfusionMatrix
def test_hand_computed_matrix_iou_and_miou():
    cm = _cm([[0, 1, 2], [1, 1, 255]], [[0, 2, 2], [1, 0, 0]])
    expected = np.zeros((19, 19), dtype=np.int64)
    expected[0, 0] = expected[1, 2] = expected[2, 2] = expected[1, 1] = expected[1, 0] = 1
    np.testing.assert_array_equal(cm.matrix, expected)
    assert cm.matrix.dtype == np.int64 and cm.n_pixels == 5  # the gt-255 pixel is not counted
    iou = cm.iou()
    np.testing.assert_allclose(iou[:3], [1 / 2, 1 / 3, 1 / 2])  # TP/(TP+FP+FN): 1/(1+1+0), 1/(1+0+2), 1/(1+1+0)
    assert np.isnan(iou[3:]).all()  # absent from both GT and prediction
    assert cm.miou() == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3, abs=1e-15)


def test_class_predicted_but_absent_from_gt_counts_as_zero():
    cm = _cm([[0, 0]], [[0, 5]])
    assert cm.iou()[5] == 0.0 and cm.iou()[0] == 0.5
    assert cm.miou() == pytest.approx(0.25)


def test_ignore_pixels_are_not_counted():
    gt = np.array([[255, 19, 200, 4]], dtype=np.uint8)  # 255 and any unmapped value ≥ 19 are ignored
    cm = _cm(gt, [[3, 3, 3, 4]])
    assert cm.n_pixels == 1 and cm.matrix[4, 4] == 1 and cm.matrix[:, 3].sum() == 0
    wide = ConfusionMatrix()  # other integer dtypes: negatives (MaxSquare's -1) are ignored too
    wide.update(np.array([[-1, 19, 300, 4]], dtype=np.int64), np.array([[3, 3, 3, 4]], dtype=np.int32))
    np.testing.assert_array_equal(wide.matrix, cm.matrix)


def test_prediction_255_is_a_false_negative_only():
    cm = _cm([[3, 3, 7]], [[3, 255, 7]])
    assert cm.missed[3] == 1 and cm.matrix.sum() == 2
    assert cm.iou()[3] == 0.5 and cm.iou()[7] == 1.0  # 255 adds to FN of class 3 and to no class's FP


def test_invalid_prediction_values_raise_naming_the_file():
    with pytest.raises(UsageError, match=r"a/b\.png: prediction holds values \[21, 26\].*label ids"):
        ConfusionMatrix().update(np.zeros((1, 3), np.uint8), np.array([[0, 21, 26]], np.uint8), name="a/b.png")
    with pytest.raises(UsageError, match=r"values \[19\]"):  # also under ignored ground truth
        ConfusionMatrix().update(np.full((1, 2), 255, np.uint8), np.array([[19, 0]], np.uint8))
    with pytest.raises(UsageError, match=r"values \[-1, 300\]"):
        ConfusionMatrix().update(np.zeros((1, 3), np.int64), np.array([[-1, 300, 2]], np.int64))
    with pytest.raises(UsageError, match="dtype float32"):
        ConfusionMatrix().update(np.zeros((1, 2), np.uint8), np.zeros((1, 2), np.float32))
    with pytest.raises(UsageError, match=r"shape \(1, 3\) differs from ground-truth shape \(1, 2\)"):
        ConfusionMatrix().update(np.zeros((1, 2), np.uint8), np.zeros((1, 3), np.uint8))


def test_merge_equals_counting_together_and_batches_work():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 21, (2, 8, 8)).astype(np.uint8)
    pred = rng.integers(0, 19, (2, 8, 8)).astype(np.uint8)
    merged = _cm(gt[0], pred[0]).merge(_cm(gt[1], pred[1]))
    batch = _cm(gt, pred)
    np.testing.assert_array_equal(merged.matrix, batch.matrix)
    np.testing.assert_array_equal(merged.missed, batch.missed)


@pytest.mark.parametrize("blocky", [True, False], ids=["runs", "speckle"])
def test_counts_match_a_pixel_by_pixel_reference(blocky):
    rng = np.random.default_rng(1)
    shape = (4, 6) if blocky else (48, 64)
    gt = rng.choice([0, 3, 18, 19, 255], shape).astype(np.uint8)
    pred = rng.choice([0, 3, 7, 18, 255], shape).astype(np.uint8)
    if blocky:  # long runs take the run-length path, speckle the plain bincount
        gt, pred = (np.kron(a, np.ones((12, 20), np.uint8)) for a in (gt, pred))
    expected, missed = np.zeros((19, 19), np.int64), np.zeros(19, np.int64)
    for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist()):
        if g < 19:
            if p == 255:
                missed[g] += 1
            else:
                expected[g, p] += 1
    cm = _cm(gt, pred)
    np.testing.assert_array_equal(cm.matrix, expected)
    np.testing.assert_array_equal(cm.missed, missed)
    empty = _cm(np.zeros((0, 5)), np.zeros((0, 5)))
    assert empty.n_pixels == 0 and np.isnan(empty.iou()).all()


def test_synthia_subsets_and_all_nan():
    cm = ConfusionMatrix()
    cm.matrix[np.arange(19), np.arange(19)] = np.arange(1, 20)
    cm.matrix[np.arange(19), (np.arange(19) + 1) % 19] = 1  # class c: TP c+1, FN 1, FP 1
    iou = np.arange(1, 20) / (np.arange(1, 20) + 2)
    np.testing.assert_allclose(cm.iou(), iou, rtol=0, atol=1e-15)
    assert cm.miou_subset(SYNTHIA_16) == pytest.approx(iou[list(SYNTHIA_16)].mean(), abs=1e-15)
    assert cm.miou_subset(SYNTHIA_13) == pytest.approx(iou[list(SYNTHIA_13)].mean(), abs=1e-15)
    assert len(SYNTHIA_16) == 16 and len(SYNTHIA_13) == 13
    assert math.isnan(ConfusionMatrix().miou())


def test_labelid_mapping_matches_the_label_table():
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(labelids_to_trainids(ids), cityscapes_to_trainid(ids))
    assert labelids_to_trainids(np.array([[7, 26, 33, 0, 6, 255]], np.uint8)).tolist() == [[0, 13, 18, 255, 255, 255]]


# ---------------------------------------------------------------------------------------------------------------
# Results and tables
def _result(synthia: bool = False) -> EvalResult:
    cm = _cm([[0, 1, 2], [1, 1, 255]], [[0, 2, 2], [1, 0, 0]])
    return EvalResult.from_confusion(cm, n_images=2, protocol=ADAPTSEGNET.describe(flip=False),
                                     synthia_subsets=synthia)


def test_result_json_schema():
    out = _result().to_dict()
    text = json.dumps(out, allow_nan=False)  # NaN must have become null
    assert json.loads(text) == out
    assert len(out["per_class_iou"]) == 19 and out["per_class_iou"][3:] == [None] * 16
    assert out["per_class_iou"][:3] == pytest.approx([50.0, 100 / 3, 50.0], abs=1e-12)  # percent, not rounded
    assert out["miou"] == pytest.approx(100 * (1 / 2 + 1 / 3 + 1 / 2) / 3, abs=1e-12)
    assert out["classes"] == list(CLASS_NAMES) and out["n_images"] == 2
    assert out["protocol"]["name"] == "adaptsegnet" and out["protocol"]["gt_resolution"] == "full"
    assert out["protocol"]["flip"] is False and "miou16" not in out and "missing" not in out
    synthia = _result(synthia=True).to_dict()
    assert synthia["miou16"] == pytest.approx(synthia["miou13"]) == pytest.approx(100 * (1 / 2 + 1 / 3 + 1 / 2) / 3)


def test_format_result_and_comparison():
    table = format_result(_result(synthia=True))
    assert "sidewalk" in table and "bicycle" in table and "33.33" in table
    assert "mIoU  " in table and "44.44" in table and "mIoU16" in table
    assert table.splitlines()[5].split()[-1] == "-"  # wall: NaN
    other = EvalResult(np.where(np.isnan(_result().iou), np.nan, 0.25), 2, {})
    cmp = format_comparison({"run a": _result(), "ensemble": other}, delta=("ensemble", "run a"))
    lines = cmp.splitlines()
    assert lines[0].endswith("run a  ensemble  ensemble-run a")
    assert lines[2].split()[-3:] == ["50.00", "25.00", "-25.00"]  # road
    assert lines[-1].split()[-3:] == ["44.44", "25.00", "-19.44"]
    with pytest.raises(UsageError, match="delta"):
        format_comparison({"a": other}, delta=("a", "b"))


# ---------------------------------------------------------------------------------------------------------------
# Prediction folders
def _write(root, frames: dict, pred_name="{}_leftImg8bit.png", city_of=lambda f: f.split("_")[0]):
    """frames: frame id → (gt label ids, predicted trainIds or None). Returns (pred_dir, gt_dir)."""
    pred_dir, gt_dir = root / "pred", root / "gtFine" / "val"
    pred_dir.mkdir(parents=True, exist_ok=True)
    for frame, (gt, pred) in frames.items():
        if gt is not None:
            write_png(gt_dir / city_of(frame) / f"{frame}_gtFine_labelIds.png", np.asarray(gt, np.uint8))
        if pred is not None:
            write_png(pred_dir / pred_name.format(frame), np.asarray(pred, np.uint8))
    return pred_dir, gt_dir


def _frames(n=3, shape=(6, 10), seed=0):
    rng = np.random.default_rng(seed)
    ids = np.array([*sorted(CITYSCAPES_ID_TO_TRAINID), 0, 4, 255])
    out = {}
    for i in range(n):
        gt = rng.choice(ids, shape).astype(np.uint8)
        pred = rng.integers(0, 19, shape).astype(np.uint8)
        out[f"frankfurt_000000_{i:06d}"] = (gt, pred)
    return out


def test_pred_dir_matches_in_memory_confusion(tmp_path):
    frames = _frames()
    pred_dir, gt_dir = _write(tmp_path, frames)
    (pred_dir / "frankfurt_000000_000000_leftImg8bit_color.png").write_bytes(b"not even a png")  # ignored
    result = evaluate_pred_dir(pred_dir, gt_dir, workers=2, progress=False)
    expected = ConfusionMatrix()
    for gt, pred in frames.values():
        expected.update(cityscapes_to_trainid(gt), pred)
    np.testing.assert_array_equal(result.confusion.matrix, expected.matrix)
    assert result.n_images == 3 and result.miou == expected.miou()
    assert result.missing == {"predictions": [], "ground_truth": [], "size_mismatch": []}
    assert result.protocol["predictions"] == "trainId PNGs"


def test_prediction_file_matching(tmp_path):
    root = tmp_path / "p"
    (root / "lindau").mkdir(parents=True)
    for name in ("frankfurt_000000_000294_leftImg8bit.png", "lindau/val_lindau_000001_000019.png",
                 "frankfurt_000000_000294_leftImg8bit_color.png", "readme.png", "munster_000002_000003.txt"):
        (root / name).write_bytes(b"")
    assert index_predictions(root) == {"frankfurt_000000_000294": root / "frankfurt_000000_000294_leftImg8bit.png",
                                       "lindau_000001_000019": root / "lindau/val_lindau_000001_000019.png"}
    (root / "frankfurt_000000_000294_pred.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="two predictions for frame frankfurt_000000_000294"):
        index_predictions(root)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="no prediction PNGs named by a Cityscapes frame id .* 1 other PNG"):
        index_predictions(tmp_path / "empty")


def test_ground_truth_folder_hints(tmp_path):
    _, gt_dir = _write(tmp_path / "cs", {"ulm_000000_000001": (np.zeros((2, 2)), None)})
    assert list(index_ground_truth(gt_dir)) == ["ulm_000000_000001"]
    for folder, hint in ((tmp_path / "cs", "Cityscapes root: pass .*gtFine/val"),
                         (tmp_path / "cs" / "gtFine", "gtFine folder: pass .*gtFine/val"),
                         (gt_dir / "ulm", "one city folder: pass its parent"),
                         (tmp_path, "pass the gtFine/<split> folder")):
        with pytest.raises(DatasetError, match=hint):
            index_ground_truth(folder)


def test_missing_and_mismatched_frames(tmp_path):
    frames = _frames(n=4)
    frames["frankfurt_000000_000001"] = (frames["frankfurt_000000_000001"][0], None)  # no prediction
    frames["frankfurt_000000_000002"] = (frames["frankfurt_000000_000002"][0], np.zeros((3, 5)))  # half size
    frames["frankfurt_000000_000009"] = (None, np.zeros((6, 10)))  # prediction without ground truth
    pred_dir, gt_dir = _write(tmp_path, frames)
    with pytest.raises(FtadaptError) as info:
        evaluate_pred_dir(pred_dir, gt_dir, progress=False)
    message = str(info.value)
    assert "1 ground-truth frame(s) without a prediction: frankfurt_000000_000001" in message
    assert "1 prediction(s) without a ground-truth frame: frankfurt_000000_000009" in message
    assert "frankfurt_000000_000002 (prediction 5x3, ground truth 10x6)" in message and "--allow-missing" in message
    result = evaluate_pred_dir(pred_dir, gt_dir, allow_missing=True, progress=False)
    assert result.n_images == 2
    assert result.missing == {"predictions": ["frankfurt_000000_000001"], "ground_truth": ["frankfurt_000000_000009"],
                              "size_mismatch": ["frankfurt_000000_000002"]}
    expected = ConfusionMatrix()
    for frame in ("frankfurt_000000_000000", "frankfurt_000000_000003"):
        expected.update(cityscapes_to_trainid(frames[frame][0]), frames[frame][1])
    np.testing.assert_array_equal(result.confusion.matrix, expected.matrix)


def test_no_overlap_is_an_error_even_when_allowed(tmp_path):
    pred_dir, gt_dir = _write(tmp_path, {"ulm_000000_000001": (np.zeros((2, 2)), None),
                                         "ulm_000000_000002": (None, np.zeros((2, 2)))})
    with pytest.raises(DatasetError, match="no prediction .* matches a ground-truth frame"):
        evaluate_pred_dir(pred_dir, gt_dir, allow_missing=True, progress=False)
    write_png(pred_dir / "ulm_000000_000001.png", np.zeros((1, 2), np.uint8))  # the only pair: sizes differ
    with pytest.raises(FtadaptError, match="No pair is left to evaluate"):
        evaluate_pred_dir(pred_dir, gt_dir, allow_missing=True, progress=False)


def test_synthetic_val_split_scores_its_own_labels_perfectly(synthetic, tmp_path):
    gt_dir = synthetic.cityscapes_root / "gtFine" / "val"
    for path in gt_dir.glob("*/*_gtFine_labelIds.png"):
        gt = np.asarray(Image.open(path))
        write_png(tmp_path / path.name.replace("gtFine_labelIds", "leftImg8bit"), cityscapes_to_trainid(gt))
    result = evaluate_pred_dir(tmp_path, gt_dir, progress=False)
    present = ~np.isnan(result.iou)
    assert result.n_images == 3 and present.sum() >= 5
    assert (result.iou[present] == 1.0).all() and result.miou == 1.0


# ---------------------------------------------------------------------------------------------------------------
# CLI
def test_cli_eval_success_and_json(tmp_path, capsys):
    pred_dir, gt_dir = _write(tmp_path, _frames())
    out = tmp_path / "result.json"
    assert exit_code(["eval", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--json", str(out),
                      "--synthia", "--workers", "1"]) == 0
    payload = json.loads(out.read_text())
    assert len(payload["per_class_iou"]) == 19 and payload["n_images"] == 3 and "miou13" in payload
    stdout = capsys.readouterr().out
    assert "traffic light" in stdout and f"{payload['miou']:.2f}" in stdout
    assert exit_code(["eval", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["miou"] == payload["miou"] and "traffic light" in captured.err


def test_cli_eval_exit_codes(tmp_path, capsys):
    frames = _frames(n=2)
    frames["frankfurt_000000_000007"] = (frames["frankfurt_000000_000000"][0], None)
    pred_dir, gt_dir = _write(tmp_path, frames)
    assert exit_code(["eval", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir)]) == 1
    assert "1 ground-truth frame(s) without a prediction: frankfurt_000000_000007" in capsys.readouterr().err
    assert exit_code(["eval", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--allow-missing"]) == 0
    assert "warning: 1 ground-truth frame(s) without a prediction" in capsys.readouterr().err
    assert exit_code(["eval"]) == 2
    assert "say what to evaluate: --checkpoint DIR" in capsys.readouterr().err
    assert exit_code(["eval", "--pred-dir", str(pred_dir)]) == 2
    assert "also needs --data cityscapes:ROOT (or --gt-dir" in capsys.readouterr().err
    assert exit_code(["eval", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--data",
                      f"cityscapes:{tmp_path}"]) == 2
    assert "give the ground truth once" in capsys.readouterr().err
    write_png(pred_dir / "frankfurt_000000_000007_leftImg8bit.png", np.full((6, 10), 26, np.uint8))
    assert exit_code(["eval", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir)]) == 2  # label ids, not trainIds
    assert "prediction holds values [26]" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Cross-check with the official Cityscapes evaluation
def test_matches_cityscapesscripts(tmp_path):
    pytest.importorskip("cityscapesscripts")
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval
    from cityscapesscripts.helpers.labels import trainId2label

    rng = np.random.default_rng(3)
    frames = _frames(n=4, shape=(16, 24), seed=3)
    for gt, pred in frames.values():  # predictions close to the truth, with some 255 and classes absent from both
        truth = cityscapes_to_trainid(gt)
        keep = (rng.random(gt.shape) < 0.6) & (truth != 255)
        pred[keep] = truth[keep]
        pred[rng.random(gt.shape) < 0.05] = 255
        gt[np.isin(gt, (22, 31))] = 0  # terrain and train absent from the ground truth …
        pred[np.isin(pred, (9, 16))] = 0  # … and from the predictions
    frames = {f: (np.where(gt == 255, 0, gt), pred) for f, (gt, pred) in frames.items()}  # their GT: ids 0–33
    pred_dir, gt_dir = _write(tmp_path, frames)
    ours = evaluate_pred_dir(pred_dir, gt_dir, workers=2, progress=False)

    id_dir = tmp_path / "pred_ids"  # their predictions are label ids: trainIds mapped back (255 → 0, unlabeled)
    for frame, (_, pred) in frames.items():
        write_png(id_dir / f"{frame}.png", TRAINID_TO_ID[pred])
    args = cs_eval.CArgs()
    vars(args).update(evalInstLevelScore=False, evalPixelAccuracy=False, JSONOutput=False, quiet=True,
                      colorized=False, bold="", nocol="", normalized=True, printRow=5, evalLabels=[],
                      avgClassSize=cs_eval.args.avgClassSize, exportFile=str(tmp_path / "unused.json"))
    theirs = cs_eval.evaluateImgLists([str(id_dir / f"{f}.png") for f in frames],
                                      [str(gt_dir / "frankfurt" / f"{f}_gtFine_labelIds.png") for f in frames], args)
    their_iou = np.array([theirs["classScores"][trainId2label[c].name] for c in range(19)])
    assert np.isnan(their_iou[[9, 16]]).all()
    np.testing.assert_allclose(ours.iou, their_iou, rtol=0, atol=1e-9, equal_nan=True)
    assert ours.miou == pytest.approx(theirs["averageScoreClasses"], abs=1e-9)


def test_every_predictor_is_compared_with_a_reference_pixel_by_pixel(tmp_path):
    """``evaluate(..., reference=)``: on each frame, every other predictor's labels against the reference's, counted
    over the whole frame; worker-side (prediction folders) and calling-thread predictors alike."""
    from ftadapt.evaluation import LabelledSplit, evaluate
    from ftadapt.evaluation.evaluate import Predictor
    from ftadapt.evaluation.folder import PredictionFolder

    frames = _frames(n=3)
    pred_dir, gt_dir = _write(tmp_path, frames)
    changed, names = {}, sorted(frames)
    for name, flips in zip(names, (5, 0, 12)):  # pixels changed per frame, by hand
        pred = frames[name][1].copy()
        pred.ravel()[:flips] = (pred.ravel()[:flips] + 1) % 19
        changed[name] = pred
        write_png(tmp_path / "other" / f"{name}.png", pred)

    class InMemory(Predictor):  # runs in the calling thread; has no prediction for the last frame
        name, needs_image = "memory", False

        def predict(self, sample, prepared):
            return None if sample.name == names[2] else changed[sample.name]

    split = LabelledSplit.from_gt_dir(gt_dir)
    predictors = [PredictionFolder(pred_dir, name="ref"), PredictionFolder(tmp_path / "other", name="other"),
                  InMemory()]
    results = evaluate(predictors, split, reference="ref", allow_missing=True, progress=False)
    assert results["ref"].agreement is None and "agreement" not in results["ref"].to_dict()
    assert results["other"].agreement == {"reference": "ref", "frames": 3, "pixels": 180, "differing_pixels": 17,
                                          "differing_percent": 100 * 17 / 180,
                                          "worst_frame": {"frame": names[2], "differing_percent": 20.0}}
    memory = results["memory"].to_dict()["agreement"]
    assert (memory["frames"], memory["pixels"], memory["differing_pixels"]) == (2, 120, 5)
    assert memory["worst_frame"] == {"frame": names[0], "differing_percent": pytest.approx(100 * 5 / 60)}
    plain = evaluate(predictors[:2], split, progress=False)
    assert plain["other"].agreement is None
    np.testing.assert_array_equal(plain["other"].confusion.matrix, results["other"].confusion.matrix)
    with pytest.raises(UsageError, match="reference 'pytorch' names no predictor; predictors: ref, other"):
        evaluate(predictors[:2], split, reference="pytorch", progress=False)
