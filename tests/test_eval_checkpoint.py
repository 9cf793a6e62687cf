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


def _up(scores, size_hw):
    return torch.nn.functional.interpolate(scores, size=tuple(size_hw), mode="bilinear", align_corners=True)


def _expected(model, root, *, rule, gt_at_input, flip=False):
    """The confusion matrix by hand. With the ground truth at the input size (MaxSquare's protocol) flip takes each
    view's softmax after upsampling the logits to the input size, as MaxSquare's evaluate.py; else at stride 8."""
    val = Cityscapes(root, split="val", size=SIZE, with_labels=True)
    confusion = ConfusionMatrix()
    for i in range(len(val)):
        gt = val.trainid_label(i)
        if gt_at_input:
            gt = resize_label(gt, SIZE)
        image = val[i]["image"][None]
        with torch.no_grad():
            logits = combine_heads(model(image).logits, rule)
            mirrored = combine_heads(model(image.flip(-1)).logits, rule).flip(-1)
            if flip and gt_at_input:
                logits, mirrored = _up(logits, image.shape[-2:]), _up(mirrored, image.shape[-2:])
            prob = (logits.softmax(1) + mirrored.softmax(1)) / 2 if flip else logits.softmax(1)
            up = _up(prob, gt.shape)
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
            result.protocol["flip"], result.protocol["flip_softmax"]) == ("maxsquare", "input", "main", True,
                                                                          "after upsampling")


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


def test_maxsquare_flip_takes_each_views_softmax_after_upsampling():
    """MaxSquare's tools/evaluate.py: its model upsamples the logits to the input size (bilinear, align_corners=True),
    then the softmax of each view, their mirror average and the argmax at the input size. The adaptsegnet protocol
    keeps FeatureToAdapt's order (softmax at stride 8, then the upsampling). The order is carried from ``prepare``
    with the input; on a tiny random model the two orders give different probabilities."""
    from test_ensemble import tiny_member

    from ftadapt.evaluation import ADAPTSEGNET, MAXSQUARE
    from ftadapt.evaluation.frames import Sample
    from ftadapt.evaluation.pytorch import ModelInput

    model = tiny_member(2)
    predictor = ModelPredictor(model, name="tta", flip=True, device="cpu")
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8))
    sample = Sample("f", np.zeros((32, 64), np.uint8), rgb=rgb)  # the ground truth at the input size (maxsquare)
    prepared = predictor.prepare(sample, MAXSQUARE.at((64, 32)))
    assert prepared.flip_softmax == "after upsampling" and tuple(prepared.image.shape) == (1, 3, 32, 64)
    assert predictor.prepare(sample, ADAPTSEGNET.at((64, 32))).flip_softmax == "at stride 8"
    image = prepared.image
    with torch.no_grad():
        logits, mirrored = (combine_heads(model(x).logits, "sum") for x in (image, image.flip(-1)))
        mirrored = mirrored.flip(-1)
        after = (_up(logits, (32, 64)).softmax(1) + _up(mirrored, (32, 64)).softmax(1)) / 2
        at_stride_8 = _up((logits.softmax(1) + mirrored.softmax(1)) / 2, (32, 64))
        torch.testing.assert_close(predictor.scores(image, "after upsampling"), after, atol=1e-6, rtol=0)
    assert (after - at_stride_8).abs().max() > 1e-2  # the order matters
    np.testing.assert_array_equal(predictor.predict(sample, prepared), after.argmax(1)[0].numpy())
    np.testing.assert_array_equal(predictor.predict(sample, ModelInput(image, "at stride 8")),
                                  at_stride_8.argmax(1)[0].numpy())
    np.testing.assert_array_equal(predictor.predict(sample, image), at_stride_8.argmax(1)[0].numpy())  # bare input
    with pytest.raises(UsageError, match="flip softmax 'late'"):
        predictor.scores(image, "late")


