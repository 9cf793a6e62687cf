"""The fused ONNX export: graph contract (dtypes, dynamic sizes), FP16 types, metadata, verification, CLI, errors.

Exports are the slow part (seconds each), so the suite exports twice, once per session (``conftest.tiny_export``) —
FP32 with ``probs`` through the CLI, FP16 through the library with its weights forced into an external-data file —
and every test reads those files.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_VERIFY_SIZES, TINY_WORKING
from test_ensemble import make_member, tiny_member

from ftadapt.artifact import ArtifactError, ArtifactInfo
from ftadapt.cli import cli, main
from ftadapt.ensemble import Ensemble, load_ensemble
from ftadapt.errors import UsageError
from ftadapt.export import onnx_export
from ftadapt.export.metadata import describe, graph_types, write_props
from ftadapt.export.onnx_graph import build_graph
from ftadapt.export.verify import Verification, image_input_problems, verify_onnx
from ftadapt.labels import CLASS_NAMES, PALETTE
from ftadapt.runtime.onnx_file import read_model_file

# The operators docs/deploy.md reviews against TensorRT's ONNX parser, one table row each.
REVIEWED_OPS = set(re.findall(r"^\| `(\w+)`", (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text(),
                              flags=re.MULTILINE))
WORKING = TINY_WORKING
SIZES = TINY_VERIFY_SIZES  # verification sizes, both unlike the working size and the export example


@pytest.fixture
def exported(tiny_export):
    """The session's tiny exports (``conftest.tiny_export``), with the FP16 file as its ExportResult."""
    return {**tiny_export, "fp16": tiny_export["fp16_result"]}


def run(path, image):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": image})


@pytest.mark.parametrize("shape", [(3, 50, 70, 3), (1, 97, 33, 3)])
def test_labels_and_probs_at_sizes_other_than_the_export(exported, shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    labels, probs = run(exported["fp32"], image)
    assert labels.dtype == np.int32 and labels.shape == shape[:3]
    assert probs.dtype == np.float32 and probs.shape == (shape[0], 19, *shape[1:3])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(labels, probs.argmax(axis=1))
    reference = build_graph(exported["ensemble"], working_size=WORKING, with_probs=True)
    with torch.no_grad():
        ref_labels, ref_probs = reference(torch.from_numpy(image))
    assert np.abs(probs - ref_probs.numpy()).max() < 1e-4
    assert (labels == ref_labels.numpy()).mean() > 0.9999


def test_graph_preprocessing_matches_the_training_protocol():
    """uint8 RGB → BGR − mean, bilinear resize; at the working size the resize is the identity."""
    from ftadapt.data.transforms import image_to_tensor

    graph = build_graph(Ensemble([tiny_member(0)], [1.0]), working_size=(24, 16))
    image = np.random.default_rng(1).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    ours = graph.preprocess(torch.from_numpy(image)[None])[0]
    torch.testing.assert_close(ours, image_to_tensor(image), atol=1e-4, rtol=0)


def test_fp32_graph_types_and_outputs(exported):
    model = onnx.load(str(exported["fp32"]), load_external_data=False)
    image = model.graph.input[0]
    assert image.name == "image" and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == ["batch", "height", "width", 3]
    outputs = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert outputs == {"labels": onnx.TensorProto.INT32, "probs": onnx.TensorProto.FLOAT}
    types = graph_types(model)
    assert set(types["conv_weights"]) == {"float"}
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)


def test_fp16_graph_runs_convolutions_in_half_and_fusion_in_fp32(exported):
    path = exported["fp16"].path
    model = onnx.load(str(path), load_external_data=False)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in model.graph.output] == ["labels"]
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    types = graph_types(model)
    assert set(types["conv_weights"]) == {"float16"} and set(types["conv_inputs"]) == {"float16"}
    assert types["softmax"] == ["float", "float"]  # one per member, in FP32
    assert types["argmax"] == ["float"] and set(types["resize"]) == {"float"}
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    fusion = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    assert fusion, "the fusion weights and the mean stay FP32"


