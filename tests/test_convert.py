"""Official-checkpoint import: synthetic files in each released layout → checkpoint folders, init weights, errors."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

import ftadapt
from ftadapt.checkpoint import load_checkpoint
from ftadapt.cli import convert as convert_command
from ftadapt.cli import main
from ftadapt.errors import CheckpointError
from ftadapt.models.convert import LAYOUTS, convert_checkpoint, guess_layout, load_init_weights
from ftadapt.models.deeplab import deeplab_v2, is_head_key
from ftadapt.models.registry import create_model


class Opaque:
    """Not loadable with weights_only=True."""


def official(state, kind):
    """``state`` (ftadapt keys) packed the way ``kind``'s authors saved their files (reference/methods.md §1.5-1.6)."""
    if kind == "maxsquare":
        return {"epoch": 9, "iteration": 29750, "state_dict": {f"module.{k}": v for k, v in state.items()},
                "optimizer": {}, "best_MIou": 0.464}
    if kind == "deeplab-init":  # backbone plus a single 21-class (VOC) classifier
        packed = {f"Scale.{k}": v for k, v in state.items() if not is_head_key(k)}
        channels = state["layer4.0.conv3.weight"].shape[0]
        for i in range(4):
            packed[f"Scale.layer5.conv2d_list.{i}.weight"] = torch.zeros(21, channels, 3, 3)
            packed[f"Scale.layer5.conv2d_list.{i}.bias"] = torch.zeros(21)
        return packed
    return dict(state)


# (kind, head layout, ASPP) of the released files; adaptsegnet also ships the single-head oracle.
RELEASES = [("adaptsegnet", "multi", "reduced"), ("adaptsegnet", "single", "reduced"), ("clan", "clan", "full"),
            ("maxsquare", "multi", "reduced"), ("feature-to-adapt", "clan", "full")]


def trained_tiny(heads, aspp, seed=0):
    torch.manual_seed(seed)
    model = create_model("tiny", heads=heads, aspp=aspp).train()
    model(torch.randn(2, 3, 64, 64))  # non-trivial BN running statistics
    return model.eval()


@pytest.mark.parametrize("kind, heads, aspp", RELEASES)
def test_round_trip_per_release(tmp_path, kind, heads, aspp):
    model = trained_tiny(heads, aspp)
    src = tmp_path / "release.pth"
    torch.save(official(model.state_dict(), kind), src)
    summary = convert_checkpoint(src, kind, tmp_path / "out")
    rule = "sum" if heads == "clan" else "main"
    assert (summary["heads"], summary["aspp"], summary["head_rule"], summary["contents"]) == (heads, aspp, rule, "full")
    loaded = ftadapt.load_model(tmp_path / "out")
    assert loaded.config == model.config
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x).logits, loaded(x).logits))
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["head_rule"] == rule and meta["method"] == kind
    assert meta["provenance"] == {"from": kind, "source": "release.pth", "aspp": aspp,
                                  "source_sha256": hashlib.sha256(src.read_bytes()).hexdigest()}


@pytest.mark.slow
def test_r101_maxsquare_release_converts_strictly(tmp_path):
    with torch.device("meta"):  # no random initialisation of 44.6 M weights: each tensor holds its own index
        model = deeplab_v2(101, heads="multi", aspp="reduced")
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for i, tensor in enumerate(model.state_dict().values()):
            tensor.fill_(i)
    torch.save(official(model.state_dict(), "maxsquare"), tmp_path / "GTA5_source.pth")
    summary = convert_checkpoint(tmp_path / "GTA5_source.pth", "maxsquare", tmp_path / "out")
    assert (summary["keys"], summary["depth"], round(summary["parameters"] / 1e6, 2)) == (640, 101, 44.60)
    state = load_checkpoint(tmp_path / "out").state_dict
    assert list(state) == list(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # every key kept its tensor


def test_missing_num_batches_tracked_is_tolerated(tmp_path):
    model = trained_tiny("clan", "full")
    old = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    assert convert_checkpoint(tmp_path / "old.pth", "clan", tmp_path / "out")["keys"] == len(model.state_dict())
    assert load_checkpoint(tmp_path / "out").state_dict["layer1.0.bn2.num_batches_tracked"].item() == 0


def test_aspp_override(tmp_path):
    model = trained_tiny("multi", "reduced")
    torch.save(official(model.state_dict(), "maxsquare"), tmp_path / "msq.pth")
    summary = convert_checkpoint(tmp_path / "msq.pth", "maxsquare", tmp_path / "out", aspp="full")
    assert summary["aspp"] == "full" and ftadapt.load_model(tmp_path / "out").config.aspp == "full"


def test_deeplab_init_becomes_a_backbone_only_folder(tmp_path):
    source = trained_tiny("clan", "full")
    torch.save(official(source.state_dict(), "deeplab-init"), tmp_path / "init.pth")
    summary = convert_checkpoint(tmp_path / "init.pth", "deeplab-init", tmp_path / "init")
    ckpt = load_checkpoint(tmp_path / "init")
    backbone = [k for k in source.state_dict() if not is_head_key(k)]
    assert ckpt.backbone_only and list(ckpt.state_dict) == backbone and summary["keys"] == len(backbone)
    assert summary["head_rule"] is None and ckpt.meta["provenance"]["from"] == "deeplab-init"
    with pytest.raises(CheckpointError, match="backbone-only"):
        ftadapt.load_model(tmp_path / "init")


@pytest.mark.parametrize("use_folder", [False, True])
def test_load_init_weights_from_raw_init_or_folder(tmp_path, use_folder):
    source = trained_tiny("clan", "full", seed=1)
    torch.save(official(source.state_dict(), "deeplab-init"), tmp_path / "init.pth")
    path = tmp_path / "init.pth"
    if use_folder:
        path = tmp_path / "init"
        convert_checkpoint(tmp_path / "init.pth", "deeplab-init", path)
    for heads in ("clan", "multi"):
        model = create_model("tiny", heads=heads)
        heads_before = {k: v.clone() for k, v in model.state_dict().items() if is_head_key(k)}
        report = load_init_weights(model, path)
        assert report["heads"] == "initialised"
        assert report["layout"] == ("checkpoint folder" if use_folder else "deeplab-init")
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in source.state_dict().items() if not is_head_key(k))
        assert all(torch.equal(state[k], v) for k, v in heads_before.items())


