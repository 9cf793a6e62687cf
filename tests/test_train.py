"""The training loop on the synthetic set with the tiny model: every method learns, the one step builder honours the
config, bad roots and NaNs stop cleanly, the CLI refuses bad input without writing anything, and the model evaluation
follows the protocol. Stopping and resuming: ``test_resume.py``."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from train_runs import SMALL_SET, assert_same, roots, run

from ftadapt.checkpoint import load_checkpoint, load_model, save_checkpoint
from ftadapt.cli import main
from ftadapt.config import build_config
from ftadapt.errors import UsageError
from ftadapt.methods.segmentation import FeatureNorm
from ftadapt.models.discriminator import FCDiscriminator
from ftadapt.models.registry import create_model
from ftadapt.run_folder import prune_checkpoints, read_metrics
from ftadapt.training import TrainingDiverged
from ftadapt.training.distributed import DistEnv
from ftadapt.training.step import build_train_step


def _cli(synthetic, out, *args, method="norm-only"):
    return main(["train", method, "--source", f"gta5:{synthetic.gta5_root}", "--target",
                 f"cityscapes:{synthetic.cityscapes_root}", "--model", "tiny", "--steps", "2", "--out", str(out),
                 *[a for s in SMALL_SET for a in ("--set", s)], *args])


def _cli_error(capsys, *argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    return exc.value.code, capsys.readouterr().err


LOSSES = {"source-only": {"seg"}, "norm-only": {"seg", "norm_src", "norm_tgt"},
          "clan": {"seg", "adv", "weight", "d_src", "d_tgt"},
          "clan-norm": {"seg", "norm_src", "norm_tgt", "adv", "weight", "d_src", "d_tgt"},
          "maxsquare": {"seg", "maxsquare"}, "maxsquare-norm": {"seg", "norm_src", "norm_tgt", "maxsquare"}}


@pytest.mark.parametrize("method", list(LOSSES))
def test_every_method_trains_with_finite_logged_losses(synthetic, tmp_path, method):
    result = run(synthetic, tmp_path / "run", method)
    assert result.step == 2 and result.checkpoint.name == "step_000002" and result.stopped_by is None
    torch.manual_seed(1234)  # the run's seed: the weights it started from
    start = create_model("tiny").state_dict()
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last", with_train_state=True)
    assert ckpt.meta["method"] == method and ckpt.meta["step"] == 2
    assert ckpt.config["train"]["method"] == method
    changed = {k for k, v in ckpt.state_dict.items() if not torch.equal(v, start[k])}
    assert "layer4.0.conv2.weight" in changed and "layer6.conv2d_list.3.bias" in changed
    assert "bn1.weight" not in changed  # BN affine is frozen (the running statistics do update)
    # train_state.pt's keys (TrainStep.state_dict adds the optimizers and D): old checkpoints resume with them
    assert set(ckpt.train_state) == {"step", "optimizer", "rng", "oracle", "world_size"} | (
        {"discriminator", "optimizer_d"} if method.startswith("clan") else set())
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert {k.removeprefix("loss/") for k in record if k.startswith("loss/")} == LOSSES[method]
        assert all(np.isfinite(v) for v in record.values())
        assert record["grad_norm/G"] > 0 and ("grad_norm/D" in record) == method.startswith("clan")
    assert records[0]["lr"] == pytest.approx(2.5e-4) and records[1]["lr"] == pytest.approx(2.5e-4 * 0.5 ** 0.9)


def test_bf16_autocast_channels_last_and_multi_heads_with_self_guidance(synthetic, tmp_path):
    run(synthetic, tmp_path / "run", "maxsquare-norm", model="tiny-multi",
        **{"speed.amp": "bf16", "speed.channels_last": True, "loss.self_guidance": True,
           "loss.guidance_threshold": 0.0, "loss.iw_ratio": 0.2})
    record = read_metrics(tmp_path / "run")[-1]
    assert {"loss/guidance", "loss/maxsquare", "loss/norm_tgt"} <= record.keys()
    assert all(np.isfinite(v) for v in record.values())
    assert load_model(tmp_path / "run" / "checkpoints" / "last").config.heads == "multi"


def test_compile_key_compiles_g_per_shape_and_marks_cuda_graph_steps(synthetic, tmp_path, monkeypatch):
    # Plumbing only (compiling even the tiny model takes minutes on this CPU; the GPU script times the real thing):
    # G is compiled once with static shapes in the requested mode, and every reduce-overhead step starts a new
    # CUDA-graph step so the previous step's graph outputs may be overwritten.
    compiled, marks = [], []
    monkeypatch.setattr(torch, "compile", lambda net, **kw: compiled.append(kw) or net)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    result = run(synthetic, tmp_path / "run", method="norm-only", **{"speed.compile": "reduce-overhead"})
    assert compiled == [{"dynamic": False, "mode": "reduce-overhead"}] and len(marks) == 2 and result.step == 2
    compiled.clear()
    run(synthetic, tmp_path / "run2", method="source-only", **{"speed.compile": "default"})
    assert compiled == [{"dynamic": False, "mode": None}] and len(marks) == 2


def test_keep_checkpoints_keeps_the_newest_and_the_linked_ones(synthetic, tmp_path):
    out = tmp_path / "run"
    run(synthetic, out, method="source-only", steps=5, checkpoint_every=1, keep_checkpoints=2, eval_every=1,
         **{"eval.size": "128x64"})
    folder = out / "checkpoints"
    best = (folder / "oracle_best").resolve().name
    kept = {p.name for p in folder.glob("step_*")}
    assert kept == {"step_000004", "step_000005", best} and (folder / "last").resolve().name == "step_000005"
    (folder / ".deleting-step_000001").mkdir()  # left by an interrupted deletion
    deleted = prune_checkpoints(out, 1)
    assert {p.name for p in deleted} == kept - {"step_000005", best}
    assert {p.name for p in folder.glob("*step_*")} == {"step_000005", best}


def test_compile_and_sync_bn_under_several_processes_are_refused(monkeypatch):
    """Refused by the builder before it builds anything."""
    import ftadapt.training.step

    monkeypatch.setattr(ftadapt.training.step, "create_model", lambda *a, **k: pytest.fail("built a model first"))
    cfg = build_config({"method": "source-only", "model": "tiny", "speed.compile": "default", "device": "cpu"})
    with pytest.raises(UsageError, match="compile=default with several processes is not supported"):
        build_train_step(cfg, dist_env=DistEnv(rank=0, world_size=2))
    cfg = build_config({"method": "source-only", "model": "tiny", "sync_bn": True, "device": "cpu"})
    with pytest.raises(UsageError, match="sync_bn needs CUDA devices"):
        build_train_step(cfg, dist_env=DistEnv(rank=0, world_size=2))


def test_the_builder_seeds_sizes_d_from_the_model_and_loads_init_only_for_a_fresh_run(tmp_path):
    torch.manual_seed(7)
    donor = create_model("tiny")
    save_checkpoint(tmp_path / "donor", model_state=donor.state_dict(), model_config=donor.config, meta={})
    cfg = build_config({"method": "clan", "model": "tiny", "device": "cpu", "init": str(tmp_path / "donor")})
    step = build_train_step(cfg)
    assert step.init_report["heads"] == "loaded" and step.init_report["source"] == str(tmp_path / "donor")
    assert_same(step.model.state_dict(), donor.state_dict())
    resumed = build_train_step(cfg, load_init=False)  # a resume: its checkpoint supplies the weights, not init
    torch.manual_seed(cfg.seed)  # the config's seed: the same initial weights every time
    assert_same(resumed.model.state_dict(), create_model("tiny").state_dict())
    assert resumed.init_report is None and isinstance(resumed.disc, FCDiscriminator)
    assert resumed.disc.conv1.in_channels == resumed.model.config.num_classes
    assert build_train_step(build_config({"method": "norm-only", "model": "tiny", "device": "cpu"})).disc is None
    moved = build_config({"method": "clan", "model": "tiny", "device": "cpu", "init": str(tmp_path / "moved")})
    with pytest.raises(UsageError, match="--init .*moved: no such file or folder"):
        build_train_step(moved)
    build_train_step(moved, load_init=False)  # a moved init file does not block a resume
    random = build_train_step(build_config({"model": "tiny", "device": "cpu", "init": "none"}))  # not a file name
    assert random.init_report is None


def test_train_refuses_bad_dataset_roots_before_writing_anything(synthetic, tmp_path):
    src, tgt = roots(synthetic)["data.source"], roots(synthetic)["data.target"]
    cases = [({"data.source": ""}, "no labelled source (config key data.source): give --source gta5:ROOT, "
                                   "synthia:ROOT, or cityscapes:ROOT (source-only)"),
             ({"data.source": "gta5"}, "'gta5': expected KIND:ROOT with KIND one of gta5, cityscapes, synthia"),
             ({"data.source": tgt}, "with method clan-norm: adaptation needs a synthetic source (gta5 or synthia); a "
                                    "cityscapes source is the oracle (source-only)"),
             ({"data.target": src}, "the unlabelled target must be cityscapes:ROOT"),
             ({"data.target": ""}, "method clan-norm needs the target: --target cityscapes:ROOT"),
             ({"data.target": "", "eval_every": 1, "method": "source-only"}, "eval_every needs the target")]
    for overrides, message in cases:
        with pytest.raises(UsageError, match=re.escape(message)):
            run(synthetic, tmp_path / "run", **overrides)
        assert not (tmp_path / "run").exists(), overrides


def test_the_oracle_trains_source_only_on_cityscapes_train_with_its_labels(synthetic, tmp_path, capsys):
    """The paper's Oracle row: ``--source cityscapes:ROOT`` is Cityscapes train with its labels, for source-only
    only (through the dataset doctor); an adapting method with it is refused in one line before anything is
    written."""
    from ftadapt.training.datasets import open_datasets

    source = f"cityscapes:{synthetic.cityscapes_root}"
    sets = [a for s in SMALL_SET if not s.startswith("data.source_size=") for a in ("--set", s)]
    out = tmp_path / "oracle"
    main(["train", "source-only", "--source", source, "--model", "tiny", "--steps", "2", "--out", str(out),
          "--set", "data.source_size=128x64", *sets])
    ckpt = load_checkpoint(out / "checkpoints" / "last")
    assert ckpt.meta["step"] == 2 and ckpt.meta["source"] == source and ckpt.meta["target"] is None
    assert ckpt.config["train"]["data"]["source"] == source
    cfg = build_config({"method": "source-only", "data.source": source, "data.source_size": "128x64"})
    data = open_datasets(cfg, needs_target=False, doctor=True, progress=False)
    sample = data.source[0]
    assert len(data.source) == synthetic.n_target_train and data.target is None
    assert tuple(sample["image"].shape[-2:]) == tuple(sample["label"].shape[-2:]) == (64, 128)
    assert (sample["label"] != 255).any()  # the train labels are read
    code, err = _cli_error(capsys, "train", "clan", "--source", source, "--target", source, "--model", "tiny",
                           "--out", str(tmp_path / "clan"))
    line = (f"--source {source} with method clan: adaptation needs a synthetic source (gta5 or synthia); a "
            "cityscapes source is the oracle (source-only)")
    assert code == 2 and f"{line}\n" in err and "Traceback" not in err and not (tmp_path / "clan").exists()
    assert "stretches" not in err  # the oracle run above trained at a 2:1 size
    code, err = _cli_error(capsys, "train", "source-only", "--source", f"cityscapes:{tmp_path / 'missing'}",
                           "--model", "tiny", "--init", "none", "--out", str(tmp_path / "stretched"))
    assert ("note: data.source_size=1280x720 stretches Cityscapes' 2:1 frames; the oracle is usually trained at the "
            "protocol size: --set data.source_size=1024x512\n") in err and code != 0


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(synthetic, tmp_path, monkeypatch):
    original = FeatureNorm.source

    def nan_at_step_3(self, ctx, out):
        losses = original(self, ctx, out)
        return {name: loss * float("nan") for name, loss in losses.items()} if ctx.step == 2 else losses

    monkeypatch.setattr(FeatureNorm, "source", nan_at_step_3)
    with pytest.raises(TrainingDiverged, match=r"step 3: non-finite norm_src=nan.*last good checkpoint is .*_000002"):
        run(synthetic, tmp_path / "run", "norm-only", steps=5, checkpoint_every=1)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "last", "step_000001", "step_000002"]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last").meta["step"] == 2
    # unlogged, unsaved steps are checked one step late (no host sync per step), still naming the right step
    with pytest.raises(TrainingDiverged, match=r"step 3: non-finite norm_src=nan.*no checkpoint was written"):
        run(synthetic, tmp_path / "quiet", "norm-only", steps=6, checkpoint_every=0, log_every=5)
    assert not (tmp_path / "quiet" / "checkpoints").exists()


def test_a_huge_learning_rate_is_caught_by_the_cli(synthetic, tmp_path, capsys):
    code, err = _cli_error(capsys, "train", "source-only", "--source", f"gta5:{synthetic.gta5_root}", "--model", "tiny",
                           "--steps", "5", "--out", str(tmp_path / "run"), "--set", "optim.lr=1e30",
                           *[a for s in SMALL_SET for a in ("--set", s)])
    assert code == 1 and "non-finite" in err and "Traceback" not in err


def test_cli_train_writes_the_run_folder_and_json(synthetic, tmp_path, capsys):
    out = tmp_path / "run"
    _cli(synthetic, out, "--set", "tensorboard=true", "--set", "eval_every=2", "--set", "eval.size=128x64",
         "--device", "cpu", "--json", str(tmp_path / "result.json"))
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["step"] == 2 and summary["checkpoint"].endswith("step_000002")
    assert summary["oracle"]["step"] == 2 and 0 <= summary["oracle"]["miou"] <= 100
    saved = json.loads((out / "config.json").read_text())
    assert saved["method"] == "norm-only" and saved["data"]["source_size"] == [160, 96] and saved["eval_every"] == 2
    assert saved["device"] == "cpu"  # --device sets the config key
    assert (out / "checkpoints" / "oracle_best").resolve().name == "step_000002"
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert "eval/miou_oracle" in read_metrics(out)[-1]
    model = load_model(out / "checkpoints" / "last")
    assert model.config.width == 8 and not model.training


def test_cli_refuses_to_overwrite_and_to_resume_what_it_cannot(synthetic, tmp_path, capsys):
    out = tmp_path / "run"
    _cli(synthetic, out)
    before = (out / "config.json").read_text(), (out / "checkpoints" / "step_000002" / "model.pt").read_bytes()
    capsys.readouterr()
    code, err = _cli_error(capsys, "train", "norm-only", "--source", f"gta5:{synthetic.gta5_root}", "--out", str(out))
    assert code == 2 and "holds a run; continue it with --resume" in err
    code, err = _cli_error(capsys, "train", "clan", "--source", f"gta5:{synthetic.gta5_root}", "--target",
                           f"cityscapes:{synthetic.cityscapes_root}", "--out", str(out), "--resume")
    assert code == 2 and "method: 'norm-only' → 'clan'" in err
    after = (out / "config.json").read_text(), (out / "checkpoints" / "step_000002" / "model.pt").read_bytes()
    assert before == after

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copy(out / "config.json", crashed / "config.json")
    # issue 16, case 8: a run that never saved a checkpoint; --resume and a fresh start say the same (delete it),
    # neither sends the user to the other
    for resume in (["--resume"], []):
        code, err = _cli_error(capsys, "train", "norm-only", "--source", f"gta5:{synthetic.gta5_root}", "--model",
                               "tiny", "--out", str(crashed), *resume)
        assert code == 2 and "stopped before its first checkpoint, so there is nothing to resume; delete it" in err
        assert "with --resume" not in err and "without --resume" not in err
    code, err = _cli_error(capsys, "train", "norm-only", "--source", f"gta5:{synthetic.gta5_root}", "--out",
                           str(tmp_path / "nothing"), "--resume")
    assert code == 2 and "is not a run folder" in err


def test_cli_bad_inputs_fail_before_writing_anything(synthetic, tmp_path, capsys):
    out = tmp_path / "run"
    src, tgt = f"gta5:{synthetic.gta5_root}", f"cityscapes:{synthetic.cityscapes_root}"
    wrong = tmp_path / "tiny4"
    torch.manual_seed(0)
    save_checkpoint(wrong, model_state=create_model("tiny", width=4).state_dict(),
                    model_config=create_model("tiny", width=4).config, meta={})
    bad_gta = tmp_path / "bad_gta5"
    shutil.copytree(synthetic.gta5_root, bad_gta)
    label = next((bad_gta / "labels").iterdir())
    from PIL import Image
    Image.fromarray(np.full((96, 160), 100, np.uint8)).save(label)  # 100 is no Cityscapes label id
    empty_cs = tmp_path / "empty_cs"
    (empty_cs / "leftImg8bit" / "train").mkdir(parents=True)
    cases = [
        (["dann", "--source", src], 2, "'dann' is not one of 'source-only', 'norm-only', 'clan'"),
        (["clan", "--source", src, "--target", tgt, "--model", "resnet"], 2,
         "unknown model 'resnet'; registered: deeplabv2-r101"),
        (["source-only", "--source", src, "--model", "tiny", "--init", str(tmp_path / "no.pth")], 2,
         "no such file or folder"),
        (["source-only", "--source", src, "--model", "tiny", "--init", str(wrong)], 1,
         "the backbone does not fit"),
        (["source-only", "--source", f"gta5:{bad_gta}", "--model", "tiny"], 1, "fails the dataset doctor"),
        (["source-only", "--source", f"gta5:{synthetic.cityscapes_root}", "--model", "tiny"], 1, "not a GTA5 root"),
        (["norm-only", "--source", src, "--target", f"cityscapes:{empty_cs}", "--model", "tiny"], 1, "no images"),
        (["norm-only", "--source", src, "--model", "tiny"], 2, "needs the target: --target cityscapes:ROOT"),
        (["clan", "--source", src, "--target", tgt, "--model", "deeplabv2-r101-multi-reduced", "--init", "none"], 2,
         "needs a model with 'clan' heads"),
        (["clan", "--source", src, "--target", tgt, "--set", "loss.lamda_adv=1"], 2, "did you mean loss.lambda_adv"),
        (["source-only", "--source", src, "--model", "tiny", "--device", "gpu"], 2,
         "device 'gpu': expected auto, cpu, cuda or cuda:N"),
        (["source-only", "--source", src, "--model", "tiny", "--set", "device=gpu"], 2,
         "config device='gpu' is invalid: expected auto, cpu, cuda or cuda:N"),
    ]
    for args, code, message in cases:
        got_code, err = _cli_error(capsys, "train", *args, "--out", str(out))
        assert (got_code, message in err) == (code, True), (args, err)
        assert "Traceback" not in err and not out.exists(), args


def test_a_cuda_device_on_a_machine_without_cuda_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """``--device`` is the shared option (``ftadapt.devices``) and sets the config key ``device``, as ``--set device=``
    does; a CUDA device where PyTorch sees none is a DeviceError before the dataset doctor looks at the source (this
    one is absent) and before anything is written."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    argv = ["train", "source-only", "--source", f"gta5:{tmp_path / 'absent'}", "--model", "tiny", "--out", str(out)]
    for device, given in (("cuda", ["--device", "cuda"]), ("cuda:1", ["--set", "device=cuda:1"]),
                          ("cuda:0", ["--device", "0"])):
        code, err = _cli_error(capsys, *argv, *given)
        assert code == 2 and f"device {device} asked for, but this machine has no CUDA device" in err, given
        assert "Traceback" not in err and not out.exists(), given
    code, err = _cli_error(capsys, *argv, "--device", "cuda", "--set", "device=cpu")
    assert code == 2 and "note: device: the command's own option (cuda) wins over --set (cpu)" in err