@pytest.mark.parametrize("which", ["fp32", "fp16"])
def test_the_uint8_image_feeds_one_cast_to_float_and_nothing_else(exported, which):
    """TensorRT's UINT8 rule (DESIGN.md §7): no Transpose or Shape may read the uint8 input; the exporter's Shape
    nodes for the frame's H and W read the Cast's output instead. FP32 with probs and FP16 without, two members."""
    path = exported["fp32"] if which == "fp32" else exported["fp16"].path
    model = onnx.load(str(path), load_external_data=False)
    readers = [n for n in model.graph.node if "image" in n.input]
    assert [n.op_type for n in readers] == ["Cast"]
    assert [(a.name, a.i) for a in readers[0].attribute] == [("to", onnx.TensorProto.FLOAT)]
    cast_out = readers[0].output[0]
    assert sum(n.op_type == "Shape" and cast_out in n.input for n in model.graph.node) == 2  # H and W of the frame
    assert image_input_problems(model) == []


def test_verification_refuses_a_graph_that_reads_the_uint8_image_before_casting(exported, tmp_path):
    model = onnx.load(str(exported["fp32"]))
    cast_out = next(n for n in model.graph.node if "image" in n.input).output[0]
    shape = next(n for n in model.graph.node if n.op_type == "Shape" and cast_out in n.input)
    shape.input[0] = "image"  # what torch's exporter writes: the frame's H and W read from the uint8 input
    onnx.save(model, str(tmp_path / "old.onnx"))
    reference = build_graph(exported["ensemble"], working_size=WORKING)
    frames = [np.random.default_rng(0).integers(0, 256, (1, 40, 70, 3), dtype=np.uint8)]
    result = verify_onnx(tmp_path / "old.onnx", reference, precision="fp32", batches=frames, progress=False)
    assert result.status == "failed" and result.label_agreement == 1.0  # ONNX Runtime does not mind; TensorRT does
    assert any(f"Shape {shape.name!r}" in r and "exactly one reader, a Cast to float32" in r for r in result.reasons)


def test_every_operator_of_the_exports_is_reviewed_in_the_deployment_notes(exported):
    """docs/deploy.md reviews each operator against TensorRT's ONNX parser; a new operator in the graph (a new fusion
    mode, a TTA flip) needs its row there before it ships."""
    used = {n.op_type for p in (exported["fp32"], exported["fp16"].path)
            for n in onnx.load(str(p), load_external_data=False).graph.node}
    assert used and used <= REVIEWED_OPS, f"review {sorted(used - REVIEWED_OPS)} in docs/deploy.md"


def test_ceil_mode_max_pool_sizes_equal_tensorrts_round_up_formula():
    """TensorRT imports ceil_mode=1 as PaddingMode EXPLICIT_ROUND_UP, O = ceil((I + 2p − k)/s) + 1; PyTorch also drops
    a last window that would start in the right padding. For DeepLab's stem pool (k 3, s 2, p 1) the two agree."""
    sizes = range(1, 2049)
    torch_sizes = [torch.nn.functional.max_pool2d(torch.zeros(1, 1, 1, n), (1, 3), (1, 2), (0, 1), ceil_mode=True)
                   .shape[3] for n in sizes]
    assert torch_sizes == [math.ceil((n + 2 - 3) / 2) + 1 for n in sizes]


def test_fp16_weights_live_in_the_external_data_file(exported):
    result = exported["fp16"]
    path = result.path
    assert [f.name for f in result.files] == ["fused16.onnx", "fused16.onnx.data"]
    assert path.with_name("fused16.onnx.data").stat().st_size > path.stat().st_size
    onnx.checker.check_model(str(path), full_check=True)
    labels, = run(path, np.zeros((1, 40, 60, 3), dtype=np.uint8))
    assert labels.shape == (1, 40, 60) and labels.dtype == np.int32
    assert not list(path.parent.glob(".*")), "no temporary files are left behind"


