"""Files a careless (or hostile) user hands to ftadapt: ONNX models whose external data points out of their folder,
empty / random / cut ONNX files, an opset the exporter cannot write, and binary files given where text is expected.
Each is refused with one line that names the file, the problem and the fix — never a traceback, and for models
before any file outside the model's folder is opened."""
from __future__ import annotations

import builtins
import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_runs import exit_code
from onnx_models import build_model, expected_labels
from PIL import Image

from ftadapt import devices
from ftadapt.artifact import ArtifactError
from ftadapt.config import read_config_file
from ftadapt.errors import UsageError
from ftadapt.runtime import segmenter
from ftadapt.runtime.onnx_file import ModelFile, read_model_file

onnx = pytest.importorskip("onnx")
CPU = {"backend": "onnxruntime", "device": "cpu"}


def _one_error_line(capsys) -> str:
    """The one line a refused command printed on stderr."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _set_locations(path: Path, location: str | None) -> None:
    """Rewrite the ``location`` of every external tensor of the model at ``path`` (None: drop the entry)."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        entries = [(e.key, e.value) for e in tensor.external_data if e.key != "location"]
        del tensor.external_data[:]
        if location is not None:
            entries.insert(0, ("location", location))
        for key, value in entries:
            tensor.external_data.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())


@pytest.fixture
def opened(monkeypatch):
    """Every file opened from Python while the test runs, resolved (``open``, ``io.open`` and so ``Path.open``)."""
    seen: list[Path] = []
    real = builtins.open

    def spy(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            seen.append(Path(os.path.realpath(file)))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)
    return seen


@pytest.fixture
def no_backend(monkeypatch):
    """Fail the test if a backend is opened or the model is hashed (both read the external data)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the model reached a backend or the engine-cache hash")

    monkeypatch.setattr(segmenter, "OrtBackend", forbidden)
    monkeypatch.setattr(segmenter, "TrtBackend", forbidden)
    monkeypatch.setattr(ModelFile, "sha256", forbidden)


def _escaping_model(tmp_path: Path, how: str) -> tuple[Path, Path, str]:
    """A toy model with external weights whose location leaves its folder ``how``: (model, outside file, location)."""
    model = build_model(tmp_path / "model" / "m.onnx", external_data=True)
    outside = tmp_path / "outside.bin"
    outside.write_bytes((tmp_path / "model" / "m.onnx.data").read_bytes())
    if how == "dotdot":
        location = "../outside.bin"
    elif how == "absolute":
        location = str(outside)
    else:  # a link beside the model, named as the data file, that points out of the folder
        location = "m.onnx.data"
        (tmp_path / "model" / "m.onnx.data").unlink()
        (tmp_path / "model" / "m.onnx.data").symlink_to(outside)
    _set_locations(model, location)
    return model, outside, location


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_external_data_outside_the_folder_is_refused_everywhere(tmp_path, how, monkeypatch, capsys, opened,
                                                                no_backend):
    model, outside, location = _escaping_model(tmp_path, how)
    opened.clear()  # the set-up wrote the outside file
    with pytest.raises(ArtifactError) as caught:
        read_model_file(model)
    message = str(caught.value)
    assert "tensor 'w'" in message and repr(location) in message and "re-export the model" in message
    assert ("absolute path" if how == "absolute" else "outside the model's folder") in message
    if how == "symlink":
        assert "through a symbolic link" in message
    with pytest.raises(ArtifactError, match="tensor 'w'"):
        segmenter.Segmenter(model, **CPU)

    assert exit_code(["inspect", model]) == 1
    assert repr(location) in _one_error_line(capsys)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "a.png")
    assert exit_code(["predict", "--model", model, tmp_path / "a.png", "--out", tmp_path / "out", *["--backend",
                      "onnxruntime", "--device", "cpu"]]) == 1
    assert repr(location) in _one_error_line(capsys)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(devices, "cuda_device_count", lambda: (0, "no NVIDIA driver"))
    assert exit_code(["build-engine", model, "--cache", tmp_path / "engines"]) == 1
    assert repr(location) in _one_error_line(capsys)
    assert outside not in opened and not (tmp_path / "out").exists() and not (tmp_path / "engines").exists()


def _external_tensor(name: str, location: str | None):
    tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=[1])
    tensor.data_location = onnx.TensorProto.EXTERNAL
    if location is not None:
        tensor.external_data.add(key="location", value=location)
    return tensor


def _model_hiding_a_tensor(where: str, location: str | None):
    """A model (not meant to run) whose only external tensor sits ``where``: not among the main graph's initializers."""
    from onnx import helper

    out = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]
    constant = helper.make_node("Constant", [], ["y"], value=_external_tensor("hidden", location))
    graph = helper.make_graph([constant], "main", [], out)
    functions = []
    if where == "subgraph":
        branch = helper.make_graph([helper.make_node("Identity", ["hidden"], ["y"])], "branch", [], out,
                                   initializer=[_external_tensor("hidden", location)])
        plain = helper.make_graph([helper.make_node("Constant", [], ["y"], value_float=1.0)], "plain", [], out)
        cond = helper.make_tensor("cond", onnx.TensorProto.BOOL, [], [True])
        graph = helper.make_graph([helper.make_node("If", ["cond"], ["y"], then_branch=plain, else_branch=branch)],
                                  "main", [], out, initializer=[cond])
    elif where == "sparse_initializer":
        indices = helper.make_tensor("hidden_indices", onnx.TensorProto.INT64, [1], [0])
        sparse = helper.make_sparse_tensor(_external_tensor("hidden", location), indices, [4])
        graph = helper.make_graph([helper.make_node("Identity", ["hidden"], ["y"])], "main", [], out,
                                  sparse_initializer=[sparse])
    elif where == "function":
        functions = [helper.make_function("local", "f", [], ["y"], [constant], [helper.make_opsetid("", 20)])]
        graph = helper.make_graph([helper.make_node("f", [], ["y"], domain="local")], "main", [], out)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("local", 1)],
                              functions=functions)
    return model.SerializeToString()


