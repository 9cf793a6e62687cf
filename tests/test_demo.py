"""``ftadapt demo``: its record of finished stages (reuse, refusal, --overwrite), and the whole demo on a small
synthetic set stopped by SIGTERM in the middle of a training run, then continued to its report."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftadapt.demo.run import run_demo
from ftadapt.demo.settings import DemoSettings
from ftadapt.demo.state import DemoState, DemoStopped, stop_on_signals
from ftadapt.errors import UsageError

SETTINGS = {"seed": 0, "steps": 5, "ftadapt": "test"}


def _stage(calls: list, name: str, output: str | None = None):
    def run() -> dict:
        calls.append(name)
        return {"value": len(calls), "outputs": [output] if output else []}
    return run


def test_a_rerun_reuses_finished_stages_until_one_must_run_again(tmp_path):
    calls: list[str] = []
    state = DemoState.open(tmp_path / "d", SETTINGS, entries=("a.txt",), overwrite=False)
    (tmp_path / "d" / "a.txt").write_text("a")
    state.run("a", "stage a", _stage(calls, "a", "a.txt"))
    state.run("b", "stage b", _stage(calls, "b"))
    assert calls == ["a", "b"]
    recorded = json.loads((tmp_path / "d" / "demo.json").read_text())
    assert recorded["settings"] == SETTINGS and set(recorded["stages"]) == {"a", "b"}

    again = DemoState.open(tmp_path / "d", SETTINGS, entries=("a.txt",), overwrite=False)
    assert again.run("a", "stage a", _stage(calls, "a"))["value"] == 1  # the recorded result
    again.run("b", "stage b", _stage(calls, "b"))
    assert calls == ["a", "b"]

    (tmp_path / "d" / "a.txt").unlink()  # a recorded output is gone: that stage and every later one run again
    third = DemoState.open(tmp_path / "d", SETTINGS, entries=("a.txt",), overwrite=False)
    third.run("a", "stage a", _stage(calls, "a"))
    third.run("b", "stage b", _stage(calls, "b"))
    assert calls == ["a", "b", "a", "b"]


def test_other_settings_or_a_foreign_folder_are_refused_and_overwrite_removes_only_the_demos_files(tmp_path):
    out = tmp_path / "d"
    DemoState.open(out, SETTINGS, entries=("runs",), overwrite=False)
    (out / "runs").mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(UsageError, match="holds a demo run with other settings .*seed 0.* pass --overwrite"):
        DemoState.open(out, {**SETTINGS, "seed": 1}, entries=("runs",), overwrite=False)
    state = DemoState.open(out, {**SETTINGS, "seed": 1}, entries=("runs",), overwrite=True)
    assert not (out / "runs").exists() and (out / "mine.txt").read_text() == "keep" and state.stages == {}
    foreign = tmp_path / "f"
    foreign.mkdir()
    (foreign / "x").write_text("x")
    with pytest.raises(UsageError, match="is not empty and holds no demo"):
        DemoState.open(foreign, SETTINGS, entries=(), overwrite=False)


def test_sigterm_stops_the_block_as_ctrl_c_does(tmp_path):
    state = DemoState(tmp_path, SETTINGS, current="3. export")
    with pytest.raises(DemoStopped, match="SIGTERM"), stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert "during '3. export'" in str(state.stopped("SIGTERM")) and f"--out {tmp_path}" in str(state.stopped("x"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# The demo on a small synthetic set: 6 source, 4 + 3 target images, 160×96 and 128×64, every step logged; through
# the command line, whose settings are the defaults but for these.
SMALL = {"n_source": 6, "n_target_train": 4, "n_target_val": 3, "source_size": (160, 96), "target_size": (128, 64),
         "log_every": 1, "analysis_points": 10}
DRIVER = f"""
import functools, sys
import ftadapt.commands.demo as command
command.DemoSettings = functools.partial(command.DemoSettings, **{SMALL!r})
from ftadapt.cli import main
main(["demo", "--out", sys.argv[1], "--steps", sys.argv[2]])
"""
STEPS = 16


def _demo(out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(out), str(STEPS)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_steps(metrics: Path, proc: subprocess.Popen, steps: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= steps:
            return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{metrics} never reached {steps} steps: {proc.communicate()}")


@pytest.mark.slow
def test_sigterm_stops_the_whole_demo_and_a_rerun_resumes_it_to_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    proc = _demo(out)
    _wait_for_steps(out / "runs" / "norm-only" / "metrics.jsonl", proc, 3)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stdout + stderr
    found = re.search(r"demo stopped during '2\. train.*: SIGTERM stopped the norm-only run after step "
                      rf"(\d+) of {STEPS}", stderr)
    assert found, stderr
    stopped_at = int(found.group(1))
    assert 3 <= stopped_at < STEPS
    assert "Traceback" not in stderr and f"run `ftadapt demo --out {out}` again" in stderr
    assert not (out / "runs" / "clan-norm").exists() and not (out / "ensemble-fp32.onnx").exists()  # did not go on

    proc = _demo(out)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stdout + stderr
    assert "(finished in an earlier run: reused)" in stdout  # the data
    assert f"norm-only: resuming the stopped run from step {stopped_at}" in stdout
    assert stdout.rstrip().endswith(f"report: {out / 'report.md'}")
    runs = json.loads((out / "demo.json").read_text())["stages"]["train"]["runs"]
    assert {m: (r["step"], r["how"]) for m, r in runs.items()} == {
        "source-only": (STEPS, "finished earlier"), "norm-only": (STEPS, f"resumed from step {stopped_at}"),
        "clan-norm": (STEPS, "trained")}
    metrics = [json.loads(line)["step"] for line in (out / "runs" / "norm-only" / "metrics.jsonl").open()]
    assert metrics == list(range(1, STEPS + 1))  # each step logged once across the two sessions

    report = (out / "report.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(pictures) == 5 and all((out / p).stat().st_size > 10_000 for p in pictures)
    for heading in ("## 1. Accuracy", "## 2. Deployment", "## 3. Feature space", "## 4. Predictions", "## 5. Training"):
        assert heading in report
    assert f"resumed from step {stopped_at}" in report and "| ensemble+flip |" in report
    assert "**PASSED: onnxruntime passes against pytorch" in report  # the parity gate of the FP16 graph
    assert "| FP16 graph onnxruntime |" in (out / "table1.md").read_text()
    assert not re.search(r"\b(nan|None)\b", report)

    moved = out.rename(tmp_path / "moved")  # the demo folder records its paths relative to itself
    capsys.readouterr()
    run_demo(moved, DemoSettings(steps=STEPS, **SMALL))  # everything finished: all reused
    assert capsys.readouterr().out.count("(finished in an earlier run: reused)") == 7
