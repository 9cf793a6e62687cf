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
    atomic_path,
    check_new_files,
    check_target,
    refuse_overlap,
    remove_stale_temporaries,
    write_text_atomic,
)
from ftadapt.layout import CHECKPOINTS, CONFIG_FILE, META_FILE, MODEL_FILE, mark_output


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
            elif not path.is_file():
                out[rel] = "special"  # a named pipe: reading it would wait for a writer
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _existing(w: Path, kind: str, suffix: str = "") -> Path:
    """An existing target of the given kind inside the sandbox: a file, or a folder with a file."""
    target = w / f"existing-{kind}{suffix}"
    if kind == "file":
        target.write_text("mine\n")
    else:
        target.mkdir(exist_ok=True)
        (target / "mine.txt").write_text("mine\n")
    return target


def _link(w: Path, to: Path, suffix: str = "") -> Path:
    link = w / f"a-link{suffix}"
    link.symlink_to(to, target_is_directory=to.is_dir())
    return link


CS = ["--data", "cityscapes:{w}/cs", "--size", "32x16"]
ANALYZE = ["--checkpoint", "{w}/ckpt", "--source", "gta5:{w}/gta", "--target", "cityscapes:{w}/cs", "--images", "1",
           "--method", "pca", "--source-size", "32x16", "--target-size", "32x16", "--workers", "0"]
