"""``ftadapt bench accuracy`` on tiny exported ensembles and the synthetic Cityscapes-layout val set: the PyTorch
module rebuilt from the members' checkpoints against ONNX Runtime, the gate on the true file and on a perturbed copy,
agreement with ``predict`` + ``eval``, backends that cannot run, the member that has no checkpoint, the output folder
(report, figures, never half-written) and ``ftadapt report`` over its results."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from cli_runs import exit_code as _run
from conftest import TINY_WORKING
from PIL import Image
from test_ensemble import make_member

import ftadapt.evaluation
from ftadapt.bench import accuracy, figures
from ftadapt.devices import cuda_device_count
from ftadapt.errors import CheckpointError
from ftadapt.evaluation.predictors import Unavailable
from ftadapt.export.onnx_graph import build_graph
from ftadapt.export.rebuild import index_checkpoints, rebuild_graph
from ftadapt.layout import OUTPUT_MARK, mark_output
from ftadapt.runtime.onnx_file import read_model_file

WORKING = TINY_WORKING
README = Path(__file__).resolve().parents[1] / "README.md"


def perturb(src, dst, *, shift: float = 30.0):
    """A copy of ``src`` with one initializer changed: the first 19-class bias gets ``shift`` on class 0 (road).
    The metadata (and so the members' sha256) is unchanged."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    bias = next(t for t in model.graph.initializer if list(t.dims) == [19])
    values = numpy_helper.to_array(bias).copy()
    values[0] += shift
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def bench(synthetic, tiny_export, tmp_path_factory):
    """The session's tiny FP16 export of two members (``clan`` 0.7, ``maxsquare`` 0.3) and one `bench accuracy` run
    of it with the members' folder as --checkpoints."""
    root = tmp_path_factory.mktemp("bench-accuracy")
    a, b = tiny_export["members"]
    data = f"cityscapes:{synthetic.cityscapes_root}"
    argv = ["bench", "accuracy", "--model", tiny_export["fp16"], "--data", data, "--backends", "pytorch,onnxruntime",
            "--device", "cpu", "--checkpoints", tiny_export["root"], "--out", root / "out", "--json",
            root / "true.json"]
    code = _run(argv)
    return SimpleNamespace(root=root, runs=tiny_export["root"], a=a, b=b, ensemble=tiny_export["ensemble"],
                           fp16=tiny_export["fp16"], data=data, code=code,
                           results=json.loads((root / "true.json").read_text()), argv=argv)


def test_the_gate_passes_on_the_exported_file(bench):
    r = bench.results
    assert bench.code == 0 and r["verdict"]["status"] == "passed" and r["reference"] == "pytorch"
    assert list(r["backends"]) == ["pytorch", "pytorch-fp16", "pytorch-protocol", "onnxruntime"]
    ort, ref = r["backends"]["onnxruntime"], r["backends"]["pytorch"]
    assert ort["gate"]["passed"] and abs(ort["delta_miou"]) <= 0.1 == r["gate"]["tolerance_miou_points"]
    assert r["gate"]["min_identical_percent"] is None  # an FP16 file: the mIoU tolerance alone (DESIGN §7)
    assert ort["delta_miou"] == pytest.approx(ort["miou"] - ref["miou"])
    assert ort["delta_per_class_iou"][13] == pytest.approx(ort["per_class_iou"][13] - ref["per_class_iou"][13])
    assert ort["agreement"]["reference"] == "pytorch" and ort["agreement"]["frames"] == 3
    assert ort["agreement"]["pixels"] == 3 * 64 * 128 and ort["agreement"]["differing_percent"] < 1.0
    assert ort["protocol"]["providers"] == ["CPUExecutionProvider"] and ort["protocol"]["precision"] == "fp16"
    assert ref["protocol"]["precision"] == "fp32" and ref["gate"] == "reference" and ref["n_images"] == 3
    assert r["backends"]["pytorch-fp16"] == {"status": "not run", "reason": "the FP16 module runs in PyTorch on "
                                                                            "CUDA only (--device cuda:N)"}
    gap = r["protocol_gap"]  # the training protocol's PIL-bicubic mIoU beside the deployed pre-processing's
    protocol = r["backends"]["pytorch-protocol"]
    assert protocol["preprocessing"].startswith("PIL bicubic") and protocol["gate"].startswith("not gated")
    assert gap["protocol_minus_deployed"] == pytest.approx(protocol["miou"] - ref["miou"])
    assert r["model"]["sha256"] == read_model_file(bench.fp16).sha256() and r["model"]["precision"] == "fp16"
    assert [m["name"] for m in r["model"]["members"]] == ["clan", "maxsquare"]
    assert ort["latency_during_pass"]["runs"] == 2 and len(ort["latency_during_pass"]["samples_ms"]) == 2
    assert {"cpu_model", "usable_cores", "onnxruntime", "torch", "tensorrt"} <= set(r["environment"])


def test_the_pytorch_backend_is_the_exported_module_rebuilt_from_the_checkpoints(bench):
    """Matched by sha256 among every checkpoint under the folders given (a run's older steps included), the rebuilt
    module has the very weights, fusion and working size the export traced, at either precision."""
    info = read_model_file(bench.fp16).info
    run = bench.root / "run" / "checkpoints"
    make_member(run / "step_000001", 0, method="clan")  # the same weights as member a, in a run's older step
    make_member(run / "step_000002", 5, method="clan")
    (bench.root / "run" / "config.json").write_text("{}\n")  # what makes it a run folder
    assert index_checkpoints([bench.root / "run"])[info.members[0].sha256] == run / "step_000001"
    for precision in ("fp32", "fp16"):
        rebuilt = rebuild_graph(info, [bench.root / "run", bench.b], precision=precision).state_dict()
        original = build_graph(bench.ensemble, precision=precision, working_size=WORKING).state_dict()
        assert rebuilt.keys() == original.keys()
        assert all(torch.equal(rebuilt[k], original[k]) for k in original), precision
    for folder, message in ((bench.root / "nowhere", "no such folder"), (bench.root / "out", "holds no checkpoint")):
        with pytest.raises(CheckpointError, match=message):
            index_checkpoints([folder])


def test_the_gate_fails_on_a_perturbed_copy(bench, capsys):
    perturbed = perturb(bench.fp16, bench.root / "ens16-perturbed.onnx")
    argv = [*bench.argv[:3], perturbed, *bench.argv[4:-4], "--json", bench.root / "perturbed.json"]
    assert _run(argv) == 1
    assert "error: parity gate: FAILED: onnxruntime fails against pytorch" in capsys.readouterr().err
    r = json.loads((bench.root / "perturbed.json").read_text())
    ort = r["backends"]["onnxruntime"]
    assert r["verdict"]["failed"] == ["onnxruntime"] and not ort["gate"]["passed"]
    assert abs(ort["delta_miou"]) > 0.1 and ort["agreement"]["differing_percent"] > 10
    assert ort["gate"]["checks"] == [{"check": "|ΔmIoU|", "value": abs(ort["delta_miou"]), "limit": 0.1,
                                      "passed": False}]
    assert r["backends"]["pytorch"]["per_class_iou"] == bench.results["backends"]["pytorch"]["per_class_iou"]


def test_the_onnxruntime_miou_is_what_predict_then_eval_give(bench, synthetic, tmp_path):
    preds, scored = tmp_path / "preds", tmp_path / "eval.json"
    val = synthetic.cityscapes_root / "leftImg8bit" / "val"
    assert _run(["predict", "--model", bench.fp16, val, "--out", preds, "--backend", "onnxruntime", "--device",
                  "cpu"]) == 0
    assert _run(["eval", "--pred-dir", preds, "--gt-dir", synthetic.cityscapes_root / "gtFine" / "val", "--json",
                  scored]) == 0
    folder = json.loads(scored.read_text())
    ort = bench.results["backends"]["onnxruntime"]
    assert folder["n_images"] == ort["n_images"] == 3
    assert folder["per_class_iou"] == ort["per_class_iou"] and folder["miou"] == ort["miou"]


def test_backends_that_cannot_run_are_listed_with_their_reason(bench, tmp_path, capsys):
    out = tmp_path / "out"
    code = _run(["bench", "accuracy", "--model", bench.fp16, "--data", bench.data, "--device", "cpu", "--limit", "1",
                  "--json", tmp_path / "r.json", "--out", out])
    assert code == 1
    err = capsys.readouterr().err
    assert "no backend can be compared: only onnxruntime ran (not run: pytorch, pytorch-fp16, pytorch-protocol, " \
           "tensorrt)" in err and "pass --checkpoints" in err
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["reference"] == "onnxruntime" and r["data"]["frames"] == 1 and r["verdict"]["status"] == "not compared"
    assert r["backends"]["pytorch"]["reason"].startswith("no --checkpoints; pass the checkpoint (or run) folders of "
                                                         "the file's members (clan, maxsquare)")
    assert r["backends"]["tensorrt"] == {"status": "not run", "reason": "TensorRT needs a CUDA device (--device "
                                                                        "cuda:N)"}
    report = (out / "report.md").read_text()  # the report is still written, and says what did not run
    assert "no backend can be compared" in report and "not run: TensorRT needs a CUDA device" in report


@pytest.mark.skipif(cuda_device_count()[0] > 0, reason="checks a machine without a GPU")
def test_asking_for_cuda_without_a_gpu_is_refused_before_anything_runs(bench, tmp_path, capsys):
    code = _run(["bench", "accuracy", "--model", bench.fp16, "--data", bench.data, "--device", "cuda:0",
                  "--checkpoints", bench.runs, "--json", tmp_path / "r.json"])
    err = capsys.readouterr().err
    assert code == 2 and "device cuda:0 asked for, but this machine has no CUDA device" in err and "--device cpu" in err
    assert not (tmp_path / "r.json").exists()


def test_a_member_without_its_checkpoint_is_named(bench, tmp_path, capsys):
    other = make_member(tmp_path / "other", 7)
    code = _run(["bench", "accuracy", "--model", bench.fp16, "--data", bench.data, "--device", "cpu",
                  "--backends", "pytorch,onnxruntime", "--checkpoints", bench.a, "--checkpoints", other])
    sha = read_model_file(bench.fp16).info.members[1].sha256
    err = capsys.readouterr().err
    assert code == 1 and f"member 'maxsquare' (sha256 {sha[:12]}…) matches none of the checkpoints given (clan (" in err
    assert "other (" in err and "pass the checkpoint folder each member was exported from" in err


def test_the_output_folder_holds_results_report_and_figures(bench):
    out = bench.root / "out"
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARK, "latency.png", "per_class_iou.png", "report.md",
                                                     "results.json"]  # the mark: a later --overwrite may replace it
    saved = json.loads((out / "results.json").read_text())
    assert {k: v for k, v in saved.items() if k != "figures"} == bench.results
    report = (out / "report.md").read_text()
    assert "**PASSED: onnxruntime passes against pytorch; not run: pytorch-fp16**" in report
    assert "Gate: |ΔmIoU| ≤ 0.1 mIoU points (the default for an FP16 file), against `pytorch`" in report
    assert "| class | pytorch | pytorch-protocol | onnxruntime | Δ pytorch-protocol | Δ onnxruntime |" in report
    assert "## Latency during the accuracy pass" in report and "- onnxruntime ran on: CPUExecutionProvider" in report
    panels = {"per_class_iou.png": ["Per-class IoU by backend (mIoU in the legend)",
                                    "Per-class IoU difference to pytorch"],
              "latency.png": ["Latency distribution per backend (during the accuracy pass; whiskers p1–p99)"]}
    assert saved["figures"] == panels
    for name, titles in panels.items():
        with Image.open(out / name) as image:
            assert image.text["Description"] == "panels: " + "; ".join(titles) and image.size[0] > 500
        assert f"![{name}]({name})" in report


