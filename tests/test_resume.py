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
from train_runs import OLD_LAYOUT_CONFIG, OLD_LAYOUT_HASH, SMALL_SET, assert_same, roots, run, state

from ftadapt.checkpoint import load_checkpoint
from ftadapt.errors import UsageError
from ftadapt.methods.segmentation import Segmentation
from ftadapt.run_folder import read_metrics
from ftadapt.training import resolve_config, train


def test_a_run_folder_of_the_old_layout_resumes_bit_for_bit(synthetic, tmp_path):
    # A run folder written before the speed section and the recorded roots: its config.json (a real one of that
    # layout) has the speed keys at the top level and no roots; the resume gets them from the command. The speed
    # switches removed since were on: they computed the same values, so the run resumes as if they were off.
    # That config's own loss settings (undamped, as the defaults were then), not today's defaults.
    then = {"loss.adv_damping": False, "loss.norm_damping": 0.0}
    run(synthetic, tmp_path / "straight", **then)
    old = tmp_path / "old"
    run(synthetic, old, stop_at=1, **then)
    switched = {**OLD_LAYOUT_CONFIG, "channel_multiple": 8, "space_to_batch": True, "cuda_graphs": True}
    (old / "config.json").write_text(json.dumps(switched, indent=2) + "\n")
    with pytest.raises(UsageError, match="no labelled source"):
        run(synthetic, old, resume=True, stop_at=0)
    cfg = resolve_config({**roots(synthetic), "stop_at": 0}, out=old, resume=True)
    assert (cfg.speed.amp, cfg.data.source, cfg.stop_at) == ("off", roots(synthetic)["data.source"], 0)
    assert train(cfg, out=old, resume=True, progress=False).step == 2
    assert_same(state(tmp_path / "straight"), state(old))
    assert [r["step"] for r in read_metrics(old)] == [1, 2]
    assert load_checkpoint(old / "checkpoints" / "last").meta["config_hash"] == OLD_LAYOUT_HASH  # the hash it had


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
    run(synthetic, tmp_path / "b", "maxsquare-norm", resume=True, stop_at=0, **{"speed.cudnn_benchmark": False},
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


@pytest.mark.slow
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


def _double_signal_at(ctx_step):
    """Segmentation.source that gets two SIGINTs during the step with ``ctx.step == ctx_step`` (a double Ctrl-C)."""
    original = Segmentation.source

    def source(self, ctx, out):
        if ctx.step == ctx_step:
            os.kill(os.getpid(), signal.SIGINT)  # the first asks for a clean stop after this step …
            os.kill(os.getpid(), signal.SIGINT)  # … the second ends the run at once
        return original(self, ctx, out)

    return source


def test_a_double_ctrl_c_says_what_was_lost_and_where_the_run_continues(synthetic, tmp_path, monkeypatch):
    """Issue 16, case 10: a double Ctrl-C printed only "aborted" and lost the steps since the last checkpoint."""
    from ftadapt.training.loop import TrainingInterrupted

    out = tmp_path / "run"
    monkeypatch.setattr(Segmentation, "source", _double_signal_at(3))  # during step 4; checkpoints every 2 steps
    with pytest.raises(TrainingInterrupted) as info:
        run(synthetic, out, "source-only", steps=6, checkpoint_every=2)
    assert str(info.value) == (f"interrupted after step 3: the last checkpoint is {out / 'checkpoints' / 'step_000002'}"
                               f" (step 2) and steps 3–3 since then are lost; continue with the same command and "
                               f"--resume (--out {out})")
    assert info.value.exit_code == 130
    monkeypatch.undo()
    assert run(synthetic, out, "source-only", resume=True).step == 6  # the advice works


def test_a_start_that_fails_before_its_first_log_line_leaves_nothing_behind(synthetic, tmp_path, monkeypatch):
    """Issue 16, case 8: a start that failed after the run folder existed left config.json and an empty metrics.jsonl,
    after which a fresh start said "continue it with --resume" and --resume said "delete the folder"."""
    from ftadapt.training.loop import TrainingInterrupted

    out = tmp_path / "run"
    with pytest.raises(UsageError, match="fewer than one batch of 1000"):
        run(synthetic, out, "source-only", **{"data.batch_size": 1000})
    assert not out.exists()
    out.mkdir()  # a folder the user made: emptied again, not removed
    monkeypatch.setattr(Segmentation, "source", _double_signal_at(0))
    with pytest.raises(TrainingInterrupted, match=f"before the first checkpoint: no step was saved, and what it "
                                                  f"wrote in {out} was removed"):
        run(synthetic, out, "source-only")
    assert out.is_dir() and not any(out.iterdir())
    monkeypatch.undo()
    assert run(synthetic, out, "source-only").step == 2  # the same command simply runs again


def test_stale_temporaries_of_a_killed_checkpoint_write_are_removed_on_resume_and_prune(synthetic, tmp_path):
    """Issue 16, case 9: ``kill -9`` during a checkpoint write left hidden ``.step_*.tmp`` folders (0.4 GB each for
    an R101) that nothing removed, not even keep_checkpoints."""
    from ftadapt.run_folder import prune_checkpoints

    out = tmp_path / "run"
    run(synthetic, out, "source-only", steps=4, stop_at=2, checkpoint_every=1)
    folder = out / "checkpoints"
    (folder / ".step_000003.x7q1.tmp").mkdir()  # what the killed write left
    (folder / ".step_000003.x7q1.tmp" / "model.pt").write_bytes(b"half")
    (folder / ".last.tmp").symlink_to("step_000002")
    assert run(synthetic, out, "source-only", resume=True, stop_at=3).step == 3
    assert sorted(p.name for p in folder.iterdir()) == ["last", "step_000001", "step_000002", "step_000003"]
    (folder / ".step_000004.k2j3.tmp").mkdir()
    assert [p.name for p in prune_checkpoints(out, 1)] == ["step_000001", "step_000002"]
    assert sorted(p.name for p in folder.iterdir()) == ["last", "step_000003"]


def test_a_damaged_newest_checkpoint_names_the_previous_complete_one(synthetic, tmp_path):
    """Issue 16, case 13: a truncated train_state.pt in the newest checkpoint only said its hash did not match."""
    from ftadapt.errors import CheckpointError

    out = tmp_path / "run"
    run(synthetic, out, "source-only", steps=4, stop_at=2, checkpoint_every=1)
    damaged = out / "checkpoints" / "step_000002"
    state_file = damaged / "train_state.pt"
    state_file.write_bytes(state_file.read_bytes()[:100])
    with pytest.raises(CheckpointError) as info:
        run(synthetic, out, "source-only", resume=True, stop_at=0)
    message = str(info.value)
    assert "train_state.pt: sha256" in message and "does not match" in message
    assert (f"The previous complete one is {out / 'checkpoints' / 'step_000001'} (step 1): move the damaged one out "
            f"of the run (mv {damaged} {out / 'step_000002.damaged'}) and rerun with --resume to continue from step "
            "1") in message
    shutil.move(damaged, out / "step_000002.damaged")  # following the advice
    assert run(synthetic, out, "source-only", resume=True, stop_at=0).step == 4


def test_convert_cannot_replace_a_runs_checkpoint_or_its_last_link(synthetic, tmp_path, capsys):
    """Issue 16, case 2: convert onto RUN/checkpoints/step_N silently replaced it (train_state.pt gone); onto the
    ``last`` link it printed a traceback and left ``last`` holding the converted weights and a ``.last.old`` link,
    after which --resume failed and eval of the run scored the wrong weights."""
    import hashlib

    import torch

    from ftadapt.cli import main
    from ftadapt.models.registry import create_model
    from ftadapt.run_folder import resolve_checkpoint

    out = tmp_path / "run"
    run(synthetic, out, "source-only", steps=3, stop_at=2, checkpoint_every=1)
    torch.save(create_model("tiny").state_dict(), tmp_path / "other.pth")
    folder = out / "checkpoints"

    def listing():
        return {p.name: os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*"), key=str) if p.is_symlink() or p.is_file()}

    before = listing()
    for target, flags, why in [(folder / "step_000002", [], "already exists; pass --overwrite"),
                               (folder / "last", ["--overwrite"], "is a symbolic link (to step_000002)"),
                               (folder / "step_000002", ["--overwrite"], "lies inside the run folder"),
                               (folder / "step_000009", ["--overwrite"], "only `ftadapt train` writes")]:
        with pytest.raises(SystemExit) as exc:
            main(["convert", "--from", "clan", str(tmp_path / "other.pth"), "--out", str(target), *flags])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and why in err and "Traceback" not in err, err
    assert listing() == before and sorted(p.name for p in folder.iterdir()) == ["last", "step_000001", "step_000002"]
    assert resolve_checkpoint(out) == folder / "step_000002"  # eval of the run scores the run's own weights
    assert run(synthetic, out, "source-only", resume=True, stop_at=0).step == 3


def test_a_damaged_training_log_is_named_not_a_traceback(tmp_path):
    """A ``metrics.jsonl`` cut mid-line or overwritten by binary bytes: one error naming the file (and the line)."""
    from ftadapt.errors import CheckpointError
    from ftadapt.run_folder import METRICS_FILE, read_metrics

    (tmp_path / METRICS_FILE).write_text('{"step": 1}\n\n{"step": 2}\n')
    assert read_metrics(tmp_path) == [{"step": 1}, {"step": 2}]
    (tmp_path / METRICS_FILE).write_text('{"step": 1}\n{"st')
    with pytest.raises(CheckpointError, match=r"metrics.jsonl, line 2, is not a JSON record; .*restore it"):
        read_metrics(tmp_path)
    (tmp_path / METRICS_FILE).write_bytes(b"\x80\x81 not text")
    with pytest.raises(CheckpointError, match=r"metrics.jsonl is not a text \(UTF-8\) training log"):
        read_metrics(tmp_path)


def test_a_run_whose_checkpoints_were_all_removed_is_not_called_unstarted(synthetic, tmp_path):
    """Every entry of ``checkpoints/`` removed, link included: the run did save checkpoints (its log says how far it
    got), so the message must not claim it stopped before its first one."""
    out = tmp_path / "run"
    run(synthetic, out, "source-only", steps=2, checkpoint_every=1)
    for entry in (out / "checkpoints").iterdir():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    with pytest.raises(UsageError, match=r"logged up to step 2 but has no checkpoint left .*were they deleted"):
        run(synthetic, out, "source-only", resume=True)
