"""The one output rule (``ftadapt.fsutil``, issue 16): every command that writes refuses an existing target without
``--overwrite``, never writes through or replaces a symbolic link, and never writes into its own inputs — proven as a
family (every writing command × existing target, link, target inside an input) and for the primitives."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_runs import exit_code
from datatrees import make_cityscapes, make_gta5
from onnx_models import build_model
from PIL import Image

from ftadapt.cli import main
from ftadapt.commands import investigate
from ftadapt.errors import OutputError
from ftadapt.fsutil import (
    CHECKPOINT_MARKERS,
    RUN_CHECKPOINTS,
    RUN_CONFIG,
    atomic_path,
    check_new_files,
    check_target,
    remove_stale_temporaries,
    write_text_atomic,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Inputs and earlier outputs the commands are pointed at: a checkpoint, a run folder (its checkpoints linked as
    ``last``), a released-style .pth, a toy ONNX model, images, a GTA5 and a Cityscapes tree."""
    import torch

    from ftadapt.checkpoint import save_checkpoint
    from ftadapt.models.registry import create_model

    w = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)
    model = create_model("tiny")
    save_checkpoint(w / "ckpt", model_state=model.state_dict(), model_config=model.config, meta={"method": "x"})
    (w / "run" / "checkpoints").mkdir(parents=True)
    (w / "run" / "config.json").write_text("{}\n")
    save_checkpoint(w / "run" / "checkpoints" / "step_000002", model_state=model.state_dict(),
                    model_config=model.config, meta={"method": "x", "step": 2})
    (w / "run" / "checkpoints" / "last").symlink_to("step_000002", target_is_directory=True)
    (w / "pth").mkdir()
    torch.save(model.state_dict(), w / "pth" / "other.pth")
    build_model(w / "toy.onnx")
    (w / "imgs").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((6, 8, 3), 99, np.uint8)).save(w / "imgs" / f"{name}.png")
    make_gta5(w / "gta", n=2)
    make_cityscapes(w / "cs", {"train": 1, "val": 2}, size=(32, 16))
    (w / "empty").mkdir()
    (w / "notes.txt").write_text("keep me\n")
    (w / "result.json").write_text(json.dumps({"miou": 50.0, "per_class_iou": [50.0] * 19}))
    return w


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: a link's target, a file's sha256, or "dir" — what no refused command may change."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _existing(w: Path, kind: str) -> Path:
    """An existing target of the given kind inside the sandbox: a file, or a folder with a file."""
    target = w / f"existing-{kind}"
    if kind == "file":
        target.write_text("mine\n")
    else:
        target.mkdir(exist_ok=True)
        (target / "mine.txt").write_text("mine\n")
    return target


def _link(w: Path, to: Path) -> Path:
    link = w / "a-link"
    link.symlink_to(to, target_is_directory=to.is_dir())
    return link


CS = ["--data", "cityscapes:{w}/cs", "--size", "32x16"]
ANALYZE = ["--checkpoint", "{w}/ckpt", "--source", "gta5:{w}/gta", "--target", "cityscapes:{w}/cs", "--images", "1",
           "--method", "pca", "--source-size", "32x16", "--target-size", "32x16", "--workers", "0"]
