"""Data-parallel training on two CPU processes (gloo), as torchrun would start them: both ranks end with the same
weights, gradients are the mean over ranks and all-reduced once per step, a resume continues bit-for-bit, only rank 0
writes; the ranks split the batch stream; loader workers survive a signal to the whole process group."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

import ftadapt.training.loop
import ftadapt.training.step
from ftadapt.checkpoint import load_checkpoint
from ftadapt.data.loader import EndlessBatchSampler, endless_batches
from ftadapt.errors import UsageError
from ftadapt.models.registry import create_model
from ftadapt.run_folder import read_metrics
from ftadapt.training import resolve_config, train
from ftadapt.training.distributed import DistEnv, env_dist
from ftadapt.training.step import build_train_step

SMALL = {"model": "tiny", "method": "clan-norm", "steps": 2, "data.source_size": "160x96",
         "data.target_size": "128x64", "data.num_workers": 0, "log_every": 1, "tensorboard": False, "device": "cpu"}


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _train_as_rank(rank: int, port: int, out, synthetic_roots, **overrides):
    """``train`` in this process as torchrun's rank ``rank`` of 2 would run it (the group comes from the environment);
    returns the TrainStep so the caller can read this rank's final weights."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    steps = []

    def recording(*args, **kwargs):
        steps.append(build_train_step(*args, **kwargs))
        return steps[-1]

    ftadapt.training.loop.build_train_step = recording
    try:
        resume = overrides.pop("resume", False)
        roots = {"data.source": f"gta5:{synthetic_roots[0]}", "data.target": f"cityscapes:{synthetic_roots[1]}"}
        cfg = resolve_config({**({} if resume else {**SMALL, **roots}), **overrides}, out=out, resume=resume)
        result = train(cfg, out=out, resume=resume, progress=False)
    finally:
        ftadapt.training.loop.build_train_step = build_train_step
    return result, steps[0]


def _gradient_check(rank: int, port: int, synthetic_roots, results: dict) -> None:
    """One DDP step against each rank's local gradients; records when G's buckets were all-reduced."""
    from ftadapt.data.cityscapes import Cityscapes
    from ftadapt.data.gta5 import GTA5

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        cfg = resolve_config(SMALL, out="unused", resume=False)
        local = build_train_step(cfg)  # the config's seed: both steps start from the same G and D
        ddp = build_train_step(cfg, dist_env=DistEnv(rank, 2, rank))
        assert all(torch.equal(a, b) for a, b in zip(local.model.state_dict().values(),
                                                     ddp.model.state_dict().values()))
        events: list[str] = []

        def counting_hook(state, bucket):
            events.append("all-reduce")
            return allreduce_hook(state, bucket)

        ddp.g_net.register_comm_hook(None, counting_hook)
        src = GTA5(synthetic_roots[0], size=cfg.data.source_size)
        tgt = Cityscapes(synthetic_roots[1], split="train", size=cfg.data.target_size, with_labels=False)
        batches = [next(endless_batches(ds, batch_size=1, num_workers=0, seed=k, rank=rank, world_size=2))
                   for k, ds in enumerate((src, tgt))]
        local(0, *batches)
        backward = ftadapt.training.step._backward
        ftadapt.training.step._backward = lambda losses: (events.append("backward"), backward(losses))
        try:
            ddp(0, *batches)
        finally:
            ftadapt.training.step._backward = backward
        for name, step in (("G", "g_params"), ("D", None)):
            params = getattr(ddp, step) if step else list(ddp.disc.parameters())
            local_params = getattr(local, step) if step else list(local.disc.parameters())
            mine = torch.cat([p.grad.flatten() for p in local_params])
            gathered = [torch.empty_like(mine) for _ in range(2)]
            dist.all_gather(gathered, mine)
            results[f"{name}_ddp"] = torch.cat([p.grad.flatten() for p in params])
            results[f"{name}_local"] = gathered
        results["events"] = events
    finally:
        dist.destroy_process_group()