# Targets every output may be pointed at, with --overwrite: a named pipe, and a path inside the run folder of the
# world (``run/config.json`` is a file there; ``run/new`` a new path) — issue 23's cases 3 and 7.
FILE_TARGETS = {"fifo": "fifo", "in-run": "run/config.json"}
FOLDER_TARGETS = {"fifo": "fifo", "in-run": "run/new"}
# (command, its argv with {w} the sandbox and {t} the target, and how each target kind is made: "existing" → the
# target, "link" → what a link at the target points to, "inside" → a path inside (or equal to) an input, "overlap" →
# a path the same as or inside the command's other output, "foreign" → a folder of someone else's files there.
# Every case but "existing" runs with --overwrite: even then nothing is written.
FAMILY = {
    "data synth --out": (["data", "synth", "--out", "{t}", "--n-source", "1", "--n-train", "1", "--n-val", "1"],
                         {"existing": "synth", "link": "cs", "foreign": "folder", **FOLDER_TARGETS}),
    "data synth --json": (["data", "synth", "--out", "{w}/new-synth", "--json", "{t}"],
                          {"existing": "file", "link": "notes.txt", "overlap": "new-synth/summary.json",
                           **FILE_TARGETS}),
    "data check --json": (["data", "check", "--dataset", "gta5", "--root", "{w}/gta", "--json", "{t}"],
                          {"existing": "file", "link": "notes.txt", "inside": "gta/report.json", **FILE_TARGETS}),
    "convert --out": (["convert", "--from", "clan", "{w}/pth/other.pth", "--out", "{t}"],
                      {"existing": "ckpt", "link": "run/checkpoints/step_000002", "inside": "pth",
                       "foreign": "folder", **FOLDER_TARGETS}),
    "convert --json": (["convert", "--from", "clan", "{w}/pth/other.pth", "--out", "{w}/cv14", "--json", "{t}"],
                       {"existing": "file", "link": "notes.txt", "inside": "pth/other.pth",
                        "overlap": "cv14/meta.json", **FILE_TARGETS}),
    "train --out": (["train", "source-only", "--source", "gta5:{w}/gta", "--model", "tiny", "--set",
                     "data.num_workers=0", "--out", "{t}"],
                    {"existing": "run", "link": "empty", "inside": "gta/run", **FOLDER_TARGETS}),
    "train --json": (["train", "source-only", "--source", "gta5:{w}/gta", "--model", "tiny", "--set",
                      "data.num_workers=0", "--out", "{w}/runC", "--json", "{t}"],
                     {"existing": "file", "link": "notes.txt", "inside": "gta/summary.json",
                      "overlap": "runC/config.json", **FILE_TARGETS}),
    "eval --save-pred": (["eval", "--checkpoint", "{w}/ckpt", *CS, "--save-pred", "{t}"],
                         {"existing": "preds", "link": "empty", "inside": "cs/preds", **FOLDER_TARGETS}),
    "eval --json": (["eval", "--checkpoint", "{w}/ckpt", *CS, "--save-pred", "{w}/new-preds", "--json", "{t}"],
                    {"existing": "file", "link": "notes.txt", "inside": "ckpt/result.json",
                     "overlap": "new-preds", "in-run": "run/metrics.jsonl", "fifo": "fifo"}),
    "export --out": (["export", "{w}/ckpt", "--out", "{t}", "--no-verify", "--working-size", "32x16"],
                     {"existing": "run/checkpoints/step_000002/model.pt", "link": "run/checkpoints/last/model.pt",
                      "inside": "ckpt/model.onnx", "in-run": "run/x.onnx", "fifo": "fifo"}),
    "export --json": (["export", "{w}/ckpt", "--out", "{w}/new.onnx", "--no-verify", "--json", "{t}"],
                      {"existing": "file", "link": "notes.txt", "inside": "ckpt/export.json",
                       "overlap": "new.onnx.data", **FILE_TARGETS}),
    "inspect --json": (["inspect", "{w}/toy.onnx", "--json", "{t}"],
                       {"existing": "file", "link": "notes.txt", "inside": "toy.onnx", **FILE_TARGETS}),
    "build-engine --json": (["build-engine", "{w}/toy.onnx", "--json", "{t}"],
                            {"existing": "file", "link": "notes.txt", "inside": "toy.onnx", **FILE_TARGETS}),
    "predict --out": (["predict", "--model", "{w}/toy.onnx", "{w}/imgs", "--device", "cpu", "--out", "{t}"],
                      {"existing": "predictions", "link": "empty", "inside": "imgs/out", **FOLDER_TARGETS}),
    "predict --json": (["predict", "--model", "{w}/toy.onnx", "{w}/imgs", "--device", "cpu", "--out",
                        "{w}/new-preds", "--json", "{t}"],
                       {"existing": "file", "link": "notes.txt", "inside": "imgs/summary.json",
                        "overlap": "new-preds/summary.json", **FILE_TARGETS}),
    "bench --json": (["bench", "train-step", "--steps", "1", "--warmup", "0", "--json", "{t}"],
                     {"existing": "file", "link": "notes.txt", **FILE_TARGETS}),
    "investigate --json": (["investigate", "loader-speed", "--samples", "1", "--json", "{t}"],
                           {"existing": "file", "link": "notes.txt", **FILE_TARGETS}),
    "bench gpu --out": (["bench", "gpu", "--device", "cpu", "--tiny", "--only", "train_fp32_channels_last", "--out",
                         "{t}"],
                        {"existing": "gpu", "link": "gpu-link", **FOLDER_TARGETS}),
    "demo --out": (["demo", "--out", "{t}"], {"existing": "folder", "link": "empty", "foreign": "demo-files",
                                              **FOLDER_TARGETS}),
    "bench accuracy --out": (["bench", "accuracy", "--model", "{w}/toy.onnx", "--data", "cityscapes:{w}/cs",
                              "--backends", "onnxruntime", "--device", "cpu", "--out", "{t}"],
                             {"existing": "bench", "link": "empty", "inside": "cs/parity", "foreign": "folder",
                              **FOLDER_TARGETS}),
    "bench accuracy --json": (["bench", "accuracy", "--model", "{w}/toy.onnx", "--data", "cityscapes:{w}/cs",
                               "--backends", "onnxruntime", "--device", "cpu", "--out", "{w}/acc", "--json", "{t}"],
                              {"overlap": "acc/results.json"}),
    "bench latency --out": (["bench", "latency", "--model", "{w}/toy.onnx", "--checkpoints", "{w}/ckpt", "--backends",
                             "onnxruntime", "--device", "cpu", "--out", "{t}"],
                            {"existing": "bench", "link": "empty", "inside": "ckpt/latency", "foreign": "folder",
                             **FOLDER_TARGETS}),
    "report --out": (["report", "{w}/result.json", "--out", "{t}"],
                     {"existing": "file", "link": "notes.txt", "inside": "result.json", "in-run": "run/table.md",
                      "fifo": "fifo"}),
    "analyze features --out": (["analyze", "features", *ANALYZE, "--out", "{t}"],
                               {"existing": "analysis", "link": "empty", "inside": "cs/analysis", **FOLDER_TARGETS}),
    "analyze features --json": (["analyze", "features", *ANALYZE, "--out", "{w}/new-analysis", "--json", "{t}"],
                                {"existing": "file", "link": "notes.txt", "inside": "ckpt/features.json",
                                 "overlap": "new-analysis/features.json", **FILE_TARGETS}),
    "visualize --out": (["visualize", "--checkpoint", "{w}/ckpt", *CS, "--out", "{t}"],
                        {"existing": "file", "link": "notes.txt", "inside": "cs/grid.png", "in-run": "run/grid.png",
                         "fifo": "fifo"}),
    "visualize --json": (["visualize", "--checkpoint", "{w}/ckpt", *CS, "--out", "{w}/new.png", "--json", "{t}"],
                         {"existing": "file", "link": "notes.txt", "inside": "ckpt/grid.json", "overlap": "new.png",
                          **FILE_TARGETS}),
}
CASES = [(command, kind) for command, (_, kinds) in FAMILY.items() for kind in kinds]
FIX = {"inside": "never writes into what it reads", "link": "symbolic link", "fifo": "is a named pipe",
       "in-run": "the run folder", "overlap": "must be separate", "foreign": "did not write"}