def test_the_cli_says_which_of_an_option_and_set_wins(synthetic, tmp_path, capsys):
    """Issue 16, case 13: ``--steps 2 --set steps=3`` ran 2 steps without a word."""
    argv = ["train", "source-only", "--source", f"gta5:{tmp_path / 'absent'}", "--model", "tiny", "--out",
            str(tmp_path / "run"), "--set", "data.num_workers=0"]
    code, err = _cli_error(capsys, *argv, "--steps", "2", "--set", "steps=3")
    assert code == 1 and "note: steps: the command's own option (2) wins over --set (3)" in err
    code, err = _cli_error(capsys, *argv, "--steps", "2", "--set", "steps=2")  # the same value: nothing to say
    assert code == 1 and "note:" not in err


def test_init_with_a_run_folder_says_which_folder_to_pass(synthetic, tmp_path, capsys):
    """Issue 16, case 13: ``--init RUN`` said the run folder "lacks model.pt, meta.json"."""
    donor = tmp_path / "donor"
    run(synthetic, donor, "source-only", steps=1)
    code, err = _cli_error(capsys, "train", "source-only", "--source", f"gta5:{synthetic.gta5_root}", "--model",
                           "tiny", "--init", str(donor), "--out", str(tmp_path / "run"))
    assert code == 1 and "Traceback" not in err
    assert (f"--init {donor} is a run folder; pass one of its checkpoint folders (its newest is "
            f"{donor / 'checkpoints' / 'step_000001'}; {donor / 'checkpoints' / 'last'} follows the newest)") in err
    assert not (tmp_path / "run").exists()