# (command, its argv with {w} the sandbox and {t} the target, and how each target kind is made: "existing" → the
# target, "link" → what a link at the target points to, "inside" → a path inside (or equal to) an input.
# Link and inside-input cases run with --overwrite: even then nothing is written.
FAMILY = {
    "data synth --out": (["data", "synth", "--out", "{t}", "--n-source", "1", "--n-train", "1", "--n-val", "1"],
                         {"existing": "folder", "link": "cs"}),
    "data synth --json": (["data", "synth", "--out", "{w}/new-synth", "--json", "{t}"], {"existing": "file",
                                                                                          "link": "notes.txt"}),
    "data check --json": (["data", "check", "--dataset", "gta5", "--root", "{w}/gta", "--json", "{t}"],
                          {"existing": "file", "link": "notes.txt", "inside": "gta/report.json"}),
    "convert --out": (["convert", "--from", "clan", "{w}/pth/other.pth", "--out", "{t}"],
                      {"existing": "ckpt", "link": "run/checkpoints/step_000002", "inside": "pth"}),
    "convert --json": (["convert", "--from", "clan", "{w}/pth/other.pth", "--out", "{w}/new-ckpt", "--json", "{t}"],
                       {"existing": "file", "link": "notes.txt", "inside": "pth/other.pth"}),
    "train --out": (["train", "source-only", "--source", "gta5:{w}/gta", "--model", "tiny", "--set",
                     "data.num_workers=0", "--out", "{t}"], {"existing": "run", "link": "empty", "inside": "gta/run"}),
    "train --json": (["train", "source-only", "--source", "gta5:{w}/gta", "--model", "tiny", "--set",
                      "data.num_workers=0", "--out", "{w}/new-run", "--json", "{t}"],
                     {"existing": "file", "link": "notes.txt", "inside": "gta/summary.json"}),
    "eval --save-pred": (["eval", "--checkpoint", "{w}/ckpt", *CS, "--save-pred", "{t}"],
                         {"existing": "preds", "link": "empty", "inside": "cs/preds"}),
    "eval --json": (["eval", "--checkpoint", "{w}/ckpt", *CS, "--json", "{t}"],
                    {"existing": "file", "link": "notes.txt", "inside": "ckpt/result.json"}),
    "export --out": (["export", "{w}/ckpt", "--out", "{t}", "--no-verify", "--working-size", "32x16"],
                     {"existing": "run/checkpoints/step_000002/model.pt", "link": "run/checkpoints/last/model.pt",
                      "inside": "ckpt/model.onnx"}),
    "export --json": (["export", "{w}/ckpt", "--out", "{w}/new.onnx", "--no-verify", "--json", "{t}"],
                      {"existing": "file", "link": "notes.txt", "inside": "ckpt/export.json"}),
    "inspect --json": (["inspect", "{w}/toy.onnx", "--json", "{t}"],
                       {"existing": "file", "link": "notes.txt", "inside": "toy.onnx"}),
    "build-engine --json": (["build-engine", "{w}/toy.onnx", "--json", "{t}"],
                            {"existing": "file", "link": "notes.txt", "inside": "toy.onnx"}),
    "predict --out": (["predict", "--model", "{w}/toy.onnx", "{w}/imgs", "--device", "cpu", "--out", "{t}"],
                      {"existing": "predictions", "link": "empty", "inside": "imgs/out"}),
    "predict --json": (["predict", "--model", "{w}/toy.onnx", "{w}/imgs", "--device", "cpu", "--out",
                        "{w}/new-preds", "--json", "{t}"],
                       {"existing": "file", "link": "notes.txt", "inside": "imgs/summary.json"}),
    "bench --json": (["bench", "train-step", "--steps", "1", "--warmup", "0", "--json", "{t}"],
                     {"existing": "file", "link": "notes.txt"}),
    "investigate --json": (["investigate", "loader-speed", "--samples", "1", "--json", "{t}"],
                           {"existing": "file", "link": "notes.txt"}),
    "bench gpu --out": (["bench", "gpu", "--device", "cpu", "--tiny", "--only", "train_fp32_channels_last", "--out",
                         "{t}"],
                        {"existing": "gpu", "link": "gpu-link"}),
    "demo --out": (["demo", "--out", "{t}"], {"existing": "folder", "link": "empty"}),
    "bench accuracy --out": (["bench", "accuracy", "--model", "{w}/toy.onnx", "--data", "cityscapes:{w}/cs",
                              "--backends", "onnxruntime", "--device", "cpu", "--out", "{t}"],
                             {"existing": "folder", "link": "empty", "inside": "cs/parity"}),
    "bench latency --out": (["bench", "latency", "--model", "{w}/toy.onnx", "--checkpoints", "{w}/ckpt", "--backends",
                             "onnxruntime", "--device", "cpu", "--out", "{t}"],
                            {"existing": "folder", "link": "empty", "inside": "ckpt/latency"}),
    "report --out": (["report", "{w}/result.json", "--out", "{t}"],
                     {"existing": "file", "link": "notes.txt", "inside": "result.json"}),
    "analyze features --out": (["analyze", "features", *ANALYZE, "--out", "{t}"],
                               {"existing": "analysis", "link": "empty", "inside": "cs/analysis"}),
    "analyze features --json": (["analyze", "features", *ANALYZE, "--out", "{w}/new-analysis", "--json", "{t}"],
                                {"existing": "file", "link": "notes.txt", "inside": "ckpt/features.json"}),
    "visualize --out": (["visualize", "--checkpoint", "{w}/ckpt", *CS, "--out", "{t}"],
                        {"existing": "file", "link": "notes.txt", "inside": "cs/grid.png"}),
    "visualize --json": (["visualize", "--checkpoint", "{w}/ckpt", *CS, "--out", "{w}/new.png", "--json", "{t}"],
                         {"existing": "file", "link": "notes.txt", "inside": "ckpt/grid.json"}),
}
CASES = [(command, kind) for command, (_, kinds) in FAMILY.items() for kind in kinds]