def _target(w: Path, command: str, kind: str) -> tuple[Path, str]:
    """The target of one case (made in the sandbox) and what its message must say."""
    spec = FAMILY[command][1][kind]
    suffix = ".png" if command == "visualize --out" else ""  # a figure's format is its suffix's
    if kind == "link":
        if spec == "gpu-link":  # bench gpu writes OUT/gpu_bench.json: that file is the link
            (w / "gpu-out").mkdir()
            (w / "gpu-out" / "gpu_bench.json").symlink_to(w / "notes.txt")
            return w / "gpu-out", FIX[kind]
        return _link(w, w / spec, suffix), FIX[kind]
    if kind == "fifo":
        os.mkfifo(w / f"fifo{suffix}")
        return w / f"fifo{suffix}", FIX[kind]
    if spec == "demo-files":  # a user's folder holding files of the names the demo writes
        (w / "user").mkdir()
        for name in ("report.md", "results.json"):
            (w / "user" / name).write_text("the user's own\n")
        return w / "user", "not the demo's"
    if kind == "foreign" or spec in ("file", "folder"):
        return _existing(w, spec, suffix), FIX.get(kind, "--overwrite")
    if kind in FIX:
        return w / spec, FIX[kind]
    if spec == "run":
        return w / "run", "--resume"
    if spec in ("synth", "bench"):  # an earlier output of the command itself, marked as ftadapt's
        (w / "earlier").mkdir()
        mark_output(w / "earlier", "an earlier run")
        return w / "earlier", "--overwrite"
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
        check_target(tmp_path / "in", overwrite=True, inputs=[tmp_path / "in"], kind="merge")
    with pytest.raises(OutputError, match="lies inside the input"):
        check_target(tmp_path / "in" / "sub" / "out", overwrite=True, inputs=[tmp_path / "in"], kind="merge")
    with pytest.raises(OutputError, match="would replace or mix with the input"):
        check_target(tmp_path, overwrite=True, inputs=[tmp_path / "in"], kind="merge")
    # a folder that merely holds an input file may receive outputs; the planned files are checked one by one
    assert check_target(tmp_path / "in", overwrite=False, inputs=[tmp_path / "in" / "x.png"], kind="merge")
    with pytest.raises(OutputError, match="x.png would replace an input"):
        check_new_files([tmp_path / "in" / "x.png"], overwrite=True, inputs=[tmp_path / "in" / "x.png"])
    with pytest.raises(OutputError, match=r"already exists \(1 of the 2 outputs do\); pass --overwrite"):
        check_new_files([tmp_path / "in" / "x.png", tmp_path / "in" / "y.png"], overwrite=False)
    (tmp_path / "ckpt").mkdir()
    for name in (MODEL_FILE, META_FILE):
        (tmp_path / "ckpt" / name).write_text("x")
    with pytest.raises(OutputError, match="lies inside the checkpoint folder .*only whole, even with --overwrite"):
        check_target(tmp_path / "ckpt" / "model.pt", overwrite=True)
    # replacing a whole checkpoint folder is allowed, filling it with anything else is not
    assert check_target(tmp_path / "ckpt", overwrite=True, kind="folder")
    with pytest.raises(OutputError, match="is the checkpoint folder"):
        check_target(tmp_path / "ckpt", overwrite=True, kind="merge")
    (tmp_path / "run" / CHECKPOINTS).mkdir(parents=True)
    (tmp_path / "run" / CONFIG_FILE).write_text("{}")
    for inside in (CHECKPOINTS + "/step_000009", CONFIG_FILE, "eval.json", "tb/x"):
        with pytest.raises(OutputError, match="lies inside the run folder .*only `ftadapt train` writes"):
            check_target(tmp_path / "run" / inside, overwrite=True)
    assert check_target(tmp_path / "run", overwrite=False, kind="run")  # train --out: a resume continues it


