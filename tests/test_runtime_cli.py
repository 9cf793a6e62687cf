"""``ftadapt predict`` and ``ftadapt build-engine``, and the runtime benchmarks' helpers, on a CPU with toy models."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
from cli_runs import exit_code
from onnx_models import build_model, expected_labels
from PIL import Image

from ftadapt.bench import gpu_runtime
from ftadapt.bench.gpu_runtime import measure_runtime_gpu
from ftadapt.labels import PALETTE
from ftadapt.runtime import backends


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    frames = {"frankfurt_000000_000294_leftImg8bit": rng.integers(0, 256, (6, 10, 3), dtype=np.uint8),
              "sub/b": rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)}
    for name, frame in frames.items():
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(tmp_path / "in" / f"{name}.png")
    return tmp_path / "in", frames


def test_predict_writes_label_pngs_and_overlays(tmp_path, inputs, capsys):
    folder, frames = inputs
    model = build_model(tmp_path / "toy.onnx")
    code = exit_code(["predict", "--model", model, folder, "--out", tmp_path / "out", "--backend", "onnxruntime",
                      "--device", "cpu", "--alpha", "1", "--json", tmp_path / "summary.json"])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == 2 and summary["providers"] == ["CPUExecutionProvider"] and summary["fps"] > 0
    for name, frame in frames.items():
        labels = Image.open(tmp_path / "out" / f"{name}.png")
        assert labels.mode == "P"  # pixel values are the class ids, the palette only colours them
        np.testing.assert_array_equal(np.asarray(labels), expected_labels(frame))
        overlay = np.asarray(Image.open(tmp_path / "out" / f"{name}_color.png"))  # alpha 1: pure palette colours
        np.testing.assert_array_equal(overlay, np.asarray(PALETTE, np.uint8)[expected_labels(frame)])
    assert "2 frames in" in capsys.readouterr().out


def test_predict_input_errors(tmp_path, inputs, capsys):
    folder, _ = inputs
    model = build_model(tmp_path / "toy.onnx")
    base = ["predict", "--model", model, "--out", tmp_path / "out", "--backend", "onnxruntime", "--device", "cpu"]
    assert exit_code([*base, tmp_path / "nothing.png"]) == 2
    assert "nothing.png does not exist" in capsys.readouterr().err
    (tmp_path / "dup").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "dup" / "sub.png")
    (tmp_path / "other").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "other" / "sub.png")
    assert exit_code([*base, tmp_path / "dup", tmp_path / "other"]) == 2
    assert "would both be written as sub.png" in capsys.readouterr().err
    assert exit_code([*base, "--max-frame", "4x4", folder]) == 2
    # issue 16, case 14: the input file and the CLI flag that fixes it, not a Python fix
    err = capsys.readouterr().err
    assert "frankfurt_000000_000294_leftImg8bit.png: the frame is 10x6 (W×H), larger than the largest frame" in err
    assert "pass --max-frame 10x6" in err and not list((tmp_path / "out").rglob("*.png"))
    assert exit_code([*base, "--max-frame", "4by4", folder]) == 2
    assert "'4by4' is not WIDTHxHEIGHT" in capsys.readouterr().err
    assert exit_code([*base, "--max-size", "4by4", folder]) == 2  # the deprecated H×W spelling
    assert "expected HEIGHTxWIDTH" in capsys.readouterr().err
    assert exit_code([*base, "--max-size", "4x6", folder]) == 2
    err = capsys.readouterr().err
    assert "--max-size 4x6 is HEIGHTxWIDTH and deprecated" in err and "use --max-frame 6x4" in err
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 16)
    monkey = pytest.MonkeyPatch()
    monkey.setitem(sys.modules, "cv2", None)
    try:
        assert exit_code([*base, tmp_path / "clip.mp4"]) == 2
    finally:
        monkey.undo()
    assert "pip install opencv-python-headless" in capsys.readouterr().err


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_predict_never_writes_into_its_inputs_nor_over_earlier_outputs(tmp_path, inputs, capsys):
    """Issue 16, case 1: ``--out IMGS`` replaced the photos with label maps (exit 0), a second run read its own
    outputs, and x.png + x_color.png in one folder overwrote each other's outputs."""
    folder, _ = inputs
    model = build_model(tmp_path / "toy.onnx")
    base = ["predict", "--model", model, "--backend", "onnxruntime", "--device", "cpu"]
    photos = _tree(folder)
    for out, why in ((folder, "is the input"), (folder / "sub" / "out", "lies inside the input")):
        assert exit_code([*base, folder, "--out", out, "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"--out {out} {why} {folder}; a command never writes into what it reads" in err, err
        assert _tree(folder) == photos
    (tmp_path / "pair").mkdir()
    for name in ("x", "x_color"):
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "pair" / f"{name}.png")
    assert exit_code([*base, tmp_path / "pair", "--out", tmp_path / "o1"]) == 2
    err = capsys.readouterr().err
    assert "x.png and " in err and "x_color.png would both be written as x_color.png" in err
    assert not (tmp_path / "o1").exists()
    assert exit_code([*base, folder, "--out", tmp_path / "o2"]) == 0
    first = _tree(tmp_path / "o2")
    (tmp_path / "o2" / "sub" / "b.png").write_bytes(b"edited by hand")
    assert exit_code([*base, folder, "--out", tmp_path / "o2"]) == 2  # a rerun does not replace earlier outputs …
    err = capsys.readouterr().err
    assert "already exists (4 of the 4 outputs do); pass --overwrite to replace them" in err
    assert (tmp_path / "o2" / "sub" / "b.png").read_bytes() == b"edited by hand"
    assert exit_code([*base, folder, "--out", tmp_path / "o2", "--overwrite"]) == 0  # … unless asked to
    assert _tree(tmp_path / "o2") == first


def test_an_image_too_large_to_decode_is_named_with_the_way_to_allow_it(tmp_path, monkeypatch, capsys):
    """Issue 16, case 5: a 15000×15000 PNG died in Pillow's DecompressionBombError. Shown here with Pillow's limit
    lowered so that a 60×60 image trips the same guard (a real 15000×15000 frame needs 675 MB to build)."""
    from PIL import Image as PILImage

    model = build_model(tmp_path / "toy.onnx")
    Image.fromarray(np.zeros((60, 60, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # refused above 2000 pixels
    base = ["predict", "--model", model, tmp_path / "big.png", "--device", "cpu", "--out", tmp_path / "out"]
    assert exit_code(base) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "big.png: too large to decode safely (Image size (3600 pixels)" in err
    assert "FTADAPT_MAX_IMAGE_PIXELS=<pixels>" in err and "PIL.Image.MAX_IMAGE_PIXELS" in err
    monkeypatch.setenv("FTADAPT_MAX_IMAGE_PIXELS", "4000")
    assert exit_code(base) == 0 and (tmp_path / "out" / "big.png").is_file()
    monkeypatch.setenv("FTADAPT_MAX_IMAGE_PIXELS", "lots")
    assert exit_code([*base[:-1], tmp_path / "out2"]) == 1
    assert "FTADAPT_MAX_IMAGE_PIXELS='lots': expected a positive whole number of pixels" in capsys.readouterr().err


def test_predict_reads_videos_with_opencv(tmp_path, monkeypatch):
    frames = [np.full((4, 6, 3), (10 * i, 200, 5), np.uint8) for i in range(5)]  # BGR as OpenCV returns them

    class Capture:
        def __init__(self, path):
            self.left = list(frames)

        def isOpened(self):
            return True

        def get(self, prop):
            return len(frames)

        def read(self):
            return (True, self.left.pop(0)) if self.left else (False, None)

        def release(self):
            pass

    cv2 = types.SimpleNamespace(VideoCapture=Capture, CAP_PROP_FRAME_COUNT=7, COLOR_BGR2RGB=4,
                                cvtColor=lambda f, code: f[..., ::-1])
    monkeypatch.setitem(sys.modules, "cv2", cv2)
    (tmp_path / "drive.mp4").write_bytes(b"\0")
    model = build_model(tmp_path / "toy.onnx")
    assert exit_code(["predict", "--model", model, tmp_path / "drive.mp4", "--out", tmp_path / "out", "--every",
                      "2", "--device", "cpu"]) == 0
    written = sorted(p.name for p in (tmp_path / "out" / "drive").glob("*.png"))
    assert written == ["drive_000000.png", "drive_000000_color.png", "drive_000002.png", "drive_000002_color.png",
                       "drive_000004.png", "drive_000004_color.png"]
    labels = np.asarray(Image.open(tmp_path / "out" / "drive" / "drive_000004.png"))
    np.testing.assert_array_equal(labels, expected_labels(frames[4][..., ::-1]))  # RGB: green (200) wins


def test_build_engine_without_tensorrt_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    model = build_model(tmp_path / "toy.onnx")
    assert exit_code(["build-engine", model, "--cache", tmp_path / "engines", "--max-size", "64x128"]) == 1
    err = capsys.readouterr().err
    assert "pip install 'ftadapt[trt]'" in err and "backend='onnxruntime'" in err
    assert not (tmp_path / "engines").exists()


@pytest.mark.skipif(backends.cuda_device_count()[0] > 0, reason="checks the report of a machine without a GPU")
def test_gpu_runtime_report_degrades_gracefully_without_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_runtime, "environment", lambda device: {"gpu": "none"})  # spares the torch import
    model = build_model(tmp_path / "toy.onnx")
    report = measure_runtime_gpu(model, frame_size=(16, 8), warmup=1, runs=2, cpu_runs=2, workdir=tmp_path / "w")
    cpu = report["results"]["onnxruntime-cpu"]
    assert cpu["providers"] == ["CPUExecutionProvider"] and cpu["runs"] == 2 and cpu["p50_ms"] > 0
    assert report["results"]["onnxruntime-cuda"].startswith("not available: ONNX Runtime gave CPUExecutionProvider")
    assert report["results"]["tensorrt"].startswith("not available: ")
    assert "tensorrt-cuda-graph" not in report["results"]
    json.dumps(report)  # serialisable for the GPU script's report