def test_verification_figures_are_printed_and_stored(exported):
    fp32, fp16 = read_model_file(exported["fp32"]).info, read_model_file(exported["fp16"].path).info
    ver = fp32.verification
    assert ver["status"] == "passed" and ver["checker"] == "ok" and ver["frames"] == 2
    assert ver["sizes"] == ["128x64", "80x45"]  # the CLI default: 2× and 16:9 of the working size
    assert ver["max_abs_prob"] <= 1e-4 and ver["label_agreement"] >= 0.9999
    assert "verification PASSED" in exported["cli_output"]
    assert exported["cli_json"]["verification"] == ver
    assert fp16.verification["status"] == "passed" and fp16.verification["label_agreement"] >= 0.995
    assert fp16.verification["sizes"] == ["96x40", "50x70"] and fp16.verification["frames"] == 4
    assert fp16.verification["gate"] == {"label_agreement": 0.995}


def test_metadata_round_trip(exported):
    info = read_model_file(exported["fp32"]).info
    assert info.classes == CLASS_NAMES and info.palette == PALETTE
    assert info.working_size == WORKING and info.precision == "fp32" and info.opset == 20
    assert info.outputs == ("labels", "probs") and info.input["dtype"] == "uint8"
    assert [(m.name, m.method, m.head_rule, m.miou) for m in info.members] == [
        ("clan", "clan", "sum", 44.5), ("maxsquare", "maxsquare", "main", None)]
    assert [m.weight for m in info.members] == pytest.approx([0.7, 0.3])
    assert [m.sha256 for m in info.members] == [i.sha256 for i in exported["ensemble"].infos]
    assert ArtifactInfo.from_props(info.to_props()) == info
    session = ort.InferenceSession(str(exported["fp32"]), providers=["CPUExecutionProvider"])
    assert ArtifactInfo.from_props(session.get_modelmeta().custom_metadata_map) == info  # what the runtime reads


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.clear(), "carries no ftadapt metadata"),
    (lambda p: p.pop("ftadapt.members"), "lacks ftadapt.members"),
    (lambda p: p.update({"ftadapt.format_version": "2"}), "format 2; this ftadapt reads format 1 — upgrade"),
    (lambda p: p.update({"ftadapt.classes": "[road"}), "ftadapt.classes is not valid JSON"),
    (lambda p: p.update({"ftadapt.precision": '"int8"'}), "precision 'int8' is not one of fp32, fp16"),
    (lambda p: p.update({"ftadapt.palette": "[[1, 2, 3]]"}), "one RGB triple"),
])
def test_damaged_metadata_is_refused(exported, edit, message):
    props = read_model_file(exported["fp32"]).info.to_props()
    edit(props)
    with pytest.raises(ArtifactError, match=message):
        ArtifactInfo.from_props(props, source="m.onnx")