def test_overwrite_replaces_only_what_ftadapt_wrote(tmp_path, monkeypatch):
    """Issue 23, cases 5 and 7: a folder of someone else's files, the folder the command runs in (or one holding
    it), a named pipe and a device are never replaced, with or without --overwrite; an earlier output is."""
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match="ftadapt did not write .*never replaced, even with --overwrite"):
        check_target(tmp_path / "user", overwrite=True, kind="folder")
    with pytest.raises(OutputError, match="ftadapt did not write"), atomic_path(tmp_path / "user",
                                                                                overwrite=True) as tmp:
        tmp.mkdir()  # the rule holds at the moment of writing too
    assert [p.name for p in (tmp_path / "user").iterdir()] == ["thesis.tex"]
    (tmp_path / "earlier").mkdir()
    mark_output(tmp_path / "earlier", "a test")
    assert check_target(tmp_path / "earlier", overwrite=True, kind="folder")
    with pytest.raises(OutputError, match="earlier already exists; pass --overwrite"):
        check_target(tmp_path / "earlier", overwrite=False, kind="folder")
    monkeypatch.chdir(tmp_path / "earlier")
    for given in (".", "..", "../earlier"):
        with pytest.raises(OutputError, match="the folder this command runs in, or holds it"):
            check_target(given, overwrite=True, kind="folder")
    assert check_target(".", overwrite=False, kind="merge") == tmp_path / "earlier"  # adding files to it is fine
    os.mkfifo(tmp_path / "pipe")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="pipe is a named pipe, not a regular file .*'-'"):
            check_target(tmp_path / "pipe", overwrite=overwrite, what="--json")
    with pytest.raises(OutputError, match="/dev/null is a character device.*even with --overwrite.*'-'"):
        check_target("/dev/null", overwrite=True, what="--json")
    (tmp_path / "to-pipe").symlink_to(tmp_path / "pipe")  # what /dev/stdout is when the output is piped
    with pytest.raises(OutputError, match="to-pipe is a link to a named pipe .*for standard output give '-'"):
        check_target(tmp_path / "to-pipe", overwrite=True, what="--json")
    with pytest.raises(OutputError, match="/dev/null is a character device.*a new folder$"):
        check_target("/dev/null", overwrite=True, kind="merge")
    with pytest.raises(OutputError, match="--json '' is an empty path; .*'-' is standard output"):
        check_target("", overwrite=True, what="--json")
    with pytest.raises(OutputError, match="is a folder; give the path of a file"):
        check_target(tmp_path / "user", overwrite=True)
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(OutputError, match="a.json is a file; give a folder"):
        check_target(tmp_path / "a.json", overwrite=True, kind="folder")


