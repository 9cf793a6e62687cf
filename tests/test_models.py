"""DeepLab-v2 models, heads, BN handling, parameter groups, registry and discriminator."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ftadapt.errors import UsageError
from ftadapt.models.deeplab import (
    DeepLabV2,
    ModelConfig,
    combine_heads,
    count_parameters,
    deeplab_v2,
    optim_param_groups,
)
from ftadapt.models.discriminator import FCDiscriminator
from ftadapt.models.registry import create_model, list_models, model_config, register_model


@pytest.fixture(scope="module")
def r101_states():
    """State dicts and parameter counts of the three R101 head layouts, built on the meta device (shapes only: no
    memory, no initialisation cost)."""
    out = {}
    for heads in ("clan", "multi", "single"):
        with torch.device("meta"):
            model = deeplab_v2(101, heads=heads)
        out[heads] = (model.state_dict(), count_parameters(model))
    return out


def shapes(state):
    return {k: list(v.shape) for k, v in state.items()}


def test_r101_parameter_counts_match_the_papers(r101_states):
    assert round(r101_states["clan"][1] / 1e6, 2) == 45.30
    assert round(r101_states["multi"][1] / 1e6, 2) == 44.60


def test_r101_key_counts(r101_states):
    # 104 BN layers (stem + 33 blocks × 3 + 4 downsample) × 5 entries, 104 convs, 2 heads × 4 branches × 2.
    state = r101_states["clan"][0]
    assert len(state) == 640
    assert sum(k.endswith("num_batches_tracked") for k in state) == 104
    assert len(r101_states["multi"][0]) == 640
    assert len(r101_states["single"][0]) == 632 and not any(k.startswith("layer6") for k in r101_states["single"][0])


def test_r101_key_names_and_shapes_follow_the_official_table(r101_states):
    clan, multi = shapes(r101_states["clan"][0]), shapes(r101_states["multi"][0])
    assert clan["conv1.weight"] == [64, 3, 7, 7]
    assert clan["bn1.running_var"] == [64] and clan["bn1.num_batches_tracked"] == []
    assert [clan[f"layer1.0.conv{i}.weight"] for i in (1, 2, 3)] == [[64, 64, 1, 1], [64, 64, 3, 3], [256, 64, 1, 1]]
    assert clan["layer3.22.bn3.running_var"] == [1024]
    downsample = [clan[f"layer{i}.0.downsample.0.weight"] for i in (1, 2, 3, 4)]
    assert downsample == [[256, 64, 1, 1], [512, 256, 1, 1], [1024, 512, 1, 1], [2048, 1024, 1, 1]]
    assert clan["layer4.0.downsample.1.num_batches_tracked"] == []
    assert all(k.split(".")[1] == "0" for k in clan if ".downsample." in k)
    last_block = {layer: max(int(k.split(".")[1]) for k in clan if k.startswith(layer + "."))
                  for layer in ("layer1", "layer2", "layer3", "layer4")}
    assert last_block == {"layer1": 2, "layer2": 3, "layer3": 22, "layer4": 2}
    for i in range(4):
        assert clan[f"layer5.conv2d_list.{i}.weight"] == [19, 2048, 3, 3]
        assert clan[f"layer6.conv2d_list.{i}.weight"] == [19, 2048, 3, 3]
        assert multi[f"layer5.conv2d_list.{i}.weight"] == [19, 1024, 3, 3]
        assert multi[f"layer6.conv2d_list.{i}.bias"] == [19]


def test_r50_blocks_and_key_count():
    state = deeplab_v2(50).state_dict()
    assert max(int(k.split(".")[1]) for k in state if k.startswith("layer3.")) == 5
    assert len(state) == 53 * 6 + 16  # 53 BN layers (5 entries) + 53 convs + head convs


@pytest.mark.parametrize("size, expected", [
    ((64, 128), (9, 17)),  # conv1 → 32×64, ceil-mode pool → 17×33 (floor mode would give 16×32), layer2 → 9×17
    ((512, 1024), (65, 129)),
    ((720, 1280), (91, 161)),
])
def test_output_stride_8_with_ceil_mode_pooling(size, expected):
    model = create_model("tiny").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert len(out.logits) == 2
    assert all(tuple(t.shape) == (1, 19, *expected) for t in out.logits)
    assert tuple(out.features.shape) == (1, 256, *expected)


def test_features_are_the_post_relu_layer4_output():
    model = create_model("tiny").eval()
    x = torch.randn(2, 3, 64, 96)
    captured = {}
    model.layer4.register_forward_hook(lambda mod, inp, out: captured.setdefault("layer4", out))
    with torch.no_grad():
        out = model(x)
    assert torch.equal(out.features, captured["layer4"]) and out.features.min() >= 0


def test_multi_heads_read_layer3_and_layer4():
    model = create_model("tiny", heads="multi", aspp="reduced").eval()
    feats = {}
    model.layer3.register_forward_hook(lambda mod, inp, out: feats.setdefault("layer3", out))
    with torch.no_grad():
        aux, main = model(torch.randn(1, 3, 64, 64)).logits
        assert torch.allclose(aux, model.layer5(feats["layer3"]))
        assert torch.allclose(main, model.layer6(model.layer4(feats["layer3"])))


def test_head_rules():
    p1, p2 = torch.randn(1, 19, 3, 4), torch.randn(1, 19, 3, 4)
    assert torch.equal(combine_heads((p1, p2), "sum"), p1 + p2)
    assert torch.equal(combine_heads((p1, p2), "main"), p2)
    assert torch.equal(combine_heads((p1,), "main"), p1)
    with pytest.raises(UsageError, match="head rule 'max'"):
        combine_heads((p1, p2), "max")
    assert model_config("tiny").head_rule == "sum"
    assert model_config("tiny", heads="multi").head_rule == "main"
    assert model_config("tiny", heads="single").head_rule == "main"


def test_predict_logits_applies_the_configs_rule():
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        clan = create_model("tiny").eval()
        p1, p2 = clan(x).logits
        assert torch.allclose(clan.predict_logits(x), p1 + p2)
        multi = create_model("tiny", heads="multi").eval()
        assert torch.equal(multi.predict_logits(x), multi(x).logits[1])
        assert torch.equal(multi.predict_logits(x, "sum"), sum(multi(x).logits))
        single = create_model("tiny", heads="single").eval()
        assert len(single(x).logits) == 1 and torch.equal(single.predict_logits(x), single(x).logits[0])


def test_reduced_aspp_drops_exactly_branches_2_and_3():
    full = create_model("tiny").eval()
    reduced = create_model("tiny", aspp="reduced").eval()
    reduced.load_state_dict(full.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out_full, out_red = full(x), reduced(x)
        branches = [conv(out_full.features) for conv in full.layer5.conv2d_list]
    assert torch.allclose(out_red.logits[0], branches[0] + branches[1], atol=1e-6)
    assert torch.allclose(out_full.logits[0] - out_red.logits[0], branches[2] + branches[3], atol=1e-5)
    frozen = [name for name, p in reduced.named_parameters() if name.startswith("layer") and not p.requires_grad
              and "conv2d_list" in name]
    assert sorted(frozen) == sorted(f"layer{h}.conv2d_list.{i}.{w}" for h in (5, 6) for i in (2, 3)
                                    for w in ("weight", "bias"))


def test_init_statistics():
    model = create_model("tiny")
    w = model.layer4[0].conv3.weight
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.01) < 1e-3
    assert torch.equal(model.bn1.weight, torch.ones(8)) and torch.equal(model.bn1.bias, torch.zeros(8))


def bn_layers(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_bn_affine_frozen_and_running_stats_update_by_default():
    model = create_model("tiny").train()
    assert all(not p.requires_grad for m in bn_layers(model) for p in m.parameters())
    before = model.bn1.running_mean.clone()
    model(torch.randn(1, 3, 64, 64))
    assert not torch.equal(model.bn1.running_mean, before) and model.bn1.training


def test_freeze_bn_stats_keeps_bn_in_eval_mode():
    model = create_model("tiny", freeze_bn_stats=True).train()
    assert model.training and not any(m.training for m in bn_layers(model))
    before = [m.running_mean.clone() for m in bn_layers(model)]
    model(torch.randn(1, 3, 64, 64))
    assert all(torch.equal(m.running_mean, b) for m, b in zip(bn_layers(model), before))


def test_freeze_bn_stats_also_holds_for_sync_batchnorm():
    """``sync_bn`` converts G's BatchNorm2d layers to SyncBatchNorm, which is not a BatchNorm2d subclass."""
    model = create_model("tiny", freeze_bn_stats=True)
    torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the children in place, as TrainStep does
    synced = [m for m in model.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert synced and not bn_layers(model)
    model.train()
    assert model.training and not any(m.training for m in synced)


def test_stem_only_bn_freezing_maxsquare_style():
    model = create_model("tiny", freeze_bn_affine="stem")
    assert not model.bn1.weight.requires_grad and not model.bn1.bias.requires_grad
    assert all(p.requires_grad for m in bn_layers(model)[1:] for p in m.parameters())


@pytest.mark.parametrize("overrides, n_backbone, n_heads", [
    ({}, 17, 16),  # only the 17 conv weights train; two heads × 4 branches × (weight, bias)
    ({"aspp": "reduced", "heads": "multi"}, 17, 8),  # unused branches 2, 3 are frozen
    ({"freeze_bn_affine": "stem"}, 17 + 16 * 2, 16),  # all BN affine but the stem's
])
def test_optim_param_groups(overrides, n_backbone, n_heads):
    model = create_model("tiny", **overrides)
    backbone, heads = optim_param_groups(model, 2.5e-4)
    assert (backbone["lr"], heads["lr"]) == (2.5e-4, 2.5e-3) and (backbone["lr_mult"], heads["lr_mult"]) == (1, 10)
    assert (len(backbone["params"]), len(heads["params"])) == (n_backbone, n_heads)
    head_ids = {id(p) for m in (model.layer5, model.layer6) for p in m.parameters()}
    assert all(id(p) in head_ids for p in heads["params"]) and not any(id(p) in head_ids for p in backbone["params"])
    grouped = {id(p) for g in (backbone, heads) for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


def test_model_config_json_round_trip_and_validation():
    config = model_config("deeplabv2-r101-multi-reduced", freeze_bn_stats=True)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["arch"] == "deeplabv2" and data["blocks"] == [3, 4, 23, 3]
    assert ModelConfig.from_dict(data) == config and config.depth == 101
    assert model_config("tiny").depth is None and model_config("tiny").feature_channels == 256
    with pytest.raises(UsageError, match="unknown model option"):
        ModelConfig.from_dict({**data, "dropout": 0.1})
    with pytest.raises(UsageError, match="aspp='half'"):
        ModelConfig(aspp="half")
    with pytest.raises(UsageError, match="blocks"):
        ModelConfig(blocks=(1, 1, 1))
    with pytest.raises(UsageError, match="arch 'segformer'"):
        ModelConfig.from_dict({"arch": "segformer"})
    with pytest.raises(UsageError, match="depth=34"):
        deeplab_v2(34)


def test_registry():
    assert {"deeplabv2-r101", "deeplabv2-r50", "deeplabv2-r101-multi-reduced", "tiny"} <= set(list_models())
    assert model_config("deeplabv2-r101") == ModelConfig()
    assert model_config("deeplabv2-r50").depth == 50
    multi = model_config("deeplabv2-r101-multi-reduced")
    assert (multi.aspp, multi.heads) == ("reduced", "multi")
    tiny = create_model("tiny", num_classes=5)
    assert isinstance(tiny, DeepLabV2) and tiny.config.blocks == (1, 1, 1, 1)
    assert tiny.layer6.conv2d_list[0].out_channels == 5
    with pytest.raises(UsageError, match="unknown model 'r101'.*tiny"):
        create_model("r101")
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny", ModelConfig())


def test_channels_last_and_bf16_autocast():
    model = create_model("tiny").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        reference = model(x).logits[0]
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last)).logits[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x).logits[0]
    assert torch.allclose(cl, reference, atol=1e-5)
    assert bf16.dtype == torch.bfloat16
    assert (bf16.float() - reference).abs().max() < 0.05 * reference.abs().max()