def test_inspect_prints_metadata_and_graph(exported):
    result = CliRunner().invoke(cli, ["inspect", str(exported["fp16"].path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "image: uint8 [batch, height, width, 3]" in out and "labels: int32 [batch, height, width]" in out
    assert "graph fp16 (conv weights: 44 float16; softmax in float; argmax in float)" in out
    assert "precision fp16, working size 64x32" in out and "external-data file" in out
    assert "0.7000  clan  method clan, heads sum, mIoU 44.50" in out and "verified    PASSED" in out
    desc = describe(exported["fp32"])
    assert desc["opset"] == 20 and desc["metadata"]["precision"] == "fp32" and desc["missing_files"] == []


def test_failed_verification_marks_the_file_and_exits_1(exported, tmp_path, monkeypatch, capsys):
    def failing(path, reference, *, precision, batches, progress):
        return Verification("failed", precision, "ok", "CPUExecutionProvider", [(8, 8)], 1, max_abs_prob=0.5,
                            label_agreement=0.5, identical_labels=0.5, reasons=["label agreement 50 % < 99.99 %"])

    def copy_instead_of_export(graph, destination, info, *, external):  # the exporter's cost is not under test
        shutil.copy(exported["fp32"], destination)

    monkeypatch.setattr(onnx_export, "verify_onnx", failing)
    monkeypatch.setattr(onnx_export, "_torch_export", copy_instead_of_export)
    clan = exported["root"] / "clan"
    out = tmp_path / "bad.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(clan), "--out", str(out), "--working-size", "64x32"])
    assert exit_info.value.code == 1
    assert "failed verification" in capsys.readouterr().err
    info = read_model_file(out).info
    assert info.verification["status"] == "failed" and not info.verified
    assert info.verification["reasons"] == ["label agreement 50 % < 99.99 %"]


def test_an_interrupted_export_leaves_nothing(exported, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_export, "_torch_export", crash)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        onnx_export.export_onnx(exported["ensemble"], tmp_path / "m.onnx", working_size=WORKING)
    assert list(tmp_path.iterdir()) == []


def test_export_errors(exported, tmp_path):
    clan, multi = exported["root"] / "clan", exported["root"] / "maxsquare"
    with pytest.raises(UsageError, match="is a folder; give a file name"):
        onnx_export.export_onnx(exported["ensemble"], tmp_path, working_size=WORKING)
    make_member(tmp_path / "c16", 2, num_classes=16)
    cases = [
        (["export", "--ensemble", f"{clan}:0.5", "--ensemble", f"{tmp_path / 'c16'}:0.5"], 2, "different label spaces"),
        (["export", "--ensemble", f"{clan}:0.5", "--ensemble", f"{multi}:-1"], 2, "must be a positive number"),
        (["export", str(tmp_path / "nothing")], 1, "no checkpoint folder at"),
    ]
    for args, code, message in cases:
        result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "x.onnx")])
        assert result.exit_code != 0 and message in str(result.exception), (args, result.output)
        assert getattr(result.exception, "exit_code", None) == code
    for size, message in (("64", "'64' is not WIDTHxHEIGHT"), ("4x4", "must both be at least 8 pixels")):
        argv = ["export", str(clan), "--working-size", size, "--out", str(tmp_path / "x.onnx")]
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "x.onnx").exists()


def test_result_json_describes_the_export(exported):
    data = exported["cli_json"]
    assert data["precision"] == "fp32" and data["working_size"] == list(WORKING)
    assert data["outputs"] == ["labels", "probs"] and data["size_bytes"] == exported["fp32"].stat().st_size
    assert [m["name"] for m in data["members"]] == ["clan", "maxsquare"]
    assert dataclasses.asdict(exported["fp16"].info)["precision"] == "fp16"


def test_metadata_is_readable_without_torch(exported):
    """What the runtime does: ONNX Runtime's metadata map + ftadapt.artifact, with torch never imported."""
    code = ("import sys, onnxruntime as ort; from ftadapt.artifact import ArtifactInfo; "
            f"s = ort.InferenceSession({str(exported['fp16'].path)!r}, providers=['CPUExecutionProvider']); "
            "info = ArtifactInfo.from_props(s.get_modelmeta().custom_metadata_map); "
            "print(info.precision, info.working_size, info.verified, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["fp16", "(64,", "32)", "True", "False"]


def test_write_props_replaces_ftadapt_entries_and_keeps_others(exported, tmp_path):
    copy = tmp_path / "copy.onnx"
    shutil.copy(exported["fp32"], copy)
    model = onnx.load(str(copy))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "owner": "team-a"})
    onnx.save(model, str(copy))
    info = read_model_file(copy).info.with_verification({"status": "skipped"})
    write_props(copy, info)
    assert read_model_file(copy).info == info and read_model_file(copy).metadata["owner"] == "team-a"
    result = CliRunner().invoke(cli, ["inspect", str(copy)])
    assert "verified    SKIPPED (exported with --no-verify)" in result.output
    assert list(tmp_path.iterdir()) == [copy]


