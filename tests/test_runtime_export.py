"""End to end: files written by ``ftadapt.export`` (the session's tiny exports, ``conftest.tiny_export``) run through
``Segmenter(backend="onnxruntime")`` and give the labels of the PyTorch graph they were exported from. The file
hand-off is the only link between the two stages (DESIGN.md §3), so this is the test that the runtime reads what the
exporter really writes — metadata, the ``image``/``labels``/``probs`` contract and an external-data file. The GPU
checks at the end run the same real files through ONNX Runtime's CUDA provider and TensorRT (marked ``gpu``/``trt``;
they skip with their reason elsewhere)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_WORKING

from ftadapt import devices
from ftadapt.export.onnx_graph import build_graph
from ftadapt.labels import CLASS_NAMES, PALETTE
from ftadapt.runtime import BackendUnavailable, Segmenter, TensorRTOptions
from ftadapt.runtime.onnx_file import input_readers, read_model_file
from ftadapt.runtime.trt_api import import_pycuda, import_tensorrt
from ftadapt.runtime.trt_engine import check_uint8_input

CPU = {"backend": "onnxruntime", "device": "cpu"}


def test_exported_ensembles_run_in_the_runtime(tiny_export):
    """The FP32 file (with ``probs``) and the FP16 file (weights in an external-data file) as an application runs
    them: metadata, labels against the PyTorch graph they were exported from, probabilities only when asked for."""
    fp32, fp16 = tiny_export["fp32"], tiny_export["fp16"]
    assert read_model_file(fp32).data_files == ()
    assert [p.name for p in read_model_file(fp16).data_files] == ["fused16.onnx.data"]
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 80, 3), dtype=np.uint8)
    with torch.no_grad():
        reference = build_graph(tiny_export["ensemble"], working_size=TINY_WORKING)(torch.from_numpy(frames)).numpy()
    with Segmenter(fp32, **CPU) as seg:
        assert seg.classes == CLASS_NAMES and seg.palette.tolist() == [list(c) for c in PALETTE]
        assert [(m.name, m.miou) for m in seg.metadata.members] == [("clan", 44.5), ("maxsquare", None)]
        assert seg.metadata.working_size == TINY_WORKING and seg.metadata.precision == "fp32"
        with pytest.raises(ValueError, match="with_probs=True"):
            seg.predict_batch(frames, probs=True)
    with Segmenter(fp32, with_probs=True, **CPU) as seg:
        labels, probs = seg.predict_batch(frames, probs=True)
        single = seg(frames[1])
    assert labels.shape == (2, 48, 80) and probs.shape == (2, 19, 48, 80)
    assert np.mean(labels == reference) >= 0.999
    np.testing.assert_array_equal(single, labels[1])
    np.testing.assert_array_equal(probs.argmax(1), labels)
    with Segmenter(fp16, **CPU) as seg:
        assert seg.metadata.precision == "fp16"
        assert np.mean(seg.predict_batch(frames) == reference) >= 0.99


def test_eval_scores_an_exported_file_beside_its_pytorch_checkpoint_and_its_saved_predictions(tiny_export,
                                                                                                synthetic, tmp_path):
    """``ftadapt eval --onnx`` runs the file through the runtime on the decoded frames; ``--save-pred`` of the same
    file read back with ``--pred-dir`` gives the same confusion matrix, and a member checkpoint of the file is scored
    beside it in the same pass."""
    import json

    from click.testing import CliRunner

    from ftadapt.cli import cli

    path = tiny_export["fp32"]
    data = f"cityscapes:{synthetic.cityscapes_root}"
    runner = CliRunner()
    saved = tmp_path / "saved"
    one = runner.invoke(cli, ["eval", "--onnx", str(path), "--data", data, "--device", "cpu", "--backend",
                              "onnxruntime", "--save-pred", str(saved), "--json", str(tmp_path / "one.json")])
    assert one.exit_code == 0, one.output
    alone = json.loads((tmp_path / "one.json").read_text())
    assert alone["protocol"]["backend"] == "onnxruntime" and alone["protocol"]["model"] == str(path)
    assert alone["n_images"] == 3 and alone["protocol"]["working_size"] == list(TINY_WORKING)
    both = runner.invoke(cli, ["eval", "--checkpoint", str(tiny_export["checkpoint"]), "--onnx", str(path),
                               "--pred-dir", str(saved), "--data", data, "--size", "64x32", "--device", "cpu",
                               "--backend", "onnxruntime", "--json", str(tmp_path / "all.json")])
    assert both.exit_code == 0, both.output
    results = json.loads((tmp_path / "all.json").read_text())["results"]
    assert list(results) == ["clan", "fused.onnx", "predictions"]
    assert results["predictions"]["per_class_iou"] == results["fused.onnx"]["per_class_iou"] == alone["per_class_iou"]
    assert results["clan"]["protocol"]["heads"] == "sum" and results["clan"]["n_images"] == 3
    assert "clan" in both.output and "fused.onnx" in both.output and "predictions-clan" in both.output


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_real_export_passes_tensorrts_uint8_rule(tiny_export, precision):
    """Both exports (FP32 with probs; FP16 with external data) read their uint8 frame with one Cast and nothing
    else, as the TensorRT backend checks before parsing."""
    path = tiny_export[precision]
    assert [op for op, _ in input_readers(path, "image")] == ["Cast"]
    check_uint8_input(read_model_file(path))  # raises EngineError otherwise


def _gpu_frames() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (2, 48, 80, 3), dtype=np.uint8)


def _cpu_labels(path) -> np.ndarray:
    with Segmenter(path, **CPU) as seg:
        return seg.predict_batch(_gpu_frames())


def _needs_gpu() -> None:
    count, why = devices.cuda_device_count()
    if count == 0:
        pytest.skip(f"needs an NVIDIA GPU: {why}")


@pytest.mark.gpu
def test_onnxruntime_cuda_really_runs_a_real_export(tiny_export):
    """Without torch having loaded the CUDA libraries first, the session must really get the CUDA provider (the
    runtime preloads them); a silent CPU fallback would make this a CPU test."""
    _needs_gpu()
    path = tiny_export["fp32"]
    with Segmenter(path, backend="onnxruntime", device="cuda:0") as seg:
        assert seg.providers[0] == "CUDAExecutionProvider", seg.notes
        labels = seg.predict_batch(_gpu_frames())
    assert np.mean(labels == _cpu_labels(path)) >= 0.999


@pytest.mark.gpu
@pytest.mark.trt
def test_tensorrt_runs_a_real_export(tiny_export, tmp_path):
    """Files `ftadapt export` wrote (not hand-made toys) parse, build and match ONNX Runtime on the CPU: FP32 with and
    without probs, and FP16 (external data) with layers in half."""
    _needs_gpu()
    try:
        import_tensorrt()
        import_pycuda()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    path, cache = tiny_export["fp32"], TensorRTOptions(engine_cache=tmp_path / "e")
    expected = _cpu_labels(path)
    with Segmenter(path, backend="tensorrt", max_batch=2, max_frame=(80, 48), tensorrt=cache) as seg:
        assert seg.describe()["engine"]["built"]
        labels = seg.predict_batch(_gpu_frames())
    assert labels.dtype == np.int32 and np.mean(labels == expected) >= 0.999
    with Segmenter(path, backend="tensorrt", max_batch=2, max_frame=(80, 48), with_probs=True, tensorrt=cache) as seg:
        labels, probs = seg.predict_batch(_gpu_frames(), probs=True)
    assert probs.shape == (2, 19, 48, 80) and np.mean(probs.argmax(1) == labels) >= 0.999
    with Segmenter(tiny_export["fp16"], backend="tensorrt", max_batch=2, max_frame=(80, 48), tensorrt=cache) as seg:
        assert seg.describe()["engine"]["half_layers"] > 0
        labels = seg.predict_batch(_gpu_frames())
    assert np.mean(labels == expected) >= 0.99