def _target(w: Path, command: str, kind: str) -> tuple[Path, str]:
    """The target of one case (made in the sandbox) and the flag its message must name."""
    spec = FAMILY[command][1][kind]
    if kind == "inside":
        return w / spec, "never writes into what it reads"
    if kind == "link":
        if spec == "gpu-link":  # bench gpu writes OUT/gpu_bench.json: that file is the link
            (w / "gpu-out").mkdir()
            (w / "gpu-out" / "gpu_bench.json").symlink_to(w / "notes.txt")
            return w / "gpu-out", "symbolic link"
        return _link(w, w / spec), "symbolic link"
    if spec in ("file", "folder"):
        return _existing(w, spec), "--overwrite"
    if spec == "run":
        return w / "run", "--resume"
    if spec == "preds":  # an earlier prediction of one val frame
        (w / "preds").mkdir()
        (w / "preds" / "bremen_000000_000019.png").write_bytes(b"earlier")
        return w / "preds", "--overwrite"
    if spec == "predictions":
        (w / "preds").mkdir()
        (w / "preds" / "a_color.png").write_bytes(b"earlier")
        return w / "preds", "--overwrite"
    if spec == "analysis":  # an earlier analysis: its files are replaced only with --overwrite
        (w / "analysis").mkdir()
        (w / "analysis" / "features.json").write_text("{}\n")
        return w / "analysis", "--overwrite"
    if spec == "gpu":
        (w / "gpu-out").mkdir()
        (w / "gpu-out" / "gpu_bench.json").write_text("{}\n")
        return w / "gpu-out", "--overwrite"
    return w / spec, "--overwrite"  # an existing input-free file or folder of the world


@pytest.mark.parametrize("command, kind", CASES, ids=[f"{c} × {k}" for c, k in CASES])
def test_every_writing_command_refuses_existing_links_and_inputs(world, tmp_path, command, kind, capsys):
    """Issue 16: one rule for every command that writes. The refusal is one line naming the target and the fix
    (the flag that allows replacing it, or why not even that helps), before any work, and changes nothing."""
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)  # a copy: the module's world stays pristine for the next case
    target, fix = _target(w, command, kind)
    before = _snapshot(w)
    argv = [a.format(w=w, t=target) for a in FAMILY[command][0]]
    entry = investigate.main if command.startswith("investigate ") else main
    code = exit_code(argv[entry is investigate.main:] + (["--overwrite"] if kind != "existing" else []), entry)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, (argv, err)
    assert len(errors) == 1 and "Traceback" not in err, err
    assert str(target) in errors[0] and fix in errors[0], errors[0]
    assert _snapshot(w) == before, "a refused command changed the sandbox"


