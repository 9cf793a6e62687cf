"""Stopping and resuming a training run: a resume continues bit-for-bit (after a crash, after ``stop_at``, from a run
folder of the old config layout, with moved datasets), refuses a different config, and SIGINT/SIGTERM stop cleanly
after the current step with a checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from train_runs import OLD_LAYOUT_CONFIG, SMALL_SET, assert_same, roots, run, state

from ftadapt.checkpoint import load_checkpoint
from ftadapt.errors import UsageError
from ftadapt.methods.segmentation import Segmentation
from ftadapt.training import resolve_config, train
from ftadapt.training.run_folder import read_metrics


def test_a_run_folder_of_the_old_layout_resumes_bit_for_bit(synthetic, tmp_path):
    # A run folder written before the speed section and the recorded roots: its config.json (a real one of that
    # layout) has the speed keys at the top level and no roots; the resume gets them from the command.
    # That config's own loss settings (undamped, as the defaults were then), not today's defaults.
    then = {"loss.adv_damping": False, "loss.norm_damping": 0.0}
    run(synthetic, tmp_path / "straight", **then)
    old = tmp_path / "old"
    run(synthetic, old, stop_at=1, **then)
    (old / "config.json").write_text(json.dumps(OLD_LAYOUT_CONFIG, indent=2) + "\n")
    with pytest.raises(UsageError, match="no labelled source"):
        run(synthetic, old, resume=True, stop_at=0)
    cfg = resolve_config({**roots(synthetic), "stop_at": 0}, out=old, resume=True)
    assert (cfg.speed.amp, cfg.data.source, cfg.stop_at) == ("off", roots(synthetic)["data.source"], 0)
    assert train(cfg, out=old, resume=True, progress=False).step == 2
    assert_same(state(tmp_path / "straight"), state(old))
    assert [r["step"] for r in read_metrics(old)] == [1, 2]


def test_resume_after_a_crash_is_bit_for_bit(synthetic, tmp_path, monkeypatch):
    options = {"steps": 4, "checkpoint_every": 2, "method": "clan-norm"}
    run(synthetic, tmp_path / "straight", **options)

    original = Segmentation.source

    def crash_at_step_3(self, ctx, out):
        if ctx.step == 2:
            raise RuntimeError("simulated crash")
        return original(self, ctx, out)

    monkeypatch.setattr(Segmentation, "source", crash_at_step_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(synthetic, tmp_path / "resumed", **options)
    monkeypatch.setattr(Segmentation, "source", original)
    assert [r["step"] for r in read_metrics(tmp_path / "resumed")] == [1, 2]
    result = run(synthetic, tmp_path / "resumed", resume=True)  # the saved config; only what changes is repeated
    assert result.step == 4

    assert_same(state(tmp_path / "straight"), state(tmp_path / "resumed"))
    assert [r["step"] for r in read_metrics(tmp_path / "resumed")] == [1, 2, 3, 4]
    assert read_metrics(tmp_path / "resumed")[-1] == read_metrics(tmp_path / "straight")[-1] | {
        "time/data_share": read_metrics(tmp_path / "resumed")[-1]["time/data_share"]}
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == [
        "last", "step_000002", "step_000004"]
    assert run(synthetic, tmp_path / "resumed", resume=True).step == 4  # already complete: nothing to do


def test_stop_at_then_resume_matches_and_resume_refuses_a_different_config(synthetic, tmp_path):
    run(synthetic, tmp_path / "a", "maxsquare-norm", steps=3)
    run(synthetic, tmp_path / "b", "maxsquare-norm", steps=3, stop_at=1)
    # the dataset moved (and the speed options changed): neither blocks the resume
    moved = tmp_path / "moved"
    shutil.copytree(synthetic.gta5_root, moved / "gta5")
    shutil.copytree(synthetic.cityscapes_root, moved / "cityscapes")
    run(synthetic, tmp_path / "b", "maxsquare-norm", resume=True, stop_at=0, cudnn_benchmark=False,
         **{"data.source": f"gta5:{moved / 'gta5'}", "data.target": f"cityscapes:{moved / 'cityscapes'}"})
    assert_same(state(tmp_path / "a"), state(tmp_path / "b"))
    with pytest.raises(UsageError, match=r"differs from the run .*\n  loss.lambda_norm: 0.00015 → 0.001"):
        run(synthetic, tmp_path / "b", "maxsquare-norm", resume=True, **{"loss.lambda_norm": 0.001})


def test_a_signal_finishes_the_step_and_writes_a_checkpoint(synthetic, tmp_path, monkeypatch):
    original = Segmentation.source

    def signal_during_step_2(self, ctx, out):
        if ctx.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, ctx, out)

    monkeypatch.setattr(Segmentation, "source", signal_during_step_2)
    before = signal.getsignal(signal.SIGTERM)
    result = run(synthetic, tmp_path / "run", "source-only", steps=50, checkpoint_every=0)
    assert (result.stopped_by, result.step, result.checkpoint.name) == ("SIGTERM", 2, "step_000002")
    assert signal.getsignal(signal.SIGTERM) is before
    assert load_checkpoint(result.checkpoint, with_train_state=True).train_state["step"] == 2


def test_sigterm_to_a_cli_run_exits_cleanly_with_a_checkpoint(synthetic, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ftadapt.cli", "train", "source-only", "--source", f"gta5:{synthetic.gta5_root}",
           "--model", "tiny", "--steps", "100000", "--out", str(out), "--set", "checkpoint_every=0",
           *[a for s in SMALL_SET for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not read_metrics(out) if (out / "metrics.jsonl").is_file() else True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM: stopped after step" in stdout + stderr and "--resume" in stdout + stderr
    step = load_checkpoint(out / "checkpoints" / "last").meta["step"]
    assert step >= 1 and (out / "checkpoints" / f"step_{step:06d}").is_dir()


def test_the_cuda_rng_state_is_saved_and_restored_for_this_ranks_gpu_only(monkeypatch):
    """Reading every visible GPU's RNG state would create a CUDA context (~0.5 GiB) on each GPU in every DDP process."""
    import torch

    from ftadapt.training.state import rng_state, set_rng_state

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("reads every GPU's state"))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("writes every GPU's state"))
    monkeypatch.setattr(torch.cuda, "get_rng_state",
                        lambda device="cuda": calls.append(("get", device)) or torch.full((16,), 7, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda new_state, device="cuda": calls.append(("set", device, int(new_state[0]))))
    rank1 = torch.device("cuda", 1)
    saved = rng_state(rank1)
    assert calls == [("get", rank1)] and saved["cuda"].tolist() == [7] * 16
    set_rng_state(saved, rank1)
    assert calls[-1] == ("set", rank1, 7)
    older = {**saved, "cuda": [torch.full((16,), i, dtype=torch.uint8) for i in range(3)]}  # one per visible GPU
    set_rng_state(older, rank1)
    assert calls[-1] == ("set", rank1, 1)  # this device's entry
    calls.clear()
    assert "cuda" not in rng_state(torch.device("cpu"))
    set_rng_state(older, torch.device("cpu"))
    assert calls == []
