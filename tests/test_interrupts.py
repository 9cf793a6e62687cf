"""Failing and interrupted commands end cleanly and leave nothing behind.

- A corrupt image read in a data loader worker is the same one ``error:`` line as without workers: no traceback, no
  hang, no worker process left (``ftadapt.data.loader``: workers carry project errors back and are stopped).
- SIGINT stops every command — exit 130 — even when the process started with SIGINT ignored, as a shell script's
  background job (``ftadapt … &``) does; SIGTERM unwinds the same way, exit 143 (``ftadapt.cli.run_group``); either
  way no target and no temporary remains.

The signal tests run the real command line in its own process group and signal it once its work is under way.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runs import exit_code
from datatrees import make_gta5
from torch.utils.data import Dataset

from ftadapt.data.loader import endless_batches
from ftadapt.errors import DatasetError, FtadaptError, UsageError

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs POSIX signals and /proc")

FTADAPT = [sys.executable, "-m", "ftadapt.cli"]
SIGINT_IGNORED = ["sh", "-c", 'trap "" INT; exec "$@"', "sh"]  # how a non-interactive shell starts `cmd &`
TIMEOUT = 90  # seconds; every command here needs a few


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            state, _ppid, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _start(argv: list, stderr: Path, *, sigint_ignored: bool = False) -> subprocess.Popen:
    """``argv`` in a new session (its pid is its process group), stderr to a file the test can watch."""
    command = [*SIGINT_IGNORED * sigint_ignored, *FTADAPT, *[str(a) for a in argv]]
    with open(stderr, "wb") as err:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _finish(proc: subprocess.Popen, stderr: Path) -> str:
    """Wait for ``proc``; fail if it hangs or leaves a process of its group behind (both are killed). Its stderr."""
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"still running after {TIMEOUT} s (killed); stderr:\n{stderr.read_text()[-3000:]}")
    deadline = time.monotonic() + 10  # a worker told to stop may take a moment
    while (left := _group(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"
    return stderr.read_text()


def _wait_until(proc: subprocess.Popen, ready, stderr: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the work never started (rc {proc.poll()}); stderr:\n{stderr.read_text()[-3000:]}")
        time.sleep(0.02)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]


# --- a project error in a loader worker ---------------------------------------------------------------------------

class _TwoPartError(UsageError):
    """An error whose __init__ takes other arguments than the message (torch could not rebuild it)."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path}: {why}; replace the file")


class _Failing(Dataset):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __len__(self) -> int:
        return 4

    def __getitem__(self, key):
        raise self.error


@pytest.mark.parametrize("error", [DatasetError("frame.png: corrupt image; re-download it"),
                                   _TwoPartError("frame.png", "corrupt image")],
                         ids=["DatasetError", "other-init"])
def test_a_project_error_in_a_worker_arrives_as_it_was_raised(error):
    with endless_batches(_Failing(error), batch_size=1, num_workers=1, seed=0) as batches, \
            pytest.raises(FtadaptError) as caught:
        next(batches)
    assert str(caught.value) == str(error) and caught.value.exit_code == error.exit_code
    assert type(caught.value) is (type(error) if isinstance(error, DatasetError) else UsageError)
    assert multiprocessing.active_children() == []


def test_closing_stops_the_workers_while_the_error_is_still_alive():
    """A worker's error keeps the loader's iterator alive through its traceback; closing must still stop the workers
    (they ignore SIGTERM, so the interpreter's exit would otherwise wait for them forever)."""
    caught = None
    try:
        with endless_batches(_Failing(RuntimeError("a bug")), batch_size=1, num_workers=1, seed=0) as batches:
            next(batches)
    except RuntimeError as exc:
        caught = exc
    try:
        assert caught is not None and "a bug" in str(caught)
        assert multiprocessing.active_children() == []
    finally:
        del caught