def test_outputs_are_never_overwritten_nor_half_written(bench, tmp_path, monkeypatch, capsys):
    base = ["bench", "accuracy", "--model", bench.fp16, "--data", bench.data, "--device", "cpu", "--backends",
            "onnxruntime"]
    existing = tmp_path / "existing"  # an earlier bench's folder (its mark), with a file the new one lacks
    existing.mkdir()
    mark_output(existing, "an earlier bench")
    (existing / "keep.txt").write_text("earlier")
    (tmp_path / "taken.json").write_text("{}")
    monkeypatch.setattr(accuracy, "measure_accuracy", lambda *a, **k: pytest.fail("must refuse before measuring"))
    assert _run([*base, "--out", existing]) == 2 and "already exists; pass --overwrite" in capsys.readouterr().err
    (tmp_path / "user").mkdir()  # issue 23, case 5: a folder of someone else's files was deleted whole
    (tmp_path / "user" / "thesis.tex").write_text("mine")
    assert _run([*base, "--out", tmp_path / "user", "--overwrite"]) == 2
    assert "ftadapt did not write" in capsys.readouterr().err and (tmp_path / "user" / "thesis.tex").is_file()
    (tmp_path / "user" / "thesis.tex").unlink()
    (tmp_path / "user").rmdir()
    assert _run([*base, "--json", tmp_path / "taken.json"]) == 2
    monkeypatch.setattr(accuracy, "measure_accuracy", lambda *a, **k: bench.results)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(figures, "latency_figure", interrupted)  # Ctrl-C while the folder is being written
    assert _run([*base, "--out", tmp_path / "new"]) == 130
    assert _run([*base, "--out", existing, "--overwrite"]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "taken.json"]  # no new or temporary folder
    assert sorted(p.name for p in existing.iterdir()) == [OUTPUT_MARK, "keep.txt"]
    monkeypatch.undo()
    monkeypatch.setattr(ftadapt.evaluation, "evaluate", interrupted)  # Ctrl-C during the pass
    assert _run([*base, "--out", tmp_path / "new"]) == 130 and not (tmp_path / "new").exists()
    monkeypatch.undo()
    monkeypatch.setattr(accuracy, "measure_accuracy", lambda *a, **k: bench.results)
    assert _run([*base, "--out", existing, "--overwrite"]) == 0
    assert sorted(p.name for p in existing.iterdir()) == [OUTPUT_MARK, "latency.png", "per_class_iou.png",
                                                          "report.md", "results.json"]