def test_the_flip_softmax_is_recorded(synthetic, checkpoint):
    """Where flip took its softmax is in the result's protocol record: a model follows its protocol, an ensemble
    always fuses at stride 8; without flip there is nothing to record."""
    from test_ensemble import tiny_member

    from ftadapt.ensemble import Ensemble
    from ftadapt.evaluation import ADAPTSEGNET, MAXSQUARE
    from ftadapt.evaluation.pytorch import EnsemblePredictor

    path, _ = checkpoint
    tta = evaluate_checkpoint(path, synthetic.cityscapes_root, flip=True)
    assert tta.protocol["flip_softmax"] == "at stride 8"
    assert "flip_softmax" not in evaluate_checkpoint(path, synthetic.cityscapes_root, protocol="maxsquare").protocol
    ensemble = EnsemblePredictor(Ensemble([tiny_member(0), tiny_member(1)], [1, 1], flip=True).eval(), device="cpu")
    for protocol in (ADAPTSEGNET, MAXSQUARE):
        assert protocol.describe(**ensemble.describe())["flip_softmax"] == "at stride 8"
    assert MAXSQUARE.describe(flip=True)["flip_softmax"] == "after upsampling"


def _members(tmp_path, *heads):
    from test_ensemble import make_member

    names = ["norm-only", "clan", "third"]
    return [f"{make_member(tmp_path / name, k, **({'heads': h} if h else {}))}:{w}"
            for k, (name, h, w) in enumerate(zip(names, heads, (0.7, 0.3, 0.2)))]


def test_eval_fta_code_warns_scores_members_beside_it_and_records_the_mode(synthetic, tmp_path, capsys):
    from ftadapt.commands.predictors import FTA_CODE_WARNING

    first, second = _members(tmp_path, None, None)
    common = ["--data", f"cityscapes:{synthetic.cityscapes_root}", "--size", "64x32", "--device", "cpu", "--workers",
              "1"]
    main(["eval", "--ensemble", first, "--ensemble", second, "--fusion", "fta-code", "--flip", *common, "--json",
          str(tmp_path / "flip.json")])
    out, err = capsys.readouterr()
    assert err.splitlines()[0] == FTA_CODE_WARNING
    assert FTA_CODE_WARNING.startswith("warning: --fusion fta-code is not an ensemble to use")
    assert "only through its mirrored view with --flip, and not at all without" in FTA_CODE_WARNING
    assert "'CLAN + Norm*'" in FTA_CODE_WARNING
    report = json.loads((tmp_path / "flip.json").read_text())
    assert list(report["members"]) == ["norm-only", "clan"]
    assert all(m["protocol"]["flip"] is True for m in report["members"].values())
    fused = report["ensemble"]["protocol"]
    assert (fused["fusion"], fused["flip"], fused["flip_softmax"]) == ("fta-code", True, "at stride 8")
    assert "fta-code-emulation" in out  # the table's column: not mistaken for a sound ensemble
    main(["eval", "--ensemble", first, "--ensemble", second, "--fusion", "fta-code", *common, "--json",
          str(tmp_path / "plain.json")])
    assert capsys.readouterr().err.splitlines()[0] == FTA_CODE_WARNING
    report = json.loads((tmp_path / "plain.json").read_text())
    assert report["ensemble"]["per_class_iou"] == report["members"]["norm-only"]["per_class_iou"]  # model 1 alone
    main(["eval", "--ensemble", first, "--ensemble", second, *common, "--json", str(tmp_path / "probs.json")])
    assert "fta-code" not in capsys.readouterr().err  # warned only when used


def test_eval_fta_code_refusals_are_one_line(synthetic, tmp_path, capsys):
    data = ["--data", f"cityscapes:{synthetic.cityscapes_root}", "--size", "64x32", "--device", "cpu"]
    three = _members(tmp_path / "three", None, None, None)
    with_main = _members(tmp_path / "main", None, "multi")
    cases = [
        ([a for m in three for a in ("--ensemble", m)], "got 3: "),
        ([a for m in with_main for a in ("--ensemble", m)], "got 2: norm-only (sum), clan (main)"),
        (["--checkpoint", three[0].rpartition(":")[0]], "--fusion applies to an ensemble"),
    ]
    for args, message in cases:
        got, err = _cli_error(capsys, *args, "--fusion", "fta-code", *data)
        lines = [line for line in err.splitlines() if message in line]
        assert got == 2 and len(lines) == 1 and "Traceback" not in err, (args, err)
        if "got" in message:
            assert "fusion 'fta-code' emulates the authors' evaluate.py path for two CLAN-layout members only: it " \
                   "needs exactly two members under head rule 'sum'" in lines[0]