@pytest.mark.slow
def test_a_corrupt_image_in_a_worker_is_one_error_line_without_hang_or_leftovers(tmp_path, capsys):
    root = make_gta5(tmp_path / "gta5", n=4, size=(64, 32))
    _truncate(root / "images" / "00002.png")
    argv = ["train", "source-only", "--source", f"gta5:{root}", "--model", "tiny", "--steps", "8",
            *[a for s in ("check_data=false", "data.source_size=64x32", "tensorboard=false", "log_every=1")
              for a in ("--set", s)]]
    assert exit_code([*argv, "--out", tmp_path / "run0", "--set", "data.num_workers=0"]) == 1
    without_workers = _error_lines(capsys.readouterr().err)
    assert len(without_workers) == 1 and "00002.png" in without_workers[0] and "truncated" in without_workers[0]

    stderr = tmp_path / "stderr"
    proc = _start([*argv, "--out", tmp_path / "run1", "--set", "data.num_workers=1"], stderr)
    text = _finish(proc, stderr)
    assert proc.returncode == 1, text
    assert "Traceback" not in text
    assert _error_lines(text) == without_workers


# --- signals ------------------------------------------------------------------------------------------------------

# What a shell reports as $? = 130 or 143. After SIGINT CPython may also end the process by SIGINT itself (a
# KeyboardInterrupt that once passed through `exec` of a string — dataclasses, namedtuples — marks it "unhandled"
# even when the CLI caught it): Popen's -2, which a shell reports as 130 too.
EXIT = {signal.SIGINT: (130, -signal.SIGINT), signal.SIGTERM: (143,)}


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    from test_ensemble import make_member

    return make_member(tmp_path_factory.mktemp("member") / "clan", 0)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_export_exits_and_leaves_nothing(member, tmp_path, signum):
    """Signalled while its temporary is being written (started with SIGINT ignored)."""
    out = tmp_path / "out"
    out.mkdir()
    stderr = tmp_path / "stderr"
    proc = _start(["export", member, "--out", out / "model.onnx", "--working-size", "64x32"], stderr,
                  sigint_ignored=True)
    _wait_until(proc, lambda: any(out.iterdir()), stderr)
    proc.send_signal(signum)
    text = _finish(proc, stderr)
    assert proc.returncode in EXIT[signum], text
    assert sorted(out.iterdir()) == []
    assert "Traceback" not in text
    last = text.rstrip().splitlines()[-1]
    assert last in (("aborted", "interrupted") if signum == signal.SIGINT else ("terminated",))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_feature_analysis_exits_and_leaves_nothing(member, synthetic, tmp_path, signum):
    """Signalled while its loader worker reads images (started with SIGINT ignored); the worker goes too."""
    out = tmp_path / "analysis"
    out.mkdir()
    stderr = tmp_path / "stderr"
    proc = _start(["analyze", "features", "--checkpoint", member, "--source", f"gta5:{synthetic.gta5_root}",
                   "--target", f"cityscapes:{synthetic.cityscapes_root}", "--source-size", "160x96",
                   "--target-size", "128x64", "--images", "6", "--workers", "1", "--out", out], stderr,
                  sigint_ignored=True)
    _wait_until(proc, lambda: "features (" in stderr.read_text(), stderr)
    proc.send_signal(signum)
    text = _finish(proc, stderr)
    assert proc.returncode in EXIT[signum], text
    assert sorted(out.iterdir()) == []
    assert "Traceback" not in text


def test_an_analysis_interrupted_while_writing_adds_none_of_its_files(member, synthetic, tmp_path, monkeypatch,
                                                                     capsys):
    """Its files are written one after another: an interruption between them removes those it added."""
    from ftadapt.analysis import feature_space

    def interrupted_at_the_json(path, text, **options):
        if Path(path).name == feature_space.JSON_FILE:
            raise KeyboardInterrupt
        write(path, text, **options)

    write = feature_space.write_text_atomic
    monkeypatch.setattr(feature_space, "write_text_atomic", interrupted_at_the_json)
    out = tmp_path / "analysis"
    out.mkdir()
    (out / "notes.txt").write_text("not ours")
    assert exit_code(["analyze", "features", "--checkpoint", member, "--source", f"gta5:{synthetic.gta5_root}",
                      "--target", f"cityscapes:{synthetic.cityscapes_root}", "--source-size", "160x96",
                      "--target-size", "128x64", "--images", "2", "--workers", "0", "--method", "pca",
                      "--out", out]) == 130
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_the_signal_handlers_are_restored_after_a_command(capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert exit_code(["--version"]) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