def test_the_family_covers_every_command_that_writes():
    """A new writing command must join the family: every command with --out, --save-pred or --json is in it."""
    import click

    from ftadapt.cli import cli

    def commands(group, prefix=""):
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                yield from commands(command, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", command

    covered = {c.split(" --")[0] for c in FAMILY}
    for path, command in [*commands(cli), *commands(investigate.investigations, "investigate ")]:
        outputs = {p.opts[0] for p in command.params if p.opts[0] in ("--out", "--save-pred", "--json")}
        if not outputs:
            continue
        assert "--overwrite" in {p.opts[0] for p in command.params}, f"{path} writes but has no --overwrite"
        group = path.split()[0]
        name = group if group in ("bench", "investigate") and outputs == {"--json"} else path
        assert name in covered, f"{path} writes {outputs} but is not in FAMILY"


# The primitives -------------------------------------------------------------------------------------------------


def test_atomic_path_refuses_what_exists_unless_asked_and_links_always(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "one")
    with pytest.raises(OutputError, match=r"a.txt already exists; pass --overwrite"):
        write_text_atomic(tmp_path / "a.txt", "two")
    write_text_atomic(tmp_path / "a.txt", "two", overwrite=True)
    assert (tmp_path / "a.txt").read_text() == "two"
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    with pytest.raises(OutputError, match="link.txt is a symbolic link .*a.txt.*give the real path"):
        write_text_atomic(tmp_path / "link.txt", "three", overwrite=True)
    assert (tmp_path / "a.txt").read_text() == "two" and (tmp_path / "link.txt").is_symlink()
    (tmp_path / "empty").mkdir()  # an empty folder holds nothing to lose
    with atomic_path(tmp_path / "empty") as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("x")
    assert (tmp_path / "empty" / "x").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "empty", "link.txt"]  # no temporaries left


def test_a_folder_link_is_never_replaced_even_with_overwrite(tmp_path):
    """Issue 16, case 2 at its root: replacing a link to a run's checkpoint printed a traceback and left the link's
    name holding other weights plus a ``.last.old`` link behind."""
    (tmp_path / "step_000002").mkdir()
    (tmp_path / "step_000002" / "model.pt").write_text("weights")
    (tmp_path / "last").symlink_to("step_000002", target_is_directory=True)
    with pytest.raises(OutputError, match="last is a symbolic link"), atomic_path(tmp_path / "last",
                                                                                  overwrite=True) as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "step_000002"]
    assert os.readlink(tmp_path / "last") == "step_000002"


