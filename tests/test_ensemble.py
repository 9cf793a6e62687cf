"""Ensembles in PyTorch: member specs, fusion math, loading checkpoint folders, errors, BN folding and half members."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from ftadapt.bench.random_models import calibrated_random_model
from ftadapt.checkpoint import save_checkpoint
from ftadapt.ensemble import Ensemble, MemberSpec, load_ensemble, recorded_miou
from ftadapt.errors import CheckpointError, UsageError
from ftadapt.export.fp16 import fold_batchnorm, half_ensemble


def tiny_member(seed: int, **config) -> nn.Module:
    """A tiny DeepLab whose predictions vary over the image with realistic logit scales (Kaiming convs, random BN
    affines, BN statistics calibrated on random images: ``calibrated_random_model``; the registry's N(0, 0.01) init
    gives near-uniform logits, where argmax comparisons are all ties)."""
    return calibrated_random_model("tiny", seed, **config)


def make_member(path, seed: int = 0, *, method: str = "clan", miou: float | None = 40.0, **config):
    """A checkpoint folder of a tiny member; returns its path."""
    model = tiny_member(seed, **config)
    metrics = {} if miou is None else {"eval/miou_oracle": miou}
    return save_checkpoint(path, model_state=model.state_dict(), model_config=model.config,
                           meta={"method": method, "step": 10, "metrics": metrics})


@pytest.mark.parametrize("spec, path, weight", [("runs/a:0.7", "runs/a", 0.7), ("runs/a", "runs/a", 1.0),
                                                ("d:1e-1", "d", 0.1), ("c:/x/y:2", "c:/x/y", 2.0)])
def test_member_spec_parses(spec, path, weight):
    parsed = MemberSpec.parse(spec)
    assert (str(parsed.path), parsed.weight) == (path, weight)


@pytest.mark.parametrize("spec, message", [("runs/a:0", "must be a positive number"),
                                           ("runs/a:-1", "must be a positive number"),
                                           ("runs/a:nan", "must be a positive number"),
                                           ("runs/a:heavy", "'heavy' is not a number")])
def test_member_spec_rejects_bad_weights(spec, message):
    with pytest.raises(UsageError, match=message):
        MemberSpec.parse(spec)


def test_fusion_is_the_weighted_mean_of_member_softmaxes():
    clan, multi = tiny_member(0), tiny_member(1, heads="multi", aspp="reduced")
    ensemble = Ensemble([clan, multi], [3.0, 1.0]).eval()
    x = torch.randn(2, 3, 40, 72) * 50
    with torch.no_grad():
        fused = ensemble.fused(x)
        clan_out, multi_out = clan(x).logits, multi(x).logits
    expected = 0.75 * (clan_out[0] + clan_out[1]).softmax(1) + 0.25 * multi_out[1].softmax(1)  # sum / main rule
    assert ensemble.weights.tolist() == [0.75, 0.25]
    assert ensemble.rules == ("sum", "main")
    assert fused.shape == (2, 19, 6, 10)
    torch.testing.assert_close(fused, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(fused.sum(1), torch.ones(2, 6, 10))


def test_the_papers_two_evaluation_modes_value_for_value():
    """FeatureToAdapt's evaluate.py (methods.md §6.3), built here by hand for a CLAN-layout and a multi member with
    weights 0.7 / 0.3: without flip the weighted sum of raw logits under each head rule (p1 + p2; main head), with flip
    the weighted sum of each member's mean of softmax(x) and the mirrored softmax(mirrored x). Both at stride 8."""
    clan, multi = tiny_member(0), tiny_member(1, heads="multi", aspp="reduced")
    x = torch.randn(2, 3, 40, 72) * 50
    with torch.no_grad():
        c, m = clan(x).logits, multi(x).logits
        c_flip, m_flip = clan(x.flip(-1)).logits, multi(x.flip(-1)).logits
        logits_mode = Ensemble([clan, multi], [0.7, 0.3], fusion="logits").fused(x)
        flip_mode = Ensemble([clan, multi], [0.7, 0.3], flip=True).fused(x)
    by_hand_logits = 0.7 * (c[0] + c[1]) + 0.3 * m[1]
    clan_tta = ((c[0] + c[1]).softmax(1) + (c_flip[0] + c_flip[1]).softmax(1).flip(-1)) / 2
    multi_tta = (m[1].softmax(1) + m_flip[1].softmax(1).flip(-1)) / 2
    by_hand_flip = 0.7 * clan_tta + 0.3 * multi_tta
    torch.testing.assert_close(logits_mode, by_hand_logits, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(flip_mode, by_hand_flip, atol=1e-6, rtol=0)
    assert not torch.allclose(flip_mode, Ensemble([clan, multi], [0.7, 0.3]).fused(x), atol=1e-3)  # flip matters
    with pytest.raises(UsageError, match="use fusion 'probs' with flip"):
        Ensemble([clan], [1.0], fusion="logits", flip=True)
    with pytest.raises(UsageError, match="fusion 'max'"):
        Ensemble([clan], [1.0], fusion="max")


def test_head_rule_override_and_single_member():
    model = tiny_member(0)
    x = torch.randn(1, 3, 32, 32) * 50
    with torch.no_grad():
        fused = Ensemble([model], [5.0], rules=["main"]).fused(x)
        torch.testing.assert_close(fused, model(x).logits[1].softmax(1))


def test_ensemble_predictor_upsamples_and_argmaxes_the_fused_probabilities():
    """The evaluation's ensemble predictor: fused probabilities (not logits) at stride 8 → bilinear align_corners
    upsample to the label's size → argmax."""
    from ftadapt.evaluation.frames import Sample
    from ftadapt.evaluation.pytorch import EnsemblePredictor

    ensemble = Ensemble([tiny_member(0), tiny_member(1)], [0.7, 0.3]).eval()
    predictor = EnsemblePredictor(ensemble, device="cpu")
    x = torch.randn(1, 3, 32, 64) * 50
    labels = predictor.predict(Sample("f", np.zeros((64, 128), np.uint8)), x)
    with torch.no_grad():
        fused = ensemble.fused(x)
    expected = nn.functional.interpolate(fused, size=(64, 128), mode="bilinear", align_corners=True).argmax(1)[0]
    assert labels.shape == (64, 128) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected.numpy())
    assert [m.name for m in predictor.member_predictors()] == ["member1", "member2"]
    assert predictor.describe()["ensemble"][0] == {"name": "member1", "weight": pytest.approx(0.7), "head_rule": "sum"}