def test_report_renders_an_eval_result_and_a_bench_result_as_table_1(bench, tmp_path):
    """`ftadapt report` on two results: an `ftadapt eval --onnx` result and the bench's results.json, with the
    bench's backends as rows, what did not run and the verdict as notes, deltas against the PyTorch row."""
    assert _run(["eval", "--onnx", bench.fp16, "--data", bench.data, "--backend", "onnxruntime", "--device", "cpu",
                  "--size", "64x32", "--json", tmp_path / "eval.json"]) == 0
    md, table = tmp_path / "t1.md", tmp_path / "t1.csv"
    assert _run(["report", f"eval={tmp_path / 'eval.json'}", f"bench={bench.root / 'out' / 'results.json'}",
                  "--baseline", "bench pytorch", "--out", md, "--out", table]) == 0
    text = md.read_text()
    rows = [line.split(" | ")[0].removeprefix("| ") for line in text.splitlines()[2:6]]
    assert rows == ["eval", "bench pytorch", "bench pytorch-protocol", "bench onnxruntime"]
    evaluated, ort = json.loads((tmp_path / "eval.json").read_text()), bench.results["backends"]["onnxruntime"]
    assert evaluated["per_class_iou"] == ort["per_class_iou"]  # the same file through the same runtime
    assert "Difference to bench pytorch (IoU points)" in text and "| bench onnxruntime − bench pytorch |" in text
    assert "- bench pytorch-fp16: not run: the FP16 module runs in PyTorch on CUDA only" in text
    assert "- bench parity gate: PASSED: onnxruntime passes against pytorch; not run: pytorch-fp16" in text
    kinds = [line.split(",")[0] for line in table.read_text().splitlines()[1:]]
    assert kinds == ["result"] * 4 + ["delta"] * 3