@pytest.mark.parametrize("where", ["constant", "subgraph", "sparse_initializer", "function"])
def test_every_external_tensor_is_checked_not_only_the_main_initializers(tmp_path, where):
    path = tmp_path / "model" / "m.onnx"
    path.parent.mkdir()
    path.write_bytes(_model_hiding_a_tensor(where, "../../etc/passwd"))
    with pytest.raises(ArtifactError, match=r"tensor 'hidden' keeps its data at '\.\./\.\./etc/passwd'"):
        read_model_file(path)
    path.write_bytes(_model_hiding_a_tensor(where, "hidden.bin"))  # inside: listed, so it is hashed and copied
    assert read_model_file(path).data_files == (path.parent / "hidden.bin",)


@pytest.mark.parametrize("location, problem", [
    ("", "the empty or invalid location ''"),
    ("  ", "the empty or invalid location '  '"),
    (None, "states no location"),
    (".", "resolves to"),
    ("C:\\weights\\m.data", "absolute path"),
])
def test_empty_or_meaningless_locations_are_refused(tmp_path, location, problem):
    model = build_model(tmp_path / "m.onnx", external_data=True)
    _set_locations(model, location)
    with pytest.raises(ArtifactError, match=f"tensor 'w'.*{problem}.*re-export"):
        read_model_file(model)


def test_data_inside_the_folder_still_runs(tmp_path):
    """A subfolder, a link to a file in the folder and a model reached through a linked folder are all inside; a
    linked .onnx file has its data beside the real file, where ONNX Runtime and TensorRT look for it."""
    model = build_model(tmp_path / "real" / "m.onnx", external_data=True)
    (tmp_path / "real" / "weights").mkdir()
    (tmp_path / "real" / "m.onnx.data").rename(tmp_path / "real" / "weights" / "m.data")
    _set_locations(model, "weights/m.data")
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    frame = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    with segmenter.Segmenter(tmp_path / "linked" / "m.onnx", **CPU) as seg:
        np.testing.assert_array_equal(seg(frame), expected_labels(frame))
    assert read_model_file(model).data_files == ((tmp_path / "real" / "weights" / "m.data"),)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "m.onnx").symlink_to(model)
    assert read_model_file(tmp_path / "elsewhere" / "m.onnx").data_files == (tmp_path / "real" / "weights" / "m.data",)
    with segmenter.Segmenter(tmp_path / "elsewhere" / "m.onnx", **CPU) as seg:
        np.testing.assert_array_equal(seg(frame), expected_labels(frame))
    (tmp_path / "real" / "alias.data").symlink_to(tmp_path / "real" / "weights" / "m.data")
    _set_locations(model, "alias.data")
    assert read_model_file(model).data_files == ((tmp_path / "real" / "weights" / "m.data"),)


def test_an_empty_file_is_not_onnx(tmp_path, capsys):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"empty\.onnx is empty \(0 bytes\): not an ONNX file"):
        read_model_file(empty)
    assert exit_code(["inspect", empty]) == 1
    assert "empty.onnx is empty (0 bytes): not an ONNX file" in _one_error_line(capsys)