def test_members_must_share_the_label_space():
    with pytest.raises(UsageError, match=r"different label spaces \(#1: 19, #2: 16 classes\)"):
        Ensemble([tiny_member(0), tiny_member(1, num_classes=16)], [1, 1])


@pytest.mark.parametrize("weights, rules, message", [([1.0, 0.0], None, "weight 0.0 must be a positive number"),
                                                     ([1.0], None, "2 members but 1 weights"),
                                                     ([1.0, 1.0], ["sum", "max"], "head rule 'max'")])
def test_ensemble_rejects_bad_arguments(weights, rules, message):
    with pytest.raises(UsageError, match=message):
        Ensemble([tiny_member(0), tiny_member(1)], weights, rules=rules)


def test_load_ensemble_from_checkpoint_and_run_folders(tmp_path):
    make_member(tmp_path / "clan", 0, method="clan", miou=44.5)
    run = tmp_path / "runs" / "norm-only"
    step = make_member(run / "checkpoints" / "step_000010", 1, method="norm-only", miou=None, heads="multi")
    (run / "checkpoints" / "last").symlink_to(step.name, target_is_directory=True)
    ensemble = load_ensemble([f"{tmp_path / 'clan'}:0.3", MemberSpec(run, 0.7)])
    names = [i.name for i in ensemble.infos]
    assert names == ["clan", "norm-only@step_000010"]
    assert [i.weight for i in ensemble.infos] == pytest.approx([0.3, 0.7])
    assert ensemble.weights.tolist() == pytest.approx([0.3, 0.7])
    assert [i.head_rule for i in ensemble.infos] == ["sum", "main"] and ensemble.rules == ("sum", "main")
    assert [(i.method, i.miou, i.miou_source) for i in ensemble.infos] == [
        ("clan", 44.5, "metrics.eval/miou_oracle"), ("norm-only", None, None)]
    sha = json.loads((tmp_path / "clan" / "meta.json").read_text())["sha256"]
    assert ensemble.infos[0].sha256 == sha
    assert not ensemble.training