def test_load_init_weights_takes_heads_only_when_they_fit(tmp_path):
    source = trained_tiny("multi", "reduced", seed=2)
    torch.save(official(source.state_dict(), "maxsquare"), tmp_path / "source_only.pth")
    same = create_model("tiny", heads="multi", aspp="reduced")
    assert load_init_weights(same, tmp_path / "source_only.pth")["heads"] == "loaded"
    assert torch.equal(same.layer5.conv2d_list[0].weight, source.layer5.conv2d_list[0].weight)
    other = create_model("tiny")
    assert load_init_weights(other, tmp_path / "source_only.pth")["heads"] == "initialised"
    with pytest.raises(CheckpointError, match=r"backbone does not fit.*\nmissing keys \(\d+\): layer3.1.conv1.weight"):
        load_init_weights(create_model("tiny", blocks=(1, 1, 2, 1)), tmp_path / "source_only.pth")


@pytest.mark.parametrize("actual, wrong, hint", [
    ("maxsquare", "clan", "use --from maxsquare"),
    ("adaptsegnet", "clan", "use --from adaptsegnet"),
    ("clan", "adaptsegnet", r"use --from clan \(or --from feature-to-adapt"),
    ("clan", "maxsquare", "use --from clan"),
    ("deeplab-init", "feature-to-adapt", "use --from deeplab-init"),
    ("clan", "deeplab-init", "lack the 'Scale.' prefix.*\n.*use --from clan"),
])
def test_wrong_from_suggests_the_right_one(tmp_path, actual, wrong, hint):
    heads, aspp = {"maxsquare": ("multi", "reduced"), "adaptsegnet": ("multi", "reduced")}.get(actual, ("clan", "full"))
    torch.save(official(trained_tiny(heads, aspp).state_dict(), actual), tmp_path / "x.pth")
    assert guess_layout(torch.load(tmp_path / "x.pth", weights_only=True)) == actual
    with pytest.raises(CheckpointError, match=f"--from {wrong}") as info:
        convert_checkpoint(tmp_path / "x.pth", wrong, tmp_path / "out")
    assert info.match(hint)
    assert not (tmp_path / "out").exists()


def test_mismatch_lists_missing_and_unexpected_keys(tmp_path):
    state = trained_tiny("clan", "full").state_dict()
    del state["layer2.0.conv1.weight"], state["layer6.conv2d_list.3.bias"]
    state["aux.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "x.pth")
    with pytest.raises(CheckpointError) as info:
        convert_checkpoint(tmp_path / "x.pth", "clan", tmp_path / "out")
    message = str(info.value)
    assert "missing keys (2): layer2.0.conv1.weight, layer6.conv2d_list.3.bias" in message
    assert "unexpected keys (1): aux.weight" in message


def test_unreadable_sources(tmp_path):
    with pytest.raises(CheckpointError, match="no such weights file"):
        convert_checkpoint(tmp_path / "absent.pth", "clan", tmp_path / "out")
    with pytest.raises(CheckpointError, match="is a folder"):
        convert_checkpoint(tmp_path, "clan", tmp_path / "out")
    torch.save({"conv1.weight": torch.zeros(1), "args": Opaque()}, tmp_path / "pickle.pth")
    with pytest.raises(CheckpointError, match=r"Python objects besides tensors \(.*Opaque\)"):
        convert_checkpoint(tmp_path / "pickle.pth", "clan", tmp_path / "out")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="junk.pth is not a readable torch file"):
        convert_checkpoint(tmp_path / "junk.pth", "clan", tmp_path / "out")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="list.pth is a list, but --from clan expects a plain state_dict"):
        convert_checkpoint(tmp_path / "list.pth", "clan", tmp_path / "out")


def test_cli_convert(tmp_path, capsys):
    assert set(convert_command.params[0].type.choices) == set(LAYOUTS)
    torch.save(official(trained_tiny("clan", "full").state_dict(), "clan"), tmp_path / "GTA5_100000.pth")
    main(["convert", "--from", "clan", str(tmp_path / "GTA5_100000.pth"), "--out", str(tmp_path / "out"),
          "--json", str(tmp_path / "summary.json")])
    assert "head_rule  sum" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["from"] == "clan" and summary["source"] == "GTA5_100000.pth"
    assert summary["out"] == str(tmp_path / "out")
    with pytest.raises(SystemExit) as info:
        main(["convert", "--from", "maxsquare", str(tmp_path / "GTA5_100000.pth"), "--out", str(tmp_path / "o2")])
    assert info.value.code == 1
    assert "use --from clan" in capsys.readouterr().err