def test_check_target_inputs_and_folders_written_whole(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.png").write_text("x")
    with pytest.raises(OutputError, match="is the input"):
        check_target(tmp_path / "in", overwrite=True, inputs=[tmp_path / "in"], merge=True)
    with pytest.raises(OutputError, match="lies inside the input"):
        check_target(tmp_path / "in" / "sub" / "out", overwrite=True, inputs=[tmp_path / "in"], merge=True)
    with pytest.raises(OutputError, match="would replace or mix with the input"):
        check_target(tmp_path, overwrite=True, inputs=[tmp_path / "in"], merge=True)
    # a folder that merely holds an input file may receive outputs; the planned files are checked one by one
    assert check_target(tmp_path / "in", overwrite=False, inputs=[tmp_path / "in" / "x.png"], merge=True)
    with pytest.raises(OutputError, match="x.png would replace an input"):
        check_new_files([tmp_path / "in" / "x.png"], overwrite=True, inputs=[tmp_path / "in" / "x.png"])
    with pytest.raises(OutputError, match=r"already exists \(1 of the 2 outputs do\); pass --overwrite"):
        check_new_files([tmp_path / "in" / "x.png", tmp_path / "in" / "y.png"], overwrite=False)
    (tmp_path / "ckpt").mkdir()
    for name in CHECKPOINT_MARKERS:
        (tmp_path / "ckpt" / name).write_text("x")
    with pytest.raises(OutputError, match="lies inside the checkpoint folder .*written only whole"):
        check_target(tmp_path / "ckpt" / "model.pt", overwrite=True)
    assert check_target(tmp_path / "ckpt", overwrite=True)  # replacing a whole checkpoint folder is allowed
    (tmp_path / "run" / RUN_CHECKPOINTS).mkdir(parents=True)
    (tmp_path / "run" / RUN_CONFIG).write_text("{}")
    with pytest.raises(OutputError, match="the checkpoints of the run in .*only `ftadapt train` writes there"):
        check_target(tmp_path / "run" / RUN_CHECKPOINTS / "step_000009", overwrite=True)


def test_the_rule_knows_the_checkpoint_layout_by_its_real_names():
    from ftadapt.checkpoint import META_FILE, MODEL_FILE
    from ftadapt.run_folder import CHECKPOINTS, CONFIG_FILE

    assert set(CHECKPOINT_MARKERS) == {MODEL_FILE, META_FILE}
    assert (RUN_CHECKPOINTS, RUN_CONFIG) == (CHECKPOINTS, CONFIG_FILE)


def test_stale_temporaries_of_killed_writes_are_found_and_removed(tmp_path):
    (tmp_path / ".step_000006.k2j3.tmp").mkdir()  # a checkpoint folder half written when the process was killed
    (tmp_path / ".step_000006.k2j3.tmp" / "model.pt").write_text("half")
    (tmp_path / ".step_000004.old").mkdir()  # a replaced folder whose deletion was interrupted
    (tmp_path / "step_000004").mkdir()
    (tmp_path / ".other.tmp").write_text("not ours")
    removed = remove_stale_temporaries(tmp_path, "step_*")
    assert sorted(p.name for p in removed) == [".step_000004.old", ".step_000006.k2j3.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp", "step_000004"]


def test_the_demo_reruns_into_its_own_folder_but_not_into_anyone_elses(tmp_path):
    """Rerunning the demo into its earlier output keeps working; a folder it did not write needs --overwrite, which
    adds the demo there and removes nothing of the owner's."""
    from ftadapt.demo.state import STATE_FILE, DemoState

    DemoState.open(tmp_path / "new", {"seed": 0}, entries=("runs",), overwrite=False)
    assert (tmp_path / "new" / STATE_FILE).is_file()  # marked from the start: an interrupted demo can rerun
    (tmp_path / "new" / "runs").mkdir()
    DemoState.open(tmp_path / "new", {"seed": 0}, entries=("runs",), overwrite=False)  # its own earlier output
    mine = _existing(tmp_path, "folder")
    with pytest.raises(OutputError, match=f"--out {mine} is not empty and holds no demo .*pass --overwrite"):
        DemoState.open(mine, {"seed": 0}, entries=("runs",), overwrite=False)
    assert sorted(p.name for p in mine.iterdir()) == ["mine.txt"]
    DemoState.open(mine, {"seed": 0}, entries=("runs",), overwrite=True)
    assert sorted(p.name for p in mine.iterdir()) == [STATE_FILE, "mine.txt"]


def test_export_cannot_overwrite_a_checkpoints_weights(world, tmp_path, capsys, monkeypatch):
    """Issue 16, case 3: ``export CKPT --out RUN/checkpoints/step_N/model.pt --no-verify`` replaced the weights of a
    run's checkpoint (exit 0). Without --overwrite the file exists; with it, the target lies in a folder written only
    whole."""
    from ftadapt.export import onnx_export

    def copy_instead_of_export(graph, destination, info, *, external):  # the exporter's cost is not under test
        shutil.copy(world / "toy.onnx", destination)

    monkeypatch.setattr(onnx_export, "_torch_export", copy_instead_of_export)
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    weights = w / "run" / "checkpoints" / "step_000002" / "model.pt"
    before = weights.read_bytes()
    argv = ["export", w / "ckpt", "--out", weights, "--no-verify", "--working-size", "32x16"]
    assert exit_code(argv) == 2 and "model.pt already exists; pass --overwrite" in capsys.readouterr().err
    assert exit_code([*argv, "--overwrite"]) == 2
    assert "lies inside the checkpoint folder" in capsys.readouterr().err and weights.read_bytes() == before
    assert exit_code(["export", w / "ckpt", "--out", w / "fresh.onnx", "--no-verify", "--working-size", "32x16"]) == 0
    assert exit_code(["export", w / "ckpt", "--out", w / "fresh.onnx", "--no-verify", "--working-size", "32x16",
                      "--overwrite"]) == 0  # an earlier export is replaced when asked
