"""``ftadapt predict``, ``ftadapt build-engine`` and ``ftadapt inspect`` on the runtime, and the runtime benchmarks'
helpers, on a CPU with toy models — and the runtime's commands in an interpreter where torch and onnx cannot be
imported (the ``runtime`` install)."""
from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from cli_runs import exit_code
from onnx_models import build_model, expected_labels
from PIL import Image

from ftadapt import devices
from ftadapt.bench import gpu_runtime
from ftadapt.bench.gpu_runtime import measure_runtime_gpu
from ftadapt.labels import PALETTE


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


def test_build_engine_without_tensorrt_or_a_gpu_says_what_is_missing(tmp_path, monkeypatch, capsys):
    """``--device`` is auto by default: on a machine without a GPU the error says that TensorRT needs a CUDA device
    (and what to install); ``--device cpu`` and a misspelt device are usage errors."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(devices, "cuda_device_count", lambda: (0, "no NVIDIA driver (libcuda not found)"))
    model = build_model(tmp_path / "toy.onnx")
    assert exit_code(["build-engine", model, "--cache", tmp_path / "engines", "--max-size", "64x128"]) == 1
    err = capsys.readouterr().err
    assert "--max-size 64x128 is HEIGHTxWIDTH and deprecated" in err and "use --max-frame 128x64" in err
    assert "error: TensorRT needs a CUDA device, and this machine has none (no NVIDIA driver (libcuda not found" in err
    assert "pip install 'ftadapt[trt]'" in err and "backend='onnxruntime'" in err
    assert not (tmp_path / "engines").exists()
    assert exit_code(["build-engine", model, "--device", "cpu"]) == 2
    assert "backend='tensorrt' needs a CUDA device, not device='cpu'" in capsys.readouterr().err
    assert exit_code(["build-engine", model, "--device", "gpu0"]) == 2
    assert "expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err


@pytest.mark.skipif(devices.cuda_device_count()[0] > 0, reason="checks the report of a machine without a GPU")
def test_gpu_runtime_report_degrades_gracefully_without_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_runtime, "environment", lambda device: {"gpu": "none"})  # spares the torch import
    model = build_model(tmp_path / "toy.onnx")
    report = measure_runtime_gpu(model, frame_size=(16, 8), warmup=1, runs=2, cpu_runs=2, workdir=tmp_path / "w")
    cpu = report["results"]["onnxruntime-cpu"]
    assert cpu["providers"] == ["CPUExecutionProvider"] and cpu["runs"] == 2 and cpu["p50_ms"] > 0
    assert report["results"]["onnxruntime-cuda"].startswith("not available: device cuda:0 asked for, but this "
                                                            "machine has no CUDA device")
    assert report["results"]["tensorrt"].startswith("not available: ")
    assert "tensorrt-cuda-graph" not in report["results"]
    json.dumps(report)  # serialisable for the GPU script's report


def test_inspect_lists_a_missing_data_file_that_predict_refuses(tmp_path, capsys):
    """One reader for both: ``inspect`` names the external-data file that is not there (and reads the graph types
    through onnx, installed here), and running the file says what is missing."""
    model = build_model(tmp_path / "ext.onnx", external_data=True)
    (tmp_path / "ext.onnx.data").unlink()
    assert exit_code(["inspect", model, "--json", tmp_path / "d.json"]) == 0
    out = capsys.readouterr().out
    described = json.loads((tmp_path / "d.json").read_text())
    assert described["missing_files"] == [str(tmp_path / "ext.onnx.data")] and described["files"][1:] == \
        described["missing_files"]
    assert f"MISSING     {tmp_path / 'ext.onnx.data'}" in out and "1 external-data file(s)" in out
    assert described["graph_precision"] == "fp32" and described["graph_types"]["argmax"] == ["float"]
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "a.png")
    assert exit_code(["predict", "--model", model, tmp_path / "a.png", "--out", tmp_path / "out", "--device",
                      "cpu"]) == 1
    assert "keeps its weights in 'ext.onnx.data', which is missing beside it" in capsys.readouterr().err


NO_TORCH_NOR_ONNX = """
import json, sys
for name in ("torch", "torchvision", "onnx", "onnxscript"):
    sys.modules[name] = None  # importing them raises ImportError, as on a machine without them
from ftadapt.cli import main

codes = []
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
        codes.append(0)
    except SystemExit as exc:
        codes.append(exc.code)
print(json.dumps({"codes": codes, "absent": [m for m in ("torch", "onnx") if sys.modules.get(m) is None]}))
"""


def test_the_runtime_commands_run_with_neither_torch_nor_onnx(tmp_path):
    """The runtime install (numpy, onnxruntime, click, pillow, tqdm) runs ``predict``, ``inspect`` (graph types
    then unknown) and ``bench latency --model`` on ONNX Runtime; the pytorch backend and ``--random`` say what they
    need. One fresh interpreter for all of them, in which importing torch or onnx fails."""
    model = build_model(tmp_path / "toy.onnx")
    frame = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(frame).save(tmp_path / "in" / "a.png")
    latency = ["bench", "latency", "--model", str(model), "--device", "cpu", "--runs", "2", "--warmup", "1",
               "--frame-size", "16x8"]
    commands = [
        ["predict", "--model", str(model), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--backend",
         "onnxruntime", "--device", "cpu"],
        ["inspect", str(model), "--json", str(tmp_path / "inspect.json")],
        [*latency, "--backends", "onnxruntime", "--json", str(tmp_path / "latency.json")],
        [*latency, "--backends", "onnxruntime,pytorch"],
        ["bench", "latency", "--random", "tiny", "--backends", "onnxruntime", "--device", "cpu"],
    ]
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_NOR_ONNX, json.dumps(commands)], capture_output=True,
                          text=True, cwd=Path(__file__).parent, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 2, 2], "absent": ["torch", "onnx"]}, proc.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")), expected_labels(frame))
    described = json.loads((tmp_path / "inspect.json").read_text())
    assert described["graph_precision"] == "unknown (onnx not installed)" and described["graph_types"] is None
    assert described["metadata"]["precision"] == "fp32" and described["opset"] == 17 and described["nodes"] == 5
    assert "precision   graph unknown (onnx not installed)" in proc.stdout
    (row,) = json.loads((tmp_path / "latency.json").read_text())["results"]
    assert row["backend"] == "onnxruntime" and row["runs"] == 2 and row["p50_ms"] > 0 and row["frame_size"] == [16, 8]
    assert "error: --backends pytorch needs torch, which cannot be imported here" in proc.stderr
    assert "pip install 'ftadapt[train]', or leave pytorch out of --backends" in proc.stderr
    assert "error: --random (a random-init model exported here) needs torch" in proc.stderr
    assert "or time an exported file with --model" in proc.stderr