@pytest.mark.slow
@pytest.mark.parametrize("fusion, flip, precision", [("probs", True, "fp32"), ("logits", False, "fp16")])
def test_the_papers_ensemble_modes_export_and_verify(exported, tmp_path, fusion, flip, precision):
    """Flip inside the graph (members also run on the mirrored frame) and logits fusion pass the export's own
    verification against the PyTorch module; the mode is in the metadata and in `ftadapt inspect`. The fusion is the
    same code at either precision (FP16 only runs the members in half), so each mode is exported once and each
    precision once beside the plain exports of ``tiny_export``: flip under FP32's strict gate (max |Δprob| 1e-4),
    logits fusion through FP16's casts."""
    root = exported["root"]
    specs = [f"{root / 'clan'}:0.7", f"{root / 'maxsquare'}:0.3"]
    ensemble = load_ensemble(specs, fusion=fusion, flip=flip)
    result = onnx_export.export_onnx(ensemble, tmp_path / f"{fusion}-{flip}.onnx", precision=precision,
                                     working_size=WORKING, verify_sizes=SIZES, with_probs=True, progress=False)
    assert result.verification.passed, result.verification.summary()
    info = read_model_file(result.path).info
    assert info.ensemble == {"fusion": fusion, "flip": flip}
    assert ("flip-averaged" in info.fusion) == flip and ("logits" in info.fusion) == (fusion == "logits")
    nodes = onnx.load(str(result.path), load_external_data=False).graph.node
    assert {n.op_type for n in nodes} <= REVIEWED_OPS, "review the new operators in docs/deploy.md"
    assert [n.op_type for n in nodes if "image" in n.input] == ["Cast"]  # TensorRT's UINT8 rule
    text = CliRunner().invoke(cli, ["inspect", str(result.path)]).output
    assert f"fusion      {fusion}, flip {'on' if flip else 'off'}" in text
    image = np.random.default_rng(1).integers(0, 256, (2, 40, 96, 3), dtype=np.uint8)
    labels, probs = run(result.path, image)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)  # logits fusion: softmax after the upsample
    with torch.no_grad():
        reference = build_graph(ensemble, working_size=WORKING)(torch.from_numpy(image)).numpy()
    assert (labels == reference).mean() > (0.9999 if precision == "fp32" else 0.99)


def test_files_exported_before_the_ensemble_modes_read_as_probability_fusion_without_flip(exported):
    props = read_model_file(exported["fp32"]).metadata
    del props["ftadapt.ensemble"]
    assert ArtifactInfo.from_props(props).ensemble == {"fusion": "probs", "flip": False}
    props["ftadapt.ensemble"] = json.dumps({"fusion": "mean", "flip": False})
    with pytest.raises(ArtifactError, match="ensemble must be"):
        ArtifactInfo.from_props(props)


def test_fta_code_is_never_exported(tmp_path):
    """Fusion "fta-code" emulates a bug of the authors' evaluation: `ftadapt eval` only. The export's --fusion keeps
    probs|logits, the graph module refuses such an ensemble in one line, and no file is written; the artifact's own
    modes and `ftadapt bench accuracy` (which takes the file's mode) know nothing of it."""
    from ftadapt import artifact
    from ftadapt.export.onnx_graph import SegmentationGraph

    ensemble = Ensemble([tiny_member(0), tiny_member(1)], [0.7, 0.3], fusion="fta-code", flip=True).eval()
    for build in (lambda: build_graph(ensemble, working_size=WORKING), lambda: build_graph(ensemble, precision="fp16"),
                  lambda: SegmentationGraph(ensemble, WORKING),
                  lambda: onnx_export.export_onnx(ensemble, tmp_path / "m.onnx", working_size=WORKING)):
        with pytest.raises(UsageError) as info:
            build()
        assert "\n" not in str(info.value)
        assert "fusion 'fta-code' emulates a bug of the authors' evaluate.py" in str(info.value)
        assert "export with fusion 'probs' or 'logits'" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(cli, ["export", "--ensemble", "a:0.7", "--ensemble", "b:0.3", "--fusion", "fta-code",
                                      "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "'fta-code' is not one of 'probs', 'logits'" in result.output, result.output
    assert artifact.FUSIONS == ("probs", "logits")
    for command in (["export"], ["bench", "accuracy"]):
        assert "fta-code" not in CliRunner().invoke(cli, [*command, "--help"]).output