@pytest.mark.parametrize("delta, identical, expected", [(0.1, None, True), (0.1000001, None, False),
                                                        (-0.05, 99.99, True), (0.0, 99.98, False),
                                                        (None, None, False)])
def test_the_gate_at_its_limits(delta, identical, expected):
    reference = {"miou": 40.0}
    row = {"miou": None if delta is None else 40.0 + delta,
           "agreement": {"differing_percent": None if identical is None else 100.0 - identical}}
    gate = accuracy.gate_of(row, reference, tolerance=0.1, min_identical=None if identical is None else 99.99)
    assert gate["passed"] is expected and len(gate["checks"]) == (1 if identical is None else 2)


def test_verdicts_and_the_reference_without_pytorch():
    absent = Unavailable("x", "why")
    assert accuracy.reference_of({"pytorch": absent, "pytorch-protocol": absent, "onnxruntime": object(),
                                  "tensorrt": object()}) == "onnxruntime"
    assert accuracy.reference_of({"pytorch": object(), "onnxruntime": object()}) == "pytorch"
    assert accuracy.reference_of({"onnxruntime": absent}) is None
    rows = {"pytorch": {"status": "ran", "gate": "reference"}, "onnxruntime": {"status": "ran", "gate": {"passed": 1}},
            "tensorrt": {"status": "ran", "gate": {"passed": False}}, "x": {"status": "not run"}}
    verdict = accuracy.verdict_of(rows, "pytorch")
    assert (verdict["status"], verdict["failed"], verdict["not_run"]) == ("failed", ["tensorrt"], ["x"])
    assert verdict["line"] == "FAILED: onnxruntime passes, tensorrt fails against pytorch; not run: x"
    assert verdict["passed_backends"] == ["onnxruntime"] and verdict["reference"] == "pytorch"