def test_init_from_other_heads_lists_what_starts_fresh(synthetic, tmp_path, capsys):
    """Issue 16, case 13: ``--init`` from a checkpoint with other heads re-initialised them without a word."""
    from ftadapt.models.convert import load_init_weights

    donor = tmp_path / "clan"
    torch.manual_seed(0)
    model = create_model("tiny")  # two full-ASPP heads on layer4 (CLAN layout)
    save_checkpoint(donor, model_state=model.state_dict(), model_config=model.config, meta={})
    report = load_init_weights(create_model("tiny-multi"), donor)  # aux head on layer3: other input channels
    assert report["heads"] == "initialised"
    assert report["note"].startswith(f"--init {donor}: its heads do not fit this model's multi heads (shape "
                                     "mismatches (4): layer5.conv2d_list.0.weight [19, 256, 3, 3] vs model [19, 128")
    assert report["note"].endswith("so layer5 and layer6 (16 tensors) start from a fresh initialisation instead")
    assert "note" not in load_init_weights(create_model("tiny"), donor)  # same heads: loaded, nothing to say
    result = run(synthetic, tmp_path / "run", "source-only", model="tiny-multi", init=str(donor), steps=1)
    captured = capsys.readouterr()
    assert f"note: {report['note']}" in captured.out + captured.err
    assert load_checkpoint(result.checkpoint).meta["init"]["note"] == report["note"]  # and the provenance keeps it