def test_load_ensemble_names_the_broken_member(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder at .*missing"):
        load_ensemble([str(tmp_path / "missing")])
    good = make_member(tmp_path / "good", 0)
    with open(good / "model.pt", "r+b") as f:  # flip bytes: the sha256 no longer matches
        f.seek(200)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(CheckpointError, match="sha256 .* does not match"):
        load_ensemble([f"{good}:1"])
    with pytest.raises(UsageError, match="name at least one member"):
        load_ensemble([])


def test_recorded_miou_prefers_a_plain_evaluation():
    assert recorded_miou({"metrics": {"miou": 45.0, "eval/miou_oracle": 46.0}}) == (45.0, "metrics.miou")
    assert recorded_miou({"metrics": {"eval/miou_oracle": float("nan")}}) == (None, None)
    assert recorded_miou({}) == (None, None)


def test_fold_batchnorm_keeps_the_function_and_removes_every_bn():
    model = tiny_member(3, heads="multi")
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(2, 3, 48, 48) * 50
    with torch.no_grad():
        for a, b in zip(model(x).logits, folded(x).logits):
            torch.testing.assert_close(b, a, atol=1e-3, rtol=1e-4)


def test_half_ensemble_runs_members_in_half_and_fuses_in_fp32():
    ensemble = Ensemble([tiny_member(0), tiny_member(1)], [0.7, 0.3]).eval()
    half = half_ensemble(ensemble)
    assert {p.dtype for m in half.members for p in m.parameters()} == {torch.float16}
    assert half.weights.dtype == torch.float32 and half.weights.tolist() == pytest.approx([0.7, 0.3])
    assert next(ensemble.members[0].parameters()).dtype == torch.float32  # the FP32 ensemble is untouched
    x = torch.randn(1, 3, 40, 40) * 50
    with torch.no_grad():
        ref, out = ensemble.fused(x), half.fused(x)
    assert out.dtype == torch.float32
    assert (ref - out).abs().max() < 0.05
    assert (ref.argmax(1) == out.argmax(1)).float().mean() > 0.95


def test_half_ensemble_refuses_weights_beyond_fp16():
    model = tiny_member(0)
    with torch.no_grad():
        model.layer5.conv2d_list[0].weight[0, 0, 0, 0] = 1e6
    with pytest.raises(UsageError, match="beyond the FP16 range"):
        half_ensemble(Ensemble([model], [1.0]))


def test_eval_ensemble_prints_members_and_ensemble_side_by_side(tmp_path, synthetic):
    from click.testing import CliRunner

    from ftadapt.cli import cli

    a, b = make_member(tmp_path / "norm-only", 0), make_member(tmp_path / "clan", 1, heads="multi")
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(cli, ["eval", "--ensemble", f"{a}:0.7", "--ensemble", f"{b}:0.3", "--data",
                                      f"cityscapes:{synthetic.cityscapes_root}", "--workers", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    data = json.loads(out.read_text())
    members = data["members"]
    assert list(members) == ["norm-only", "clan"] and data["delta_vs"] in members
    best = max(members, key=lambda k: members[k]["miou"])
    assert data["delta_vs"] == best
    ens = data["ensemble"]
    assert ens["n_images"] == 3 and ens["protocol"]["heads"] == "per member"
    assert [(m["name"], m["weight"], m["head_rule"]) for m in ens["protocol"]["ensemble"]] == [
        ("norm-only", pytest.approx(0.7), "sum"), ("clan", pytest.approx(0.3), "main")]
    table = result.output[result.output.index("id  class"):]  # after the progress bars (stderr, no newline)
    header, _, *rows = table.splitlines()
    assert header.split()[-4:] == ["norm-only", "clan", "ensemble", f"ensemble-{best}"]
    miou_row = next(r for r in rows if r.split()[0] == "mIoU").split()
    assert float(miou_row[-1]) == pytest.approx(ens["miou"] - members[best]["miou"], abs=0.006)


@pytest.mark.parametrize("args, message", [(["--ensemble", "a:1"], "also needs --data"),
                                           (["--ensemble", "a:1", "--heads", "sum", "--data", "cityscapes:."],
                                            "--heads applies to --checkpoint models"),
                                           (["--ensemble", "a:1", "--fusion", "logits", "--flip", "--data",
                                             "cityscapes:."], "use fusion 'probs' with flip"),
                                           (["--pred-dir", ".", "--gt-dir", ".", "--fusion", "logits"],
                                            "--fusion applies to an ensemble")])
def test_eval_ensemble_usage_errors(args, message):
    from click.testing import CliRunner

    from ftadapt.cli import cli

    result = CliRunner().invoke(cli, ["eval", *args])
    assert result.exit_code == 2 and message in result.output


def _clan_probs(model, x):
    """softmax(p1 + p2) of a CLAN-layout member at stride 8. Shape: N×3×H×W → N×C×h×w."""
    p1, p2 = model(x).logits
    return (p1 + p2).softmax(1)


@pytest.mark.parametrize("weights", [(0.7, 0.3), (1.0, 3.0)])
def test_fta_code_is_the_authors_evaluate_py_for_two_clan_members(weights):
    """FeatureToAdapt's evaluate.py, two CLAN-layout members (p1 + p2), non-multi path, bug included: member 2's
    un-flipped output is model 1's. With flip ½·P1(x) + (w1/2)·mirror(P1(mirror x)) + (w2/2)·mirror(P2(mirror x));
    without flip w1·L1 + w2·L1, member 1's logits alone."""
    first, second = tiny_member(0), tiny_member(1)
    w1, w2 = (w / sum(weights) for w in weights)
    x = torch.randn(2, 3, 40, 72) * 50
    with torch.no_grad():
        flip_mode = Ensemble([first, second], list(weights), fusion="fta-code", flip=True).eval().fused(x)
        plain_mode = Ensemble([first, second], list(weights), fusion="fta-code").eval().fused(x)
        p1, p1_mirror = _clan_probs(first, x), _clan_probs(first, x.flip(-1))
        p2_mirror = _clan_probs(second, x.flip(-1))
        l1 = sum(first(x).logits)
        sound = Ensemble([first, second], list(weights), flip=True).eval().fused(x)
        without_second = Ensemble([first, first], list(weights), fusion="fta-code", flip=True).eval().fused(x)
    by_hand = 0.5 * p1 + (w1 / 2) * p1_mirror.flip(-1) + (w2 / 2) * p2_mirror.flip(-1)
    if weights == (0.7, 0.3):  # the published weights, as the formula reads then
        by_hand_07 = 0.5 * p1 + 0.35 * p1_mirror.flip(-1) + 0.15 * p2_mirror.flip(-1)
        torch.testing.assert_close(flip_mode, by_hand_07, atol=1e-6, rtol=0)
    torch.testing.assert_close(flip_mode, by_hand, atol=1e-6, rtol=0)
    torch.testing.assert_close(flip_mode.sum(1), torch.ones(2, 6, 10))
    assert (flip_mode - sound).abs().max() > 1e-3  # not the sound flip ensemble
    assert (flip_mode - without_second).abs().max() > 1e-4  # member 2 counts, through the mirrored view
    torch.testing.assert_close(plain_mode, w1 * l1 + w2 * l1, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(plain_mode, l1, atol=1e-4, rtol=1e-5)
    assert torch.equal(plain_mode.argmax(1), l1.argmax(1))  # without flip, model 1's prediction


def test_fta_code_predictor_without_flip_predicts_member_one_and_is_recorded():
    from ftadapt.evaluation.frames import Sample
    from ftadapt.evaluation.pytorch import EnsemblePredictor, ModelPredictor

    first, second = tiny_member(0), tiny_member(1)
    sample, x = Sample("f", np.zeros((64, 128), np.uint8)), torch.randn(1, 3, 32, 64) * 50
    for flip in (False, True):
        predictor = EnsemblePredictor(Ensemble([first, second], [0.7, 0.3], fusion="fta-code", flip=flip).eval(),
                                      device="cpu")
        record = predictor.describe()
        assert (record["fusion"], record["flip"]) == ("fta-code", flip)
        assert [(m.name, m.flip, m.rule) for m in predictor.member_predictors()] == [
            ("member1", flip, "sum"), ("member2", flip, "sum")]  # scored beside it with the ensemble's flip
        assert "not an ensemble to use" in predictor.module.describe_mode()
    alone = ModelPredictor(first, device="cpu").predict(sample, x)
    fta = EnsemblePredictor(Ensemble([first, second], [0.7, 0.3], fusion="fta-code").eval(), device="cpu")
    np.testing.assert_array_equal(fta.predict(sample, x), alone)


@pytest.mark.parametrize("members, rules, found", [
    (3, None, "got 3: #1 (sum), #2 (sum), #3 (sum)"),
    (1, None, "got 1: #1 (sum)"),
    (2, ["sum", "main"], "got 2: #1 (sum), #2 (main)"),
    (2, "multi", "got 2: #1 (sum), #2 (main)"),
])
def test_fta_code_refuses_anything_but_two_clan_layout_members(members, rules, found):
    models = [tiny_member(k, **({"heads": "multi"} if rules == "multi" and k == 1 else {})) for k in range(members)]
    with pytest.raises(UsageError) as info:
        Ensemble(models, [1.0] * members, rules=rules if isinstance(rules, list) else None, fusion="fta-code")
    message = str(info.value)
    assert "\n" not in message and found in message
    assert "emulates the authors' evaluate.py path for two CLAN-layout members only" in message


def test_load_ensemble_refuses_fta_code_before_loading_and_names_the_members(tmp_path):
    with pytest.raises(UsageError, match=r"got 3: a, b, c$"):  # folders that do not exist: refused before loading
        load_ensemble(["a:1", "b:1", "c:1"], fusion="fta-code")
    make_member(tmp_path / "norm-only", 0)
    make_member(tmp_path / "msq", 1, heads="multi")
    with pytest.raises(UsageError, match=r"got 2: norm-only \(sum\), msq \(main\)"):
        load_ensemble([f"{tmp_path / 'norm-only'}:0.7", f"{tmp_path / 'msq'}:0.3"], fusion="fta-code")
