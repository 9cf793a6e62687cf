"""``ftadapt eval --checkpoint``: the AdaptSegNet protocol and MaxSquare's labelled variant on a tiny checkpoint over
the synthetic Cityscapes val split, the options recorded in the JSON, and clear failures for bad input."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ftadapt.checkpoint import save_checkpoint
from ftadapt.cli import main
from ftadapt.data.cityscapes import Cityscapes
from ftadapt.data.transforms import resize_label
from ftadapt.errors import CheckpointError, UsageError
from ftadapt.evaluation import LabelledSplit, evaluate, get_protocol
from ftadapt.evaluation.metrics import ConfusionMatrix
from ftadapt.evaluation.pytorch import ModelPredictor
from ftadapt.imageio import read_label
from ftadapt.models.deeplab import combine_heads
from ftadapt.models.registry import create_model

SIZE = (64, 32)



@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    model = create_model("tiny")
    with torch.no_grad():  # a visible bias so the prediction is not a near-tie everywhere
        model.layer6.conv2d_list[0].bias[:] = torch.linspace(0, 0.5, 19)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(path, model_state=model.state_dict(), model_config=model.config,
                    meta={"method": "clan-norm", "step": 7, "metrics": {}})
    return path, model.eval()


def _expected(model, root, *, rule, gt_at_input, flip=False):
    val = Cityscapes(root, split="val", size=SIZE, with_labels=True)
    confusion = ConfusionMatrix()
    for i in range(len(val)):
        gt = val.trainid_label(i)
        if gt_at_input:
            gt = resize_label(gt, SIZE)
        image = val[i]["image"][None]
        with torch.no_grad():
            prob = combine_heads(model(image).logits, rule).softmax(1)
            if flip:
                prob = (prob + combine_heads(model(image.flip(-1)).logits, rule).softmax(1).flip(-1)) / 2
            up = torch.nn.functional.interpolate(prob, size=gt.shape, mode="bilinear", align_corners=True)
        confusion.update(gt, up.argmax(1)[0].numpy())
    return confusion.matrix


def _valid_pixels(root, size):
    val = Cityscapes(root, split="val", size=SIZE, with_labels=True)
    labels = [val.trainid_label(i) for i in range(len(val))]
    return sum(int(((resize_label(gt, size) if size else gt) < 19).sum()) for gt in labels)


def evaluate_checkpoint(path, root, *, size=SIZE, protocol="adaptsegnet", **options):
    """One checkpoint on the val split of ``root`` through the one ``evaluate``."""
    predictor = ModelPredictor.from_checkpoint(path, device="cpu", **options)
    return evaluate([predictor], LabelledSplit.from_root(root, "val"), get_protocol(protocol, size), workers=1,
                    progress=False)[predictor.name]


def test_adaptsegnet_protocol_upsamples_to_the_full_resolution_labels(synthetic, checkpoint):
    path, model = checkpoint
    result = evaluate_checkpoint(path, synthetic.cityscapes_root)
    np.testing.assert_array_equal(result.confusion.matrix, _expected(model, synthetic.cityscapes_root, rule="sum",
                                                                     gt_at_input=False))
    assert result.confusion.n_pixels == _valid_pixels(synthetic.cityscapes_root, None)  # at the labels' 128×64
    assert result.protocol | {"checkpoint": None} == {
        "name": "adaptsegnet", "accumulation": "dataset", "gt_resolution": "full", "prediction_255": "counted as wrong",
        "input_size": [64, 32], "heads": "sum", "flip": False, "split": "val", "checkpoint": None,
        "method": "clan-norm", "step": 7}


def test_maxsquare_protocol_compares_at_the_input_size_and_is_labelled(synthetic, checkpoint):
    path, model = checkpoint
    result = evaluate_checkpoint(path, synthetic.cityscapes_root, protocol="maxsquare", rule="main", flip=True)
    np.testing.assert_array_equal(result.confusion.matrix, _expected(model, synthetic.cityscapes_root, rule="main",
                                                                     gt_at_input=True, flip=True))
    assert result.confusion.n_pixels == _valid_pixels(synthetic.cityscapes_root, SIZE)  # at 64×32, not 128×64
    assert (result.protocol["name"], result.protocol["gt_resolution"], result.protocol["heads"],
            result.protocol["flip"]) == ("maxsquare", "input", "main", True)


def test_cli_writes_json_with_the_protocol_and_saves_predictions(synthetic, checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    run = tmp_path / "run"  # a run folder resolves to its newest checkpoint
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(path, run / "checkpoints" / "step_000007")
    main(["eval", "--checkpoint", str(run), "--data", f"cityscapes:{synthetic.cityscapes_root}", "--size", "64x32",
          "--device", "cpu", "--save-pred", str(tmp_path / "pred"), "--json", str(tmp_path / "r.json")])
    table = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["protocol"]["name"] == "adaptsegnet" and report["protocol"]["input_size"] == [64, 32]
    assert report["protocol"]["checkpoint"].endswith("step_000007") and report["n_images"] == 3
    assert len(report["per_class_iou"]) == 19 and "mIoU" in table and "adaptsegnet" in table
    saved = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert len(saved) == 6 and read_label(tmp_path / "pred" / saved[0].replace("_color", "")).shape == (64, 128)

    main(["eval", "--checkpoint", str(path), "--data", f"cityscapes:{synthetic.cityscapes_root}", "--size", "64x32",
          "--device", "cpu", "--protocol", "maxsquare", "--json", "-"])
    assert json.loads(capsys.readouterr().out)["protocol"]["gt_resolution"] == "input"


def _cli_error(capsys, *argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(["eval", *argv])
    return exc.value.code, capsys.readouterr().err


def test_bad_inputs_fail_with_a_clear_message(synthetic, checkpoint, tmp_path, capsys, monkeypatch):
    path, _ = checkpoint
    data = f"cityscapes:{synthetic.cityscapes_root}"
    not_ckpt = tmp_path / "not_a_checkpoint"
    not_ckpt.mkdir()
    (not_ckpt / "notes.txt").write_text("hello")
    bad_root = tmp_path / "bad_cs"
    shutil.copytree(synthetic.cityscapes_root, bad_root)
    label = next((bad_root / "gtFine" / "val").rglob("*_labelIds.png"))
    Image.fromarray(np.full((64, 128), 100, np.uint8)).save(label)  # 100 is no Cityscapes label id
    cases = [
        (["--checkpoint", str(not_ckpt), "--data", data], 1, "lacks model.pt"),
        (["--checkpoint", str(path), "--data", f"cityscapes:{bad_root}"], 1, "fails the dataset doctor"),
        (["--checkpoint", str(path), "--data", f"gta5:{synthetic.gta5_root}"], 2,
         "expected cityscapes:ROOT here, not gta5"),
        (["--checkpoint", str(path)], 2, "also needs --data"),
        (["--checkpoint", str(path), "--gt-dir", str(tmp_path)], 2, "--checkpoint: evaluating also needs --data"),
        (["--checkpoint", str(path), "--checkpoint", str(path), "--data", data, "--save-pred", str(tmp_path / "p")], 2,
         "--save-pred writes the predictions of one model; 2 are evaluated here"),
        (["--checkpoint", str(path), "--data", data, "--heads", "both"], 2, "'both' is not one of 'sum', 'main'"),
        (["--checkpoint", str(path), "--data", data, "--split", "test"], 1, "no such split folder"),
    ]
    for args, code, message in cases:
        got, err = _cli_error(capsys, *args, "--device", "cpu", "--size", "64x32")
        assert (got, message in err, "Traceback" in err) == (code, True, False), (args, err)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a sound model.pt on a machine without CUDA
    for device in ("cuda", "cuda:1", "1"):
        got, err = _cli_error(capsys, "--checkpoint", str(path), "--data", data, "--device", device)
        assert got == 2 and "asked for, but this machine has no CUDA device" in err and "--device cpu" in err, err
        assert "corrupt" not in err and "Traceback" not in err
    got, err = _cli_error(capsys, "--checkpoint", str(path), "--data", data, "--device", "gpu")
    assert got == 2 and "device 'gpu': expected auto, cpu, cuda or cuda:N" in err
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        evaluate_checkpoint(tmp_path / "absent", synthetic.cityscapes_root)
    with pytest.raises(UsageError, match="protocol 'cityscapes'"):
        evaluate_checkpoint(path, synthetic.cityscapes_root, protocol="cityscapes")
    with pytest.raises(UsageError, match="head rule 'both'"):
        evaluate_checkpoint(path, synthetic.cityscapes_root, rule="both")
    run = tmp_path / "run"  # a run folder that stopped before its first checkpoint
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}\n")  # the first thing a run writes
    with pytest.raises(CheckpointError, match="has no checkpoint yet"):
        evaluate_checkpoint(run, synthetic.cityscapes_root)


def test_model_predictor_follows_the_protocol(synthetic):
    """The model predictor on its own: both heads summed, upsampled to the full-resolution labels (align_corners),
    argmax; with flip, the mean of the softmax and the mirrored softmax of the mirrored image."""
    from ftadapt.evaluation import ADAPTSEGNET
    from ftadapt.evaluation.frames import Sample

    torch.manual_seed(0)
    model = create_model("tiny").eval()
    val = Cityscapes(synthetic.cityscapes_root, split="val", size=(64, 32), with_labels=True)
    split = LabelledSplit.from_root(synthetic.cityscapes_root, "val")
    plain, flipped = ModelPredictor(model, name="plain", device="cpu"), ModelPredictor(model, name="tta", flip=True)
    results = evaluate([plain, flipped], split, ADAPTSEGNET.at((64, 32)), workers=1, progress=False)
    expected = ConfusionMatrix()
    for i in range(len(val)):
        gt = val.trainid_label(i)
        with torch.no_grad():
            logits = model(val[i]["image"][None]).logits
        up = torch.nn.functional.interpolate(logits[0] + logits[1], size=gt.shape, mode="bilinear",
                                             align_corners=True)
        expected.update(gt, up.argmax(1)[0].numpy())
    result = results["plain"]
    np.testing.assert_array_equal(result.confusion.matrix, expected.matrix)
    assert result.n_images == 3 and result.protocol["heads"] == "sum" and result.protocol["input_size"] == [64, 32]
    assert results["tta"].protocol["flip"] is True and results["tta"].confusion.n_pixels == expected.n_pixels
    image = val[0]["image"][None]
    with torch.no_grad():
        logits, mirrored = (model(x).logits for x in (image, image.flip(-1)))
        prob = (torch.softmax(logits[0] + logits[1], 1) + torch.softmax(mirrored[0] + mirrored[1], 1).flip(-1)) / 2
        tta = torch.nn.functional.interpolate(prob, size=(64, 128), mode="bilinear", align_corners=True).argmax(1)
    np.testing.assert_array_equal(flipped.predict(Sample("f", np.zeros((64, 128), np.uint8)), image), tta[0].numpy())


def test_a_val_label_of_the_wrong_size_is_an_error_unless_allowed(synthetic, checkpoint, tmp_path, capsys):
    """Issue 16, case 12: a Cityscapes val label of another size than its image was only a doctor's warning and
    ``eval --checkpoint`` scored the model's prediction at the label's size anyway."""
    from ftadapt.errors import FtadaptError
    from ftadapt.evaluation import ADAPTSEGNET

    path, _ = checkpoint
    root = tmp_path / "cs"
    shutil.copytree(synthetic.cityscapes_root, root)
    label = sorted((root / "gtFine" / "val").rglob("*_labelIds.png"))[0]
    frame = label.name.removesuffix("_gtFine_labelIds.png")
    Image.open(label).resize((64, 32), Image.Resampling.NEAREST).save(label)  # its image stays 128×64
    base = ["--checkpoint", str(path), "--data", f"cityscapes:{root}", "--device", "cpu", "--size", "64x32"]
    code, err = _cli_error(capsys, *base)
    assert code == 1 and "Traceback" not in err
    assert f"size-mismatch {label}: label 64×32 vs image 128×64" in err and "--allow-missing skips frames" in err
    main(["eval", *base, "--allow-missing", "--json", str(tmp_path / "r.json")])  # consent: the frame is left out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["n_images"] == 2 and result["missing"]["size_mismatch"] == [frame]
    assert (f"warning: 1 frame(s) whose prediction or image differs in size from the ground truth: {frame} "
            "(skipped)") in capsys.readouterr().err
    predictor = ModelPredictor.from_checkpoint(path, device="cpu")  # the library refuses too, after the pass
    with pytest.raises(FtadaptError, match=f"{frame} \\(image 128x64, ground truth 64x32\\).*--allow-missing"):
        evaluate([predictor], LabelledSplit.from_root(root, "val"), ADAPTSEGNET.at(SIZE), progress=False)
