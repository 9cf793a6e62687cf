"""Checkpoint folders: layout, atomic writes, hash verification, safe loading, load_model round trip."""
from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
import torch

import ftadapt
from ftadapt.checkpoint import load_checkpoint, read_meta, save_checkpoint
from ftadapt.errors import CheckpointError, OutputError, UsageError
from ftadapt.layout import mark_output
from ftadapt.models.deeplab import is_head_key
from ftadapt.models.discriminator import FCDiscriminator
from ftadapt.models.registry import create_model
from ftadapt.safe_load import torch_load_bytes


class Opaque:
    """Not loadable with weights_only=True."""


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    return create_model("tiny")


def save(path, model, **kwargs):
    kwargs.setdefault("meta", {"method": "clan-norm", "step": 10, "metrics": {"miou": 41.5}})
    return save_checkpoint(path, model_state=model.state_dict(), model_config=model.config, **kwargs)


def train_state_of(model):
    disc = FCDiscriminator(ndf=4)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    model(torch.randn(1, 3, 32, 32)).logits[0].sum().backward()
    opt.step()
    return {"step": 10, "discriminator": disc.state_dict(), "optimizer": opt.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))},
            "data_position": [3, 1]}


def test_folder_layout_and_meta(tmp_path, tiny):
    out = save(tmp_path / "ckpt", tiny, extra_config={"train": {"lr": 2.5e-4}})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "meta.json", "model.pt"]
    config, meta = json.loads((out / "config.json").read_text()), json.loads((out / "meta.json").read_text())
    assert config["model"] == tiny.config.to_dict() and config["contents"] == "full"
    assert config["train"] == {"lr": 2.5e-4}
    assert meta["method"] == "clan-norm" and meta["step"] == 10 and meta["metrics"] == {"miou": 41.5}
    assert meta["sha256"] == hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()
    assert meta["ftadapt_version"] == ftadapt.__version__
    assert list(tmp_path.iterdir()) == [out]  # no temp leftovers
    assert read_meta(out) == meta  # what a caller reads of a checkpoint without loading its weights
    (out / "meta.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="meta.json must hold a JSON object"):
        read_meta(out)


def test_wrapper_prefixes_are_stripped(tmp_path, tiny):
    wrapped = {f"module._orig_mod.{k}": v for k, v in tiny.state_dict().items()}
    save_checkpoint(tmp_path / "c", model_state=wrapped, model_config=tiny.config.to_dict(), meta={})
    ckpt = load_checkpoint(tmp_path / "c")
    assert list(ckpt.state_dict) == list(tiny.state_dict())
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in tiny.state_dict().items())


def test_load_model_round_trip_gives_the_same_outputs(tmp_path, tiny):
    tiny.train()
    tiny(torch.randn(2, 3, 64, 64))  # move BN running statistics away from their init
    save(tmp_path / "c", tiny)
    loaded = ftadapt.load_model(tmp_path / "c")
    assert not loaded.training and loaded.config == tiny.config
    assert not loaded.bn1.weight.requires_grad and loaded.layer5.conv2d_list[0].weight.requires_grad
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected, got = tiny.eval()(x), loaded(x)
    assert all(torch.equal(a, b) for a, b in zip(expected.logits, got.logits))
    assert torch.equal(expected.features, got.features)