def _worker(rank: int, ports: list[int], tmp, synthetic_roots) -> None:
    torch.set_num_threads(1)
    out = {}
    result, step = _train_as_rank(rank, ports[0], tmp / "straight", synthetic_roots)
    out["straight"], out["straight_result"] = _params(step.model), (result.step, str(result.checkpoint))
    _train_as_rank(rank, ports[1], tmp / "resumed", synthetic_roots, stop_at=1)
    _, step = _train_as_rank(rank, ports[2], tmp / "resumed", synthetic_roots, resume=True, stop_at=0)
    out["resumed"] = _params(step.model)
    _gradient_check(rank, ports[3], synthetic_roots, out)
    torch.save(out, tmp / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def two_ranks(synthetic, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(resolve_config(SMALL, out=tmp / "x", resume=False).seed)  # as train() does before building G
    initial = _params(create_model("tiny"))
    mp.spawn(_worker, args=(_free_ports(4), tmp, (synthetic.gta5_root, synthetic.cityscapes_root)), nprocs=2)
    return tmp, initial, [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.slow
def test_both_ranks_end_with_the_same_trained_weights_and_only_rank_0_writes(two_ranks):
    tmp, initial, (r0, r1) = two_ranks
    for key in initial:
        assert torch.equal(r0["straight"][key], r1["straight"][key]), key
    changed = [k for k in initial if not torch.equal(initial[k], r0["straight"][k])]
    assert "layer4.0.conv2.weight" in changed and "layer6.conv2d_list.3.bias" in changed
    assert r0["straight_result"] == r1["straight_result"] == (2, str(tmp / "straight/checkpoints/step_000002"))
    ckpt = load_checkpoint(tmp / "straight" / "checkpoints" / "last", with_train_state=True)
    for key, value in r0["straight"].items():
        assert torch.equal(ckpt.state_dict[key], value), key
    assert ckpt.meta["distributed"] == {"world_size": 2, "sync_bn": False} and ckpt.train_state["world_size"] == 2
    assert [r["step"] for r in read_metrics(tmp / "straight")] == [1, 2]  # one writer


@pytest.mark.slow
def test_gradients_are_the_mean_over_ranks_all_reduced_once_per_step(two_ranks):
    _, _, (r0, r1) = two_ranks
    for name in ("G", "D"):
        local = r0[f"{name}_local"]
        assert not torch.allclose(local[0], local[1])  # the ranks saw different batches
        for rank in (r0, r1):
            torch.testing.assert_close(rank[f"{name}_ddp"], (local[0] + local[1]) / 2, rtol=1e-5, atol=1e-9)
    # source backward under no_sync, target backward all-reduces G's buckets, then D's backward
    for rank in (r0, r1):
        events = rank["events"]
        assert events[:2] == ["backward", "backward"] and events[-1] == "backward", events
        assert set(events[2:-1]) == {"all-reduce"}, events


@pytest.mark.slow
def test_a_distributed_resume_continues_bit_for_bit(two_ranks, synthetic):
    tmp, _, (r0, r1) = two_ranks
    for rank in (r0, r1):
        for key, value in r0["straight"].items():
            assert torch.equal(rank["resumed"][key], value), key
    assert [r["step"] for r in read_metrics(tmp / "resumed")] == [1, 2]
    with pytest.raises(UsageError, match="written by a run of 2 process"):  # a single process cannot resume it
        train(resolve_config({}, out=tmp / "resumed", resume=True), out=tmp / "resumed", resume=True,
              progress=False)


def test_the_ranks_split_one_process_batch_stream_round_robin():
    single = EndlessBatchSampler(7, batch_size=2, seed=3)
    ranks = [iter(EndlessBatchSampler(7, batch_size=2, seed=3, rank=r, world_size=2, start_step=1)) for r in (0, 1)]
    for step in range(1, 6):
        assert [next(it) for it in ranks] == [single.keys(2 * step), single.keys(2 * step + 1)]
    with pytest.raises(UsageError, match="rank 2 is not within world_size 2"):
        EndlessBatchSampler(7, batch_size=2, seed=3, rank=2, world_size=2)


def test_torchrun_environment_is_read(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert not env_dist().enabled
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    env = env_dist()
    assert (env.rank, env.world_size, env.local_rank, env.enabled, env.is_main) == (3, 4, 1, True, False)
    assert env.device("cpu") == env.device("auto") == torch.device("cpu")  # no CUDA here (made sure below)
    with pytest.raises(UsageError, match="device 'gpu': expected auto, cpu, cuda or cuda:N"):
        env.device("gpu")
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UsageError, match="RANK=4 is not within WORLD_SIZE=4"):
        env_dist()


def test_every_cuda_rank_takes_the_gpu_of_its_local_rank(monkeypatch):
    """Through ftadapt.devices: under DDP any CUDA spelling (and auto, where there is CUDA) means cuda:LOCAL_RANK; a
    single process keeps the device it names; a CUDA device PyTorch does not see is a DeviceError."""
    from ftadapt.devices import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="device cuda asked for, but this machine has no CUDA device"):
        DistEnv(1, 2, 1).device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    rank1 = DistEnv(rank=1, world_size=2, local_rank=1)
    assert {str(rank1.device(d)) for d in ("auto", "cuda", "cuda:0", "0")} == {"cuda:1"}
    assert rank1.device("cpu") == torch.device("cpu")
    assert DistEnv().device("cuda:1") == torch.device("cuda", 1) and str(DistEnv().device("auto")) == "cuda:0"
    with pytest.raises(DeviceError, match=r"only 2 CUDA device\(s\) are visible"):
        DistEnv().device("cuda:2")
    with pytest.raises(DeviceError, match=r"cuda:2 asked for, but only 2"):
        DistEnv(rank=2, world_size=3, local_rank=2).device("cuda")  # a rank past the machine's GPUs


@pytest.mark.slow
def test_loader_workers_survive_a_sigterm_to_the_process_group(synthetic, tmp_path):
    """Schedulers and torchrun signal every process of the group; the workers must keep serving until the loop has
    finished its step and written its checkpoint."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ftadapt.cli", "train", "source-only", "--source", f"gta5:{synthetic.gta5_root}",
           "--model", "tiny", "--steps", "100000", "--out", str(out), "--set", "checkpoint_every=0",
           "--set", "data.num_workers=1", "--set", "data.source_size=160x96", "--set", "log_every=1",
           "--set", "tensorboard=false", "--set", "device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "metrics.jsonl").is_file() or not read_metrics(out):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM: stopped after step" in stdout + stderr and "Traceback" not in stderr
    assert load_checkpoint(out / "checkpoints" / "last").meta["step"] >= 1
