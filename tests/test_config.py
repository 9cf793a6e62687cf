"""Training config: paper defaults, the paper-code preset, --set / file parsing, each section's checks, the upgrade of
older config files, hashing and diffs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_runs import OLD_LAYOUT_CONFIG, OLD_LAYOUT_HASH

from ftadapt.config import (
    METHODS,
    PRESETS,
    RESUMABLE_KEYS,
    DataConfig,
    OptimConfig,
    TrainConfig,
    build_config,
    config_diff,
    config_from_dict,
    config_hash,
    config_to_dict,
    flatten,
    parse_dataset_spec,
    parse_set,
    read_config_file,
)
from ftadapt.config.methods import METHOD_TERMS
from ftadapt.config.upgrade import CONFIG_VERSION
from ftadapt.errors import UsageError


def test_defaults_are_the_papers_text():
    cfg = TrainConfig()
    assert (cfg.loss.lambda_norm, cfg.loss.delta_r, cfg.loss.lambda_weight, cfg.loss.lambda_adv) == (
        0.00015, 0.12, 0.01, 0.001)
    assert (cfg.loss.lambda_local, cfg.loss.epsilon, cfg.loss.seg) == (40.0, 0.4, "ce")
    assert (cfg.optim.lr, cfg.optim.power, cfg.optim.momentum, cfg.optim.weight_decay) == (2.5e-4, 0.9, 0.9, 5e-4)
    assert (cfg.optim.d_lr, cfg.optim.d_betas, cfg.optim.warmup_steps) == (5e-5, (0.9, 0.99), 0)
    assert (cfg.steps, cfg.data.batch_size, cfg.data.source_size, cfg.data.target_size) == (
        100_000, 1, (1280, 720), (1024, 512))
    # "Instead of early stopping we use damping for both adversarial and norm losses": 1 − i/N on both
    assert cfg.loss.adv_damping and cfg.loss.norm_damping == 1.0
    assert (cfg.loss.adv_preheat_steps, cfg.loss.d_preheat_steps, cfg.freeze_bn_affine, cfg.data.augment) == (
        0, 0, "all", "clan")


def test_paper_code_preset_switches_every_deviation_and_explicit_keys_win():
    cfg = build_config({"preset": "paper-code"})
    assert cfg.loss.seg == "focal" and cfg.optim.d_lr == 1e-4 and cfg.loss.lambda_weight == 0.009
    assert cfg.loss.adv_damping and cfg.loss.norm_damping == 1.5
    assert cfg.optim.d_weight_decay == 0.0
    # FTA train.py's horizons are constants (NUM_STEPS = 150,000, PREHEAT_STEPS = 7,500) whatever the run's steps:
    # it weights G's adversarial term from the first step but D's target term only after PREHEAT_STEPS
    assert (cfg.steps, cfg.loss.damping_steps, cfg.optim.warmup_steps) == (100_000, 150_000, 7500)
    assert (cfg.loss.adv_preheat_steps, cfg.loss.d_preheat_steps) == (0, 7500)
    # an explicit key beats the preset wherever it comes in the overrides
    cfg = build_config({"loss.lambda_weight": "0.01", "preset": "paper-code"})
    assert cfg.loss.lambda_weight == 0.01 and cfg.loss.seg == "focal"
    assert set(PRESETS) == {"paper", "paper-code", "clan-code", "maxsquare-code"}


def test_set_values_are_typed_by_the_field():
    cfg = build_config(parse_set(["steps=20", "speed.amp=bf16", "speed.channels_last=yes", "loss.lambda_norm=2e-4",
                                  "data.source_size=160x96", "optim.d_betas=0.5,0.9", "method=clan-norm"]))
    assert cfg.steps == 20 and isinstance(cfg.steps, int)
    assert cfg.speed.amp == "bf16" and cfg.speed.channels_last is True and cfg.loss.lambda_norm == 2e-4
    assert cfg.data.source_size == (160, 96) and cfg.optim.d_betas == (0.5, 0.9)


def test_unknown_key_suggests_close_matches():
    with pytest.raises(UsageError, match=r"unknown config key 'loss.lamda_norm'.*did you mean loss.lambda_norm"):
        parse_set(["loss.lamda_norm=1"])
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_set(["steps"])


@pytest.mark.parametrize("item, message", [
    ("steps=many", r"steps='many': expected a number \(int\)"),
    ("steps=2.5", "expected a number"),
    ("speed.channels_last=maybe", "expected true or false"),
    ("data.source_size=160", "expected 2 numbers"),
    ("method=dann", "method='dann' is invalid: expected one of source-only"),
    ("speed.amp=fp8", "speed.amp='fp8' is invalid"),
    ("keep_checkpoints=-1", "keep_checkpoints=-1 is invalid"),
    ("speed.compile=max", "compile='max' is invalid: expected one of off, default, reduce-overhead"),
    ("preset=fast", "unknown preset 'fast'; valid presets: paper, paper-code"),
    ("stop_at=-1", "stop_at=-1 is invalid"),
    ("stop_at=100001", r"^config stop_at=100001 is invalid: expected at most steps \(100000\), or 0 \(off\)$"),
    ("device=gpu", r"^config device='gpu' is invalid: expected auto, cpu, cuda or cuda:N \(e.g. cuda:1\)$"),
    ("device=cuda:-1", "device='cuda:-1' is invalid"),
    # issue 16, case 6: values torch would refuse later with its own ValueError, refused when the config is built
    ("optim.lr=-1", r"^config optim.lr=-1.0 is invalid: expected a positive number$"),
    ("optim.momentum=-1", r"^config optim.momentum=-1.0 is invalid: expected a number in \[0, 1\)$"),
    ("optim.d_betas=2,3", r"^config optim.d_betas=\(2.0, 3.0\) is invalid: expected two numbers in \[0, 1\)"),
    ("optim.lr=nan", r"^config optim.lr=nan is invalid: expected a finite number$"),
    ("loss.lambda_norm=inf", "loss.lambda_norm=inf is invalid: expected a finite number"),
    ("optim.weight_decay=-0.1", r"optim.weight_decay=-0.1 is invalid: expected ≥ 0"),
    ("data.batch_size=0", "data.batch_size=0 is invalid: expected a positive number"),
    ("data.num_workers=-2", r"data.num_workers=-2 is invalid: expected ≥ 0 \(0: load in the training process\)"),
    ("loss.guidance_threshold=1.5", r"loss.guidance_threshold=1.5 is invalid: expected a probability in \[0, 1\]"),
])
def test_bad_values_are_usage_errors(item, message):
    with pytest.raises(UsageError, match=message):
        build_config(parse_set([item]))


def test_maxsquare_defaults_to_its_reference_architecture():
    assert build_config({"method": "maxsquare-norm"}).model == "deeplabv2-r101-multi-reduced"
    assert build_config({"method": "clan-norm"}).model == "deeplabv2-r101"
    assert build_config({"method": "maxsquare", "model": "tiny"}).model == "tiny"


def test_config_files_json_and_toml(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"steps": 10, "loss": {"lambda_norm": 0.001}}))
    (tmp_path / "b.toml").write_text('steps = 11\n[loss]\nseg = "focal"\n[data]\nsource_size = [64, 32]\n')
    assert build_config(read_config_file(tmp_path / "a.json")).loss.lambda_norm == 0.001
    cfg = build_config(read_config_file(tmp_path / "b.toml"))
    assert (cfg.steps, cfg.loss.seg, cfg.data.source_size) == (11, "focal", (64, 32))
    (tmp_path / "bad.json").write_text('{"loss": {"lambda_nrom": 1}}')
    with pytest.raises(UsageError, match="did you mean loss.lambda_norm"):
        read_config_file(tmp_path / "bad.json")
    (tmp_path / "broken.toml").write_text("steps = = 1")
    with pytest.raises(UsageError, match="not valid TOML"):
        read_config_file(tmp_path / "broken.toml")
    with pytest.raises(UsageError, match="does not exist"):
        read_config_file(tmp_path / "missing.json")


def test_round_trip_hash_and_diff():
    cfg = build_config({"method": "clan", "steps": "50", "preset": "paper-code"})
    again = config_from_dict(json.loads(json.dumps(config_to_dict(cfg))))
    assert again == cfg and config_hash(again) == config_hash(cfg)
    # runtime keys do not change the hash; what the run learns does
    assert config_hash(build_config({**flatten(cfg), "device": "cpu", "data.num_workers": 0})) == config_hash(cfg)
    other = build_config({**flatten(cfg), "loss.lambda_adv": 0.002, "model": "tiny"})
    assert config_hash(other) != config_hash(cfg)
    assert config_diff(cfg, other) == ["model: 'deeplabv2-r101' → 'tiny'", "loss.lambda_adv: 0.001 → 0.002"]


def test_each_section_checks_its_own_keys_and_names_them_in_full():
    with pytest.raises(UsageError, match=r"^config optim.lr=-1 is invalid: expected a positive number$"):
        OptimConfig(lr=-1)
    with pytest.raises(UsageError, match=r"^config data.batch_size=0 is invalid: expected a positive number$"):
        DataConfig(batch_size=0)
    with pytest.raises(UsageError, match="^config steps=0 is invalid"):
        TrainConfig(steps=0)
    with pytest.raises(UsageError, match=r"config stop_at=3 is invalid: expected at most steps \(2\)"):
        TrainConfig(steps=2, stop_at=3)  # a check across keys: the whole config's


@pytest.mark.parametrize("given, device", [("0", "cuda:0"), ("CUDA:1", "cuda:1"), (" cpu ", "cpu"), ("auto", "auto"),
                                           ("cuda", "cuda")])
def test_the_device_key_is_kept_in_one_spelling(given, device):
    assert build_config({"device": given}).device == device  # parsed by ftadapt.devices, as every --device


def test_a_config_json_of_the_old_layout_reads_with_its_speed_keys_in_the_speed_section(tmp_path):
    old = {**OLD_LAYOUT_CONFIG, "amp": "bf16", "channels_last": True}
    cfg = config_from_dict(old)
    assert (cfg.speed.amp, cfg.speed.channels_last) == ("bf16", True)
    assert (cfg.method, cfg.model, cfg.stop_at, cfg.data.source_size) == ("clan-norm", "tiny", 1, (160, 96))
    # the keys recorded since read as their defaults: no roots, no init, no SyncBatchNorm
    assert (cfg.data.source, cfg.data.target, cfg.init, cfg.sync_bn) == ("", "", "", False)
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert build_config(read_config_file(tmp_path / "config.json")) == cfg  # --config of an old run's config.json
    # what the run learns hashes as it did then, and the new layout round-trips with its version
    assert config_hash(config_from_dict(OLD_LAYOUT_CONFIG)) == OLD_LAYOUT_HASH
    saved = config_to_dict(cfg)
    assert saved["version"] == CONFIG_VERSION and "amp" not in saved and config_from_dict(saved) == cfg


@pytest.mark.parametrize("switches", [{"cuda_graphs": True, "channel_multiple": 8, "space_to_batch": True},
                                      {"speed": {"amp": "off", "channels_last": False, "cudnn_benchmark": True,
                                                 "compile": "off", "cuda_graphs": True, "channel_multiple": 8,
                                                 "space_to_batch": True}}])
def test_the_removed_speed_switches_of_an_old_config_are_dropped_at_any_value(switches, tmp_path):
    """They computed the values of the plain step: an old run that had them on reads, hashes and resumes as one
    that had them off (at the top level, before the speed section; inside it, before config versions)."""
    old = {k: v for k, v in OLD_LAYOUT_CONFIG.items()
           if k not in ("amp", "channels_last", "cudnn_benchmark", "compile", "cuda_graphs", "channel_multiple",
                        "space_to_batch")} if "speed" in switches else OLD_LAYOUT_CONFIG
    cfg = config_from_dict({**old, **switches})
    assert cfg == config_from_dict(OLD_LAYOUT_CONFIG) and config_hash(cfg) == OLD_LAYOUT_HASH
    (tmp_path / "a.json").write_text(json.dumps({**old, **switches}))
    assert build_config(read_config_file(tmp_path / "a.json")) == cfg


def test_old_key_names_are_read_only_from_files_without_a_version(tmp_path):
    """The upgrade is the one place old layouts are read: a --set, or a file that states the current version, must
    use today's names, and a file of a newer version is refused."""
    (tmp_path / "old.toml").write_text('amp = "bf16"\n[data]\naugment = false\n')
    assert read_config_file(tmp_path / "old.toml") == {"speed.amp": "bf16", "data.augment": "none"}
    # upgraded to today's names, a file's key is the one a later --set replaces
    assert build_config({**read_config_file(tmp_path / "old.toml"), **parse_set(["speed.amp=off"])}).speed.amp == "off"
    with pytest.raises(UsageError, match=r"unknown config key 'amp'; did you mean speed.amp"):
        parse_set(["amp=bf16"])
    (tmp_path / "new.toml").write_text(f'version = {CONFIG_VERSION}\namp = "bf16"\n')
    with pytest.raises(UsageError, match=r"unknown config key 'amp'; did you mean speed.amp"):
        read_config_file(tmp_path / "new.toml")
    with pytest.raises(UsageError, match="data.augment='True' is invalid"):
        build_config(parse_set(["data.augment=True"]))
    (tmp_path / "future.json").write_text(json.dumps({"version": CONFIG_VERSION + 1, "steps": 3}))
    with pytest.raises(UsageError, match=f"config version {CONFIG_VERSION + 1} is not one this ftadapt reads"):
        read_config_file(tmp_path / "future.json")