def test_train_state_round_trip(tmp_path, tiny):
    state = train_state_of(tiny)
    save(tmp_path / "c", tiny, train_state=state)
    assert load_checkpoint(tmp_path / "c").train_state is None
    ckpt = load_checkpoint(tmp_path / "c", with_train_state=True)
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["train_state_sha256"] == hashlib.sha256((tmp_path / "c" / "train_state.pt").read_bytes()).hexdigest()
    got = ckpt.train_state
    assert got["step"] == 10 and got["data_position"] == [3, 1]
    assert torch.equal(got["rng"]["torch"], state["rng"]["torch"]) and got["rng"]["python"] == state["rng"]["python"]
    assert got["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    momentum = [s["optimizer"]["state"][0]["momentum_buffer"] for s in (got, state)]
    assert torch.equal(*momentum)


def test_train_state_must_be_weights_only_loadable(tmp_path, tiny):
    with pytest.raises(TypeError, match=r"train_state\['rng'\]\['numpy'\]: numpy.ndarray"):
        save(tmp_path / "c", tiny, train_state={"rng": {"numpy": np.zeros(3)}})
    assert not (tmp_path / "c").exists()


def test_failed_save_leaves_no_folder(tmp_path, tiny):
    with pytest.raises(TypeError):
        save(tmp_path / "c", tiny, meta={"method": object()})  # fails after model.pt is written
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_old_checkpoint(tmp_path, tiny):
    save(tmp_path / "c", tiny)
    before = {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()}
    with torch.no_grad():
        tiny.conv1.weight.add_(1.0)
    with pytest.raises(TypeError):
        save(tmp_path / "c", tiny, meta={"method": {1, 2}}, overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["c"]
    with pytest.raises(OutputError, match="c already exists; pass --overwrite"):
        save(tmp_path / "c", tiny)  # replacing needs overwrite
    assert {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()} == before
    save(tmp_path / "c", tiny, overwrite=True)  # a successful save replaces it
    assert torch.equal(load_checkpoint(tmp_path / "c").state_dict["conv1.weight"], tiny.conv1.weight)


def test_save_refuses_foreign_folders_and_mismatched_weights(tmp_path, tiny):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="run is a folder that ftadapt did not write"):
        save(tmp_path / "run", tiny, overwrite=True)
    mark_output(tmp_path / "run", "a test")  # another output of ftadapt's, but not a checkpoint folder
    with pytest.raises(CheckpointError, match="exists and is not a checkpoint folder"):
        save(tmp_path / "run", tiny, overwrite=True)
    state = {k: v for k, v in tiny.state_dict().items() if k != "layer1.0.conv2.weight"}
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): layer1.0.conv2.weight"):
        save_checkpoint(tmp_path / "c", model_state=state, model_config=tiny.config, meta={})
    with pytest.raises(CheckpointError, match=r"layer5.conv2d_list.0.weight \[19, 256, 3, 3\] vs model \[3, 256"):
        save_checkpoint(tmp_path / "c", model_state=tiny.state_dict(),
                        model_config=tiny.config.replace(num_classes=3), meta={})
    with pytest.raises(ValueError, match="reserved"):
        save(tmp_path / "c", tiny, meta={"sha256": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_backbone_only_checkpoint(tmp_path, tiny):
    backbone = {k: v for k, v in tiny.state_dict().items() if not is_head_key(k)}
    save_checkpoint(tmp_path / "init", model_state=backbone, model_config=tiny.config, meta={})
    ckpt = load_checkpoint(tmp_path / "init")
    assert ckpt.backbone_only and set(ckpt.state_dict) == set(backbone)
    with pytest.raises(CheckpointError, match="backbone-only .*ftadapt train --init"):
        ftadapt.load_model(tmp_path / "init")


def test_missing_num_batches_tracked_is_filled(tmp_path, tiny):
    old_style = {k: v for k, v in tiny.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_checkpoint(tmp_path / "c", model_state=old_style, model_config=tiny.config, meta={})
    state = load_checkpoint(tmp_path / "c").state_dict
    assert list(state) == list(tiny.state_dict()) and state["bn1.num_batches_tracked"].item() == 0


def rewrite(path, data: bytes, *, update_hash: bool):
    (path / "model.pt").write_bytes(data)
    if update_hash:
        meta = json.loads((path / "meta.json").read_text())
        meta["sha256"] = hashlib.sha256(data).hexdigest()
        (path / "meta.json").write_text(json.dumps(meta))


def test_load_errors(tmp_path, tiny):
    with pytest.raises(CheckpointError, match="no checkpoint folder at"):
        load_checkpoint(tmp_path / "absent")
    (tmp_path / "GTA5_100000.pth").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is a file, not a checkpoint folder.*ftadapt convert --from"):
        load_checkpoint(tmp_path / "GTA5_100000.pth")
    (tmp_path / "ens.onnx").write_bytes(b"\x08\x08\x12\x07pytorch")  # an ONNX protobuf's first bytes
    with pytest.raises(CheckpointError, match="ens.onnx is an exported ONNX graph, not a checkpoint folder: run it "
                                              "with `ftadapt eval --onnx`"):
        load_checkpoint(tmp_path / "ens.onnx")
    with pytest.raises(CheckpointError, match="ens.onnx is an ONNX graph .*not torch weights"):
        torch_load_bytes((tmp_path / "ens.onnx").read_bytes(), name=str(tmp_path / "ens.onnx"))
    out = save(tmp_path / "c", tiny)
    (out / "meta.json").rename(tmp_path / "meta.json")
    with pytest.raises(CheckpointError, match="lacks meta.json"):
        load_checkpoint(out)
    (tmp_path / "meta.json").rename(out / "meta.json")
    (out / "config.json").write_text(json.dumps({"model": {"heads": "five"}}))
    with pytest.raises(CheckpointError, match="config.json: bad model config: heads='five'"):
        ftadapt.load_model(out)
    (out / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="config.json is not readable JSON"):
        load_checkpoint(out)


def test_hash_and_pickle_errors(tmp_path, tiny):
    out = save(tmp_path / "c", tiny)
    data = (out / "model.pt").read_bytes()
    rewrite(out, data[:-10] + b"0123456789", update_hash=False)
    with pytest.raises(CheckpointError, match="model.pt: sha256 .* does not match"):
        load_checkpoint(out)
    rewrite(out, data[: len(data) // 2], update_hash=True)
    with pytest.raises(CheckpointError, match="not a readable torch file: it is corrupt, truncated"):
        load_checkpoint(out)
    torch.save({"conv1.weight": Opaque()}, out / "model.pt")
    rewrite(out, (out / "model.pt").read_bytes(), update_hash=True)
    with pytest.raises(CheckpointError, match=r"unsafe: refused to unpickle .* besides tensors \(.*Opaque\)"):
        load_checkpoint(out)
    save(tmp_path / "d", tiny)
    with pytest.raises(CheckpointError, match="no train_state.pt"):
        load_checkpoint(tmp_path / "d", with_train_state=True)


class _Shell:
    """Unpickling this runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


@pytest.mark.parametrize("zipped", [True, False], ids=["zip format", "legacy format"])
def test_a_pickle_that_runs_a_command_is_refused_as_unsafe_and_never_runs(tmp_path, zipped):
    """Issue 16, case 7: a pickle calling ``posix.system`` was reported as "corrupt or truncated" (torch 2.14 words
    its refusal differently); it is told apart by the file's structure, not torch's wording."""
    from ftadapt.models.convert import convert_checkpoint

    ran = tmp_path / "ran"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Shell(f"touch {ran}")}, tmp_path / "evil.pth",
               _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError, match=r"evil.pth is unsafe: refused to unpickle it, because it imports Python "
                                              r"objects besides tensors \((posix|os).system\)"):
        convert_checkpoint(tmp_path / "evil.pth", "clan", tmp_path / "out")
    assert not ran.exists() and not (tmp_path / "out").exists()
    (tmp_path / "junk.pth").write_bytes(b"garbage" * 10)  # refused by torch too, but damaged, not unsafe
    with pytest.raises(CheckpointError, match="junk.pth is not a readable torch file: it is corrupt or truncated"):
        convert_checkpoint(tmp_path / "junk.pth", "clan", tmp_path / "out")
