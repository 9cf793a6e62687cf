"""``ftadapt bench latency``: statistics on a fake timer, the batch sweep when memory runs out, the runners, the
environment every result carries, and the command end to end on the tiny model (ONNX Runtime and PyTorch on the CPU,
TensorRT listed as not run)."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
from onnx_models import build_model
from PIL import Image

from ftadapt.bench import latency, report
from ftadapt.bench.random_models import WEIGHTS_NOTE
from ftadapt.bench.runners import Runner, TorchRunner
from ftadapt.cli import main


class FakeRunner(Runner):
    """Records the batches it is called with; reports a device time of 1.5 ms per frame; runs out of memory from
    ``oom_at`` frames on."""

    backend = "fake"

    def __init__(self, oom_at: int | None = None, error: Exception | None = None) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.oom_at, self.error = oom_at, error

    def __call__(self, batch):
        if self.error is not None:
            raise self.error
        if self.oom_at is not None and len(batch) >= self.oom_at:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.calls.append(batch.shape)
        return np.zeros(batch.shape[:3], np.int32)

    def device_ms(self):
        return 1.5 * self.calls[-1][0]


def fake_clock(durations):
    """A clock whose successive (start, end) readings are ``durations`` seconds apart."""
    readings = iter(np.cumsum([x for d in durations for x in (1.0, d)]).tolist())
    return lambda: next(readings)


def test_latency_statistics_on_a_fake_timer():
    frames = [np.full((4, 6, 3), i, np.uint8) for i in range(3)]
    runner = FakeRunner()
    times = [0.010, 0.020, 0.030, 0.040, 0.100]
    stats = latency.time_runner(runner, frames, batch=2, warmup=2, runs=5, clock=fake_clock(times))
    assert runner.calls == [(2, 4, 6, 3)] * 7  # two untimed warm-up calls, then five timed ones
    assert (stats["runs"], stats["batch"], stats["warmup"]) == (5, 2, 2)
    assert stats["p50_ms"] == 30.0 and stats["mean_ms"] == 40.0
    assert stats["p90_ms"] == pytest.approx(76.0) and stats["p99_ms"] == pytest.approx(97.6)  # linear interpolation
    assert stats["per_frame_p50_ms"] == 15.0 and stats["per_frame_mean_ms"] == 20.0
    assert stats["fps"] == pytest.approx(2 * 5 / 0.2) and stats["samples_ms"] == [10.0, 20.0, 30.0, 40.0, 100.0]
    assert stats["device_time"] == {"p50_ms": 3.0, "p90_ms": 3.0, "p99_ms": 3.0, "mean_ms": 3.0}
    single = latency.latency_stats([0.010, 0.020, 0.030, 0.040])
    assert (single["p50_ms"], single["fps"], single["p90_ms"]) == (25.0, 40.0, pytest.approx(37.0))
    assert "per_frame_p50_ms" not in single


def test_the_batch_sweep_stops_at_the_first_batch_that_does_not_fit():
    frames = [np.zeros((4, 6, 3), np.uint8)]
    rows = latency.sweep(FakeRunner(oom_at=4), frames, (1, 2, 4, 8), warmup=0, runs=2)
    assert [r["batch"] for r in rows] == [1, 2, 4] and "p50_ms" in rows[1]
    assert rows[2]["status"].startswith("not run: out of memory at batch 4 (CUDA out of memory. Tried to allocate")
    assert rows[2]["status"].endswith("larger batches not tried")
    with pytest.raises(RuntimeError, match="cuDNN error"):  # anything else is a failure, not a memory limit
        latency.sweep(FakeRunner(error=RuntimeError("cuDNN error: BAD_PARAM")), frames, (1, 2), warmup=0, runs=1)
    assert latency.out_of_memory(MemoryError()) and latency.out_of_memory(RuntimeError("Failed to allocate memory"))


def test_the_pytorch_runner_returns_the_graphs_labels_on_the_cpu():
    class Graph(torch.nn.Module):
        working_size = (4, 2)

        def forward(self, image):
            return image.sum(-1).to(torch.int32) % 19

    batch = np.random.default_rng(0).integers(0, 256, (2, 4, 6, 3), dtype=np.uint8)
    runner = TorchRunner(Graph(), "cpu", precision="fp32")
    np.testing.assert_array_equal(runner(batch), batch.astype(np.int32).sum(-1) % 19)
    assert runner.device_ms() is None and runner.peak_bytes() is None and runner.variant == "eager"
    assert runner.describe() == {"device": "cpu", "precision": "fp32", "working_size": [4, 2]}
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        TorchRunner(Graph(), "cpu", precision="fp32", cuda_graph=True)


def test_pytorch_rows_that_cannot_run_say_why(tmp_path):
    fp16 = build_model(tmp_path / "toy16.onnx", precision="fp16")
    target = latency.Target("toy16", fp16)
    (row,) = latency.open_runners(target, "pytorch", "cpu", cuda_graph=False)
    assert row == ("eager", "not run: no --checkpoints to rebuild the exported module from (pass the member "
                            "checkpoint folders the file was exported from)")
    with_checkpoints = latency.Target("toy16", fp16, (tmp_path,))
    assert list(latency.open_runners(with_checkpoints, "pytorch", "cpu", cuda_graph=True)) == [
        ("eager", "not run: the FP16 module runs in PyTorch on CUDA only (--device cuda:N)")]
    tensorrt = list(latency.open_runners(target, "tensorrt", "cpu", batches=(1,), frame_size=(8, 4), threads=None,
                                         cuda_graph=True, engine_cache=None))
    assert tensorrt == [("eager", "not run: TensorRT needs a CUDA device (--device cuda:N)"),
                        ("cuda-graph", "not run: TensorRT needs a CUDA device (--device cuda:N)")]


def test_every_result_carries_its_environment(monkeypatch):
    smi = "NVIDIA H100 80GB HBM3, 570.86.15, 81559 MiB, 700.00 W, 1980 MHz, P0\n"

    real_run = subprocess.run

    def fake_run(argv, **kwargs):  # platform asks `uname -p`; nvidia-smi gets the answer of an H100 machine
        return subprocess.CompletedProcess(argv, 0, stdout=smi) if argv[0] == "nvidia-smi" else real_run(argv, **kwargs)

    monkeypatch.setattr(report.subprocess, "run", fake_run)
    env = report.environment("cpu")
    assert env["nvidia_smi"] == [{"name": "NVIDIA H100 80GB HBM3", "driver_version": "570.86.15",
                                  "memory.total": "81559 MiB", "power.limit": "700.00 W", "clocks.max.sm": "1980 MHz",
                                  "pstate": "P0"}]
    import onnxruntime

    assert env["onnxruntime"] == onnxruntime.__version__ and env["torch"] == torch.__version__
    assert env["onnxruntime_available_providers"] == onnxruntime.get_available_providers()
    assert env["cpu_model"] == report.cpu_model() and env["cpu_count"] >= env["usable_cores"] >= 1
    assert env["device"] == "cpu" and isinstance(env["tensorrt"], str) and "python" in env
    def missing(argv, **kwargs):
        raise FileNotFoundError("[Errno 2] No such file or directory: 'nvidia-smi'")

    monkeypatch.setattr(report.subprocess, "run", missing)
    assert report.nvidia_smi() == {"nvidia_smi": "not available: [Errno 2] No such file or directory: 'nvidia-smi'"}


def test_the_command_times_every_backend_on_an_exported_file(tiny_export, tmp_path, capsys):
    """``--model`` with ``--checkpoints``: the session's tiny FP32 export on ONNX Runtime and, rebuilt from the
    members' checkpoints (matched by sha256), in PyTorch, at batches 1 and 2; TensorRT listed as not run."""
    out = tmp_path / "out"
    main(["bench", "latency", "--model", str(tiny_export["fp32"]), "--checkpoints", str(tiny_export["root"]),
          "--frame-size", "128x64", "--device", "cpu", "--batches", "1,2", "--warmup", "1", "--runs", "3",
          "--threads", "1", "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    timed = [r for r in results["results"] if "p50_ms" in r]
    assert {(r["backend"], r["batch"]) for r in timed} == {(b, n) for b in ("onnxruntime", "pytorch") for n in (1, 2)}
    assert all(r["runs"] == 3 and r["frame_size"] == [128, 64] and r["working_size"] == [64, 32] and r["members"] == 2
               and r["model"] == "fused.onnx" and not r["flip"] for r in timed)
    ort = next(r for r in timed if r["backend"] == "onnxruntime")
    assert ort["providers"] == ["CPUExecutionProvider"] and ort["precision"] == "fp32"
    assert next(r for r in timed if r["backend"] == "pytorch")["device"] == "cpu"
    assert [r["status"] for r in results["results"] if r["backend"] == "tensorrt"] == [
        "not run: TensorRT needs a CUDA device (--device cuda:N)"]
    assert results["device"] == "cpu" and results["environment"]["device"] == "cpu"
    assert "cpu_model" in results["environment"]
    text = (out / "report.md").read_text()
    assert "## fused.onnx — fp32" in text and "| onnxruntime (eager, CPUExecutionProvider" in text
    assert "- tensorrt (eager): not run: TensorRT needs a CUDA device" in text
    with Image.open(out / "latency.png") as image:
        assert image.text["Description"] == ("panels: Latency distribution per backend (batch 1, after warm-up; "
                                             "whiskers p1–p99); Throughput by batch size")
    assert json.loads(capsys.readouterr().out)["benchmark"] == "latency"


def test_random_init_exports_are_made_once_with_flip_beside_plain(tmp_path, monkeypatch, capsys):
    """``--random tiny --flip``: calibrated random-init checkpoints and two exports (plain and flip-fused) named in
    the work folder and reused there; the flip rows carry their p50 ratio to the plain graph's. The export itself
    (``export_onnx``, tested in test_export) is replaced by the toy model, so that the run costs no tracing."""
    from ftadapt.export import onnx_export

    exports = []

    def toy_export(ensemble, out, *, precision, working_size, verify, progress):
        exports.append((out.name, precision, working_size, ensemble.flip, [i.name for i in ensemble.infos], verify))
        return build_model(out, precision=precision)

    monkeypatch.setattr(onnx_export, "export_onnx", toy_export)
    argv = ["bench", "latency", "--random", "tiny", "--working-size", "64x32", "--frame-size", "16x8", "--flip",
            "--backends", "onnxruntime", "--device", "cpu", "--warmup", "1", "--runs", "2", "--workdir",
            str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    main(argv)
    assert sorted(exports) == [("tiny-64x32-fp32-flip.onnx", "fp32", (64, 32), True, ["tiny-random"], False),
                               ("tiny-64x32-fp32.onnx", "fp32", (64, 32), False, ["tiny-random"], False)]
    assert (tmp_path / "work" / "tiny-random" / "model.pt").is_file()
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert [(r["model"], r["flip"], r["weights"]) for r in rows] == [("tiny", False, WEIGHTS_NOTE),
                                                                    ("tiny", True, WEIGHTS_NOTE)]
    assert rows[1]["p50_ratio_to_plain"] == round(rows[1]["p50_ms"] / rows[0]["p50_ms"], 3)
    assert "p50_ratio_to_plain" not in rows[0]
    report_md = (tmp_path / "out" / "report.md").read_text()
    assert "## tiny — fp32\n" in report_md and "## tiny — fp32, flip" in report_md
    main([*argv[:-2], "--json", str(tmp_path / "again.json")])
    assert len(exports) == 2  # the work folder's exports are reused
    capsys.readouterr()