def test_roots_init_and_sync_bn_are_recorded_and_only_sync_bn_blocks_a_resume():
    cfg = build_config(parse_set(["data.source=gta5:/data/GTA5", "data.target=cityscapes:/data/CS",
                                  "init=/w/init.pth", "sync_bn=true"]))
    saved = config_to_dict(cfg)
    assert saved["data"]["source"] == "gta5:/data/GTA5" and saved["data"]["target"] == "cityscapes:/data/CS"
    assert saved["init"] == "/w/init.pth" and saved["sync_bn"] is True and saved["speed"]["amp"] == "off"
    moved = build_config({**flatten(cfg), "data.source": "gta5:/elsewhere", "data.target": "", "init": "",
                          "speed.amp": "bf16", "speed.compile": "default", "device": "cpu"})
    assert config_diff(cfg, moved) == [] and config_hash(moved) == config_hash(cfg)
    # what a resume may change: where and how fast the run goes, never what it learns
    assert sorted(RESUMABLE_KEYS) == sorted([
        "device", "init", "checkpoint_every", "keep_checkpoints", "log_every", "eval_every", "check_data",
        "tensorboard", "stop_at", "data.source", "data.target", "data.num_workers", "eval.split", "eval.size",
        "eval.flip", "speed.amp", "speed.channels_last", "speed.cudnn_benchmark", "speed.compile"])
    assert config_diff(cfg, build_config({**flatten(cfg), "sync_bn": False})) == ["sync_bn: True → False"]