@pytest.mark.slow
def test_the_readme_recipe_runs_on_the_synthetic_data(synthetic, tmp_path, monkeypatch):
    """The README's Cityscapes-val recipe, command by command, on the synthetic set with two tiny members named as
    the recipe names them; what the test adds makes it fit a CPU (later options win)."""
    section = README.read_text().split("## Checking a deployment on Cityscapes val")[1].split("\n## ")[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    lines = [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip().startswith("ftadapt")]
    make_member(tmp_path / "runs" / "norm-only", 0, method="norm-only")
    make_member(tmp_path / "runs" / "clan-released", 1, method="clan")
    monkeypatch.chdir(tmp_path)
    extra = {"export": ["--working-size", "64x32", "--no-verify"], "accuracy": ["--device", "cpu"],
             "latency": ["--device", "cpu", "--frame-size", "128x64", "--warmup", "1", "--runs", "2"], "report": []}
    ran = []
    for line in lines:
        words = shlex.split(line.replace("data/Cityscapes", str(synthetic.cityscapes_root)), comments=True)[1:]
        command = words[1] if words[0] == "bench" else words[0]
        assert _run([*words, *extra[command]]) == 0, line
        ran.append(command)
    assert ran == ["export", "accuracy", "latency", "report"]
    parity = json.loads((tmp_path / "parity-fp16" / "results.json").read_text())
    assert parity["verdict"]["status"] == "passed" and parity["model"]["precision"] == "fp16"
    assert [m["name"] for m in parity["model"]["members"]] == ["norm-only", "clan-released"]
    assert (tmp_path / "latency-fp16" / "latency.png").is_file()
    assert "| fp16 onnxruntime − fp16 pytorch |" in (tmp_path / "table.md").read_text()