def test_an_r101_run_needs_its_init_or_an_explicit_none(synthetic, tmp_path, capsys):
    """Issue 16, case 15: the default R101 without --init trained from random weights without a word."""
    from ftadapt.training.loop import _check_init

    src = f"gta5:{synthetic.gta5_root}"
    code, err = _cli_error(capsys, "train", "source-only", "--source", src, "--set", "data.num_workers=0", "--out",
                           str(tmp_path / "run"))
    assert code == 2 and "model deeplabv2-r101 would start from random weights" in err
    assert ("`ftadapt convert --from deeplab-init DeepLab_resnet_pretrained_init-f81d91e8.pth --out "
            "init/deeplab-r101`, then --init init/deeplab-r101") in err and "--init none" in err
    assert not (tmp_path / "run").exists()
    _check_init(build_config({"init": "none"}))  # insisting on random weights is allowed
    _check_init(build_config({"model": "tiny"}))  # the tiny model of the tests and the demo needs no init
    result = run(synthetic, tmp_path / "none", "source-only", init="none", steps=1)  # "none" is no file to load
    assert load_checkpoint(result.checkpoint).meta["init"] == "none"


def test_the_default_loader_workers_fit_the_machine_and_say_so_once(synthetic, tmp_path, capsys, monkeypatch,
                                                                     recwarn):
    """Issue 16, case 16: the default 4 loader workers per domain made PyTorch warn that loading "may freeze" on
    every start on a 2-core machine. (A resume, which needs no --source, reads the run's value too.)"""
    from ftadapt import machine

    assert [machine.loader_workers(c) for c in (1, 2, 3, 4, 8, 9, 64)] == [0, 1, 1, 1, 3, 4, 4]
    monkeypatch.setattr(machine, "cpu_cores", lambda: 2)
    assert build_config().data.num_workers == 1
    monkeypatch.undo()
    out = tmp_path / "run"
    argv = ["train", "source-only", "--source", f"gta5:{synthetic.gta5_root}", "--model", "tiny", "--steps", "1",
            "--set", "data.source_size=160x96", "--set", "tensorboard=false", "--out", str(out)]
    main(argv)
    err = capsys.readouterr().err
    workers = machine.loader_workers()
    assert err.count("note: data.num_workers=") == 1 and f"data.num_workers={workers} loader process(es)" in err
    assert json.loads((out / "config.json").read_text())["data"]["num_workers"] == workers
    assert not [w for w in recwarn if "freeze" in str(w.message)], [str(w.message) for w in recwarn]
    main([*argv, "--resume"])  # said once: a resume keeps the run's value and says nothing
    assert "note:" not in capsys.readouterr().err
    main(["train", "source-only", "--out", str(out), "--resume"])  # no --source: a resume reads it from the run
    assert "note:" not in capsys.readouterr().err