@pytest.mark.parametrize("spec, expected", [
    ("gta5:/data/GTA5", ("gta5", Path("/data/GTA5"))), ("cityscapes:rel/cs", ("cityscapes", Path("rel/cs"))),
    ("synthia:C:/x", ("synthia", Path("C:/x"))),
])
def test_dataset_specs_parse_into_kind_and_root(spec, expected):
    assert parse_dataset_spec(spec) == expected


@pytest.mark.parametrize("spec", ["gta5", "gta5:", "kitti:/data", ":/data"])
def test_a_bad_dataset_spec_is_a_usage_error_naming_the_form(spec):
    with pytest.raises(UsageError, match=rf"^{spec!r}: expected KIND:ROOT with KIND one of gta5, cityscapes, synthia "
                                         r"\(e.g. cityscapes:/data/Cityscapes\)$"):
        parse_dataset_spec(spec)


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("method", METHODS)
def test_every_preset_resolves_for_every_method(method, preset):
    """A preset changes exactly its keys (and those only where they differ from the paper's text), for every method."""
    paper = flatten(build_config({"method": method}))
    resolved = flatten(build_config({"method": method, "preset": preset}))
    changed = {k for k in resolved if resolved[k] != paper[k]} - {"preset"}
    assert changed == {k for k, v in PRESETS[preset].items() if paper[k] != v}
    assert all(resolved[k] == v for k, v in PRESETS[preset].items())
    assert resolved["model"] == ("deeplabv2-r101-multi-reduced" if method.startswith("maxsquare") else "deeplabv2-r101")