def test_forward_exports_without_data_dependent_control_flow():
    model = create_model("tiny", heads="multi").eval()
    x = torch.randn(1, 3, 64, 64)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        exported, eager = program.module()(x), model(x)
    assert torch.allclose(exported.logits[1], eager.logits[1], atol=1e-6)


def test_discriminator_layers_and_output_size():
    d = FCDiscriminator(num_classes=19, ndf=4)
    assert [k for k in d.state_dict() if k.endswith("weight")] == [f"conv{i}.weight" for i in range(1, 5)] + [
        "classifier.weight"]
    assert [d.state_dict()[f"conv{i}.weight"].shape[0] for i in range(1, 5)] == [4, 8, 16, 32]
    meta = FCDiscriminator(num_classes=19, ndf=4).to("meta")  # output shapes without the compute
    assert meta(torch.empty(1, 19, 512, 1024, device="meta")).shape == (1, 1, 16, 32)
    assert meta(torch.empty(1, 19, 720, 1280, device="meta")).shape == (1, 1, 22, 40)
    assert FCDiscriminator().conv4.out_channels == 512


def test_discriminator_is_leaky_convs_then_logits():
    d = FCDiscriminator(num_classes=3, ndf=2)
    x = torch.randn(2, 3, 64, 64)
    expected = x
    for conv in (d.conv1, d.conv2, d.conv3, d.conv4):
        expected = F.leaky_relu(F.conv2d(expected, conv.weight, conv.bias, stride=2, padding=1), 0.2)
    expected = F.conv2d(expected, d.classifier.weight, d.classifier.bias, stride=2, padding=1)
    with torch.no_grad():
        assert torch.allclose(d(x), expected, atol=1e-6)


@pytest.mark.slow
def test_import_ftadapt_stays_torch_free_and_load_model_is_lazy():
    code = ("import sys, ftadapt; assert 'torch' not in sys.modules, 'torch imported'; "
            "from ftadapt.checkpoint import load_model; assert ftadapt.load_model is load_model; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    import ftadapt

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ftadapt.nope  # noqa: B018
