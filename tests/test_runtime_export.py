"""End to end: a tiny checkpoint exported with ``ftadapt.export`` runs through ``Segmenter(backend="onnxruntime")``
and gives the labels of the PyTorch graph it was exported from. The file hand-off is the only link between the two
stages (DESIGN.md §3), so this is the test that the runtime reads what the exporter really writes — metadata, the
``image``/``labels``/``probs`` contract and an external-data file. The GPU checks at the end run the same real file
through ONNX Runtime's CUDA provider and TensorRT (marked ``gpu``/``trt``; they skip with their reason elsewhere)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_ensemble import make_member

from ftadapt.ensemble import load_ensemble
from ftadapt.export import onnx_export
from ftadapt.export.onnx_graph import build_graph
from ftadapt.labels import CLASS_NAMES, PALETTE
from ftadapt.runtime import BackendUnavailable, Segmenter, backends
from ftadapt.runtime.onnx_file import input_readers, read_model_file
from ftadapt.runtime.trt_api import import_pycuda, import_tensorrt
from ftadapt.runtime.trt_engine import check_uint8_input

WORKING = (64, 32)  # (W, H)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime-export")
    ensemble = load_ensemble([str(make_member(root / "clan", 0, method="clan", miou=41.0))])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)  # force the external-data layout torch uses for big models
        result = onnx_export.export_onnx(ensemble, root / "ens.onnx", working_size=WORKING, with_probs=True,
                                         verify=False, progress=False)
    return ensemble, result.path


@pytest.mark.slow
def test_exported_ensemble_runs_in_the_runtime(exported):
    ensemble, path = exported
    assert read_model_file(path).data_files, "the export should have written an external-data file"
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 80, 3), dtype=np.uint8)
    with torch.no_grad():
        reference = build_graph(ensemble, working_size=WORKING)(torch.from_numpy(frames)).numpy()
    with Segmenter(path, backend="onnxruntime", device="cpu") as seg:
        assert seg.classes == CLASS_NAMES and seg.palette.tolist() == [list(c) for c in PALETTE]
        assert [(m.name, m.miou) for m in seg.metadata.members] == [("clan", 41.0)]
        assert seg.metadata.working_size == WORKING and seg.metadata.precision == "fp32"
        with pytest.raises(ValueError, match="with_probs=True"):
            seg.predict_batch(frames, probs=True)
    with Segmenter(path, backend="onnxruntime", device="cpu", with_probs=True) as seg:
        labels, probs = seg.predict_batch(frames, probs=True)
        single = seg(frames[1])
    assert labels.shape == (2, 48, 80) and probs.shape == (2, 19, 48, 80)
    assert np.mean(labels == reference) >= 0.999
    np.testing.assert_array_equal(single, labels[1])
    np.testing.assert_array_equal(probs.argmax(1), labels)


def test_eval_scores_an_exported_file_beside_its_pytorch_checkpoint_and_its_saved_predictions(exported, synthetic,
                                                                                                tmp_path):
    """``ftadapt eval --onnx`` runs the file through the runtime on the decoded frames; ``--save-pred`` of the same
    file read back with ``--pred-dir`` gives the same confusion matrix, and the checkpoint it came from is scored
    beside it in the same pass."""
    import json

    from click.testing import CliRunner

    from ftadapt.cli import cli

    _, path = exported
    data = f"cityscapes:{synthetic.cityscapes_root}"
    runner = CliRunner()
    saved = tmp_path / "saved"
    one = runner.invoke(cli, ["eval", "--onnx", str(path), "--data", data, "--device", "cpu", "--backend",
                              "onnxruntime", "--save-pred", str(saved), "--json", str(tmp_path / "one.json")])
    assert one.exit_code == 0, one.output
    alone = json.loads((tmp_path / "one.json").read_text())
    assert alone["protocol"]["backend"] == "onnxruntime" and alone["protocol"]["model"] == str(path)
    assert alone["n_images"] == 3 and alone["protocol"]["working_size"] == list(WORKING)
    both = runner.invoke(cli, ["eval", "--checkpoint", str(path.parent / "clan"), "--onnx", str(path), "--pred-dir",
                               str(saved), "--data", data, "--size", "64x32", "--device", "cpu", "--backend",
                               "onnxruntime", "--json", str(tmp_path / "all.json")])
    assert both.exit_code == 0, both.output
    results = json.loads((tmp_path / "all.json").read_text())["results"]
    assert list(results) == ["clan", "ens.onnx", "predictions"]
    assert results["predictions"]["per_class_iou"] == results["ens.onnx"]["per_class_iou"] == alone["per_class_iou"]
    assert results["clan"]["protocol"]["heads"] == "sum" and results["clan"]["n_images"] == 3
    assert "clan" in both.output and "ens.onnx" in both.output and "predictions-clan" in both.output


def test_a_real_export_passes_tensorrts_uint8_rule(exported):
    """The one-member export (FP32, probs, external data) reads its uint8 frame with one Cast and nothing else, as
    the TensorRT backend checks before parsing (test_export checks the two-member FP32 and FP16 exports)."""
    _, path = exported
    assert [op for op, _ in input_readers(path, "image")] == ["Cast"]
    check_uint8_input(read_model_file(path))  # raises EngineError otherwise


def _gpu_frames() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (2, 48, 80, 3), dtype=np.uint8)


def _cpu_labels(path) -> np.ndarray:
    with Segmenter(path, backend="onnxruntime", device="cpu") as seg:
        return seg.predict_batch(_gpu_frames())


@pytest.mark.gpu
def test_onnxruntime_cuda_really_runs_a_real_export(exported):
    """Without torch having loaded the CUDA libraries first, the session must really get the CUDA provider (the
    runtime preloads them); a silent CPU fallback would make this a CPU test."""
    count, why = backends.cuda_device_count()
    if count == 0:
        pytest.skip(f"needs an NVIDIA GPU: {why}")
    _, path = exported
    with Segmenter(path, backend="onnxruntime", device=0) as seg:
        assert seg.providers[0] == "CUDAExecutionProvider", seg.notes
        labels = seg.predict_batch(_gpu_frames())
    assert np.mean(labels == _cpu_labels(path)) >= 0.999


@pytest.mark.gpu
@pytest.mark.trt
def test_tensorrt_runs_a_real_export(exported, tmp_path):
    """A file `ftadapt export` wrote (not a hand-made toy) parses, builds and matches ONNX Runtime on the CPU."""
    count, why = backends.cuda_device_count()
    if count == 0:
        pytest.skip(f"needs an NVIDIA GPU: {why}")
    try:
        import_tensorrt()
        import_pycuda()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    ensemble, path = exported
    expected = _cpu_labels(path)
    with Segmenter(path, backend="tensorrt", engine_cache=tmp_path / "e", max_batch=2, max_size=(48, 80)) as seg:
        assert seg.describe()["engine"]["built"]
        labels = seg.predict_batch(_gpu_frames())
    assert labels.dtype == np.int32 and np.mean(labels == expected) >= 0.999
    with Segmenter(path, backend="tensorrt", engine_cache=tmp_path / "e", max_batch=2, max_size=(48, 80),
                   with_probs=True) as seg:
        labels, probs = seg.predict_batch(_gpu_frames(), probs=True)
    assert probs.shape == (2, 19, 48, 80) and np.mean(probs.argmax(1) == labels) >= 0.999
    fp16 = onnx_export.export_onnx(ensemble, tmp_path / "ens16.onnx", precision="fp16", working_size=WORKING,
                                   verify=False, progress=False).path
    with Segmenter(fp16, backend="tensorrt", engine_cache=tmp_path / "e", max_batch=2, max_size=(48, 80)) as seg:
        assert seg.describe()["engine"]["half_layers"] > 0
        labels = seg.predict_batch(_gpu_frames())
    assert np.mean(labels == expected) >= 0.99