def test_a_config_written_before_the_split_preheat_and_augmentation_styles_means_what_it_meant():
    old = {**OLD_LAYOUT_CONFIG, "loss": {**OLD_LAYOUT_CONFIG["loss"], "adv_preheat_steps": 5000}}
    cfg = config_from_dict(old)
    assert (cfg.loss.adv_preheat_steps, cfg.loss.d_preheat_steps) == (5000, 5000)  # one key served both terms
    assert config_from_dict({**old, "data": {**old["data"], "augment": False}}).data.augment == "none"
    assert config_from_dict(OLD_LAYOUT_CONFIG).data.augment == "clan"
    assert (cfg.loss.adv_damping, cfg.loss.norm_damping) == (False, 0.0)  # its own values, not today's defaults
    assert build_config(parse_set(["data.augment=maxsquare"])).data.augment == "maxsquare"
    with pytest.raises(UsageError, match="data.augment='crop' is invalid"):
        build_config({"data.augment": "crop"})


def test_the_methods_are_named_once():
    """The config's ``method`` key, the command line's choices and create_method read one catalogue."""
    from ftadapt.commands.train import train

    assert METHODS == tuple(METHOD_TERMS) == ("source-only", "norm-only", "clan", "clan-norm", "maxsquare",
                                              "maxsquare-norm")
    (method,) = [p for p in train.params if p.name == "method"]
    assert tuple(method.type.choices) == METHODS