def test_the_outputs_of_one_command_never_overlap(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refuse_overlap(("--out", "a"), ("--json", "b.json"), ("--json", None), ("--json", "-"))
    with pytest.raises(OutputError, match="--out run and --json .*run/config.json overlap .*must be separate"):
        refuse_overlap(("--out", "run"), ("--json", tmp_path / "run" / "config.json"))
    with pytest.raises(OutputError, match="are the same path"):
        refuse_overlap(("--out", "t.md"), ("--out", tmp_path / "sub" / ".." / "t.md"))
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    with pytest.raises(OutputError, match="are the same path"):
        refuse_overlap(("--save-pred", "real/p"), ("--json", "alias/p"))


def test_a_json_is_checked_again_when_it_is_written(tmp_path):
    """Issue 23, case 2: the target was checked before its folder existed and never again; what the work made of
    its folder (here: a checkpoint) is seen at write time."""
    from ftadapt.commands.common import check_json, emit

    target = tmp_path / "later" / "meta.json"
    check_json(str(target), True)
    (tmp_path / "later").mkdir()
    for name in (MODEL_FILE, META_FILE):
        (tmp_path / "later" / name).write_text("the checkpoint's own")
    with pytest.raises(OutputError, match="lies inside the checkpoint folder"):
        emit({"x": 1}, str(target), overwrite=True)
    assert (tmp_path / "later" / META_FILE).read_text() == "the checkpoint's own"


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


def test_a_run_folder_named_as_input_is_never_written(world, tmp_path, capsys):
    """Issue 23, case 3: only the resolved checkpoint counted as the input, so the run folder the user named was
    written into: its config.json (a resume then fails) and its metrics.jsonl replaced, an export put inside it."""
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    before = _snapshot(w)
    for argv in (["eval", "--checkpoint", w / "run", *[a.format(w=w) for a in CS], "--json", w / "run" / "config.json"],
                 ["eval", "--checkpoint", w / "run", *[a.format(w=w) for a in CS], "--json",
                  w / "run" / "metrics.jsonl"],
                 ["export", w / "run", "--out", w / "run" / "x.onnx", "--no-verify"]):
        assert exit_code([*argv, "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert "never writes into what it reads" in err or "lies inside the run folder" in err, err
    assert _snapshot(w) == before


def test_a_bench_never_replaces_the_folder_it_runs_in(world, tmp_path, capsys, monkeypatch):
    """Issue 23, case 5 and item 9: ``bench latency --out ../cwd --overwrite`` from inside cwd emptied it, and
    ``--out .`` measured everything, then failed on an empty name. Both are refused before any measuring."""
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    (w / "cwd").mkdir()
    mark_output(w / "cwd", "an earlier bench")  # even the bench's own earlier output, while the user works in it
    (w / "cwd" / "notes.md").write_text("the user's notes\n")
    monkeypatch.chdir(w / "cwd")
    before = _snapshot(w)
    for out in ("../cwd", "."):
        argv = ["bench", "latency", "--model", w / "toy.onnx", "--backends", "onnxruntime", "--device", "cpu",
                "--out", out, "--overwrite"]
        assert exit_code(argv) == 2
        err = capsys.readouterr().err
        assert "the folder this command runs in, or holds it" in err and "latency" not in err.split("error:")[0]
    assert _snapshot(w) == before


def test_two_runs_into_one_folder_at_once_are_told_so(synthetic, tmp_path, capsys):
    """Issue 23: the second of two runs started into one folder was offered --overwrite, which does not apply to run
    folders. A run holds its folder while it writes; the second start names the other run."""
    from ftadapt.errors import UsageError
    from ftadapt.training.prepare import RunLock

    busy = tmp_path / "busy"
    busy.mkdir()
    other = RunLock()
    other.acquire(busy)  # another `ftadapt train` holds the folder
    try:
        with pytest.raises(UsageError, match="another `ftadapt train` is writing this run folder right now"):
            RunLock().acquire(busy)
        argv = ["train", "source-only", "--source", f"gta5:{synthetic.gta5_root}", "--model", "tiny", "--steps", "1",
                "--set", "data.num_workers=0", "--set", "check_data=false", "--out", busy]
        assert exit_code(argv) == 2
        err = capsys.readouterr().err
        assert "another `ftadapt train` is writing this run folder" in err and "--overwrite" not in err, err
    finally:
        other.release()
    assert list(busy.iterdir()) == []
    RunLock().acquire(busy)  # released: free again (the lock ends with its holder)