def test_random_and_cut_files_are_not_onnx(tmp_path, capsys):
    noise = tmp_path / "noise.onnx"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    assert exit_code(["inspect", noise]) == 1
    assert "noise.onnx is not a valid ONNX file" in _one_error_line(capsys)

    # Cut where the graph ends: every field before the cut is whole, but the opset and the metadata are gone.
    full = onnx.load(str(build_model(tmp_path / "full.onnx")))
    head = onnx.ModelProto()
    head.CopyFrom(full)
    del head.opset_import[:]
    del head.metadata_props[:]
    assert full.SerializeToString().startswith(head.SerializeToString())
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(head.SerializeToString())
    assert exit_code(["inspect", cut]) == 1
    assert "cut.onnx is not a valid ONNX file (it states no IR version or no ONNX opset" in _one_error_line(capsys)
    cut.write_bytes(full.SerializeToString()[: len(head.SerializeToString()) // 2])
    with pytest.raises(ArtifactError, match="cut.onnx is not a valid ONNX file"):
        read_model_file(cut)


def test_a_damaged_byte_anywhere_is_an_error_naming_the_file_never_a_traceback(tmp_path):
    """``inspect`` reads a file twice: the runtime's reader (which skips node bodies) and ``onnx`` for the graph's
    types, so damage the reader cannot see must still end as a project error."""
    from ftadapt.errors import FtadaptError
    from ftadapt.export.metadata import describe

    raw = build_model(tmp_path / "m.onnx", metadata={}).read_bytes()
    damaged = tmp_path / "damaged.onnx"
    for at in range(len(raw)):
        damaged.write_bytes(raw[:at] + b"\xff" + raw[at + 1:])
        try:
            describe(damaged)
        except FtadaptError as exc:
            assert "damaged.onnx" in str(exc) and "\n" not in str(exc)


def test_inspect_says_when_onnx_cannot_infer_the_graph_types(tmp_path, capsys):
    model = onnx.load(str(build_model(tmp_path / "m.onnx")))
    model.graph.node[0].domain = "custom"  # an operator set the file does not import
    (tmp_path / "custom.onnx").write_bytes(model.SerializeToString())
    assert exit_code(["inspect", tmp_path / "custom.onnx"]) == 0
    assert "precision   graph unknown (onnx cannot infer the graph's types: " in capsys.readouterr().out


def test_export_refuses_an_opset_it_cannot_write_before_any_work(tmp_path, capsys):
    for opset in ("99", "17"):
        assert exit_code(["export", tmp_path / "no-checkpoint", "--out", tmp_path / "m.onnx", "--opset", opset]) == 2
        assert f"Invalid value for '--opset': {opset} is not in the range 18<=x<=25" in capsys.readouterr().err
    from ftadapt.commands.export import export
    from ftadapt.export.onnx_export import OPSETS, export_onnx

    (option,) = [p for p in export.params if p.name == "opset"]
    assert (option.type.min, option.type.max) == (OPSETS[0], OPSETS[-1]) == (18, 25)  # one range, two places
    with pytest.raises(UsageError, match="opset 99 is not supported: the exporter writes ONNX opsets 18 to 25"):
        export_onnx(None, tmp_path / "m.onnx", opset=99)  # refused before the ensemble is looked at
    assert not list(tmp_path.iterdir())


def test_a_binary_config_file_is_named(tmp_path, capsys):
    binary = build_model(tmp_path / "m.onnx")
    with pytest.raises(UsageError, match=r"m\.onnx is not a text \(UTF-8\) config file: .*give a JSON or TOML file"):
        read_config_file(binary)
    assert exit_code(["train", "source-only", "--config", binary, "--source", f"gta5:{tmp_path / 'gta'}",
                      "--out", tmp_path / "run"]) == 2
    assert "m.onnx is not a text (UTF-8) config file" in _one_error_line(capsys)


def test_a_binary_list_file_is_named(tmp_path, capsys):
    binary = build_model(tmp_path / "m.onnx")
    (tmp_path / "gta" / "images").mkdir(parents=True)
    (tmp_path / "gta" / "labels").mkdir()
    assert exit_code(["data", "check", "--dataset", "gta5", "--root", tmp_path / "gta", "--list-file", binary]) == 1
    line = _one_error_line(capsys)
    assert "m.onnx is not a text (UTF-8) list file" in line and "one image per line" in line


def test_a_binary_results_file_is_named(tmp_path, capsys):
    binary = build_model(tmp_path / "m.onnx")
    assert exit_code(["report", binary]) == 2
    line = _one_error_line(capsys)
    assert "m.onnx is not a text (UTF-8) JSON results file" in line and "ftadapt eval ... --json FILE" in line


def test_a_config_with_a_byte_order_mark_reads(tmp_path):
    """Some Windows editors start UTF-8 files with a byte-order mark; JSON and TOML parsers refuse it."""
    (tmp_path / "c.json").write_bytes(b'\xef\xbb\xbf{"steps": 3}')
    (tmp_path / "c.toml").write_bytes(b"\xef\xbb\xbfsteps = 4\n")
    assert read_config_file(tmp_path / "c.json")["steps"] == 3
    assert read_config_file(tmp_path / "c.toml")["steps"] == 4
