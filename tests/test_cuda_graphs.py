"""CUDA-graphed G in training (the ``speed.cuda_graphs`` key, ``ftadapt.training.cuda_graphs``). A CPU cannot
capture CUDA graphs, so these tests stand a fake in for ``torch.cuda.make_graphed_callables`` with its contract —
warm-up iterations that run forward and backward (and so update the BN statistics), then a callable computing what
the module computes — and check what ftadapt adds: one capture per (domain, shape, layout), BN statistics as an eager
step leaves them, autocast without its cache, the parity check that the GPU script runs. The real capture is checked
by that script on a GPU (and by the gpu test)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._pytree import tree_leaves

import ftadapt.training.datasets
import ftadapt.training.step
from ftadapt.bench import gpu
from ftadapt.config import build_config
from ftadapt.data.loader import endless_batches
from ftadapt.errors import UsageError
from ftadapt.models.registry import create_model
from ftadapt.training import resolve_config, train
from ftadapt.training.cuda_graphs import WARMUP_ITERS, CudaGraphedForward, CudaGraphError
from ftadapt.training.distributed import DistEnv
from ftadapt.training.step import build_train_step, input_shapes


class FakeMaker:
    """make_graphed_callables' contract on the CPU (PyTorch 2.14's signature); ``shift`` > 0 makes the "graph"
    compute something else."""

    def __init__(self, shift: float = 0.0) -> None:
        self.captures: list[tuple[int, ...]] = []
        self.modes: list[str] = []
        self.shift = shift

    def __call__(self, module, sample_args, num_warmup_iters=3, capture_error_mode="global"):
        self.modes.append(capture_error_mode)
        return self.capture(module, sample_args, num_warmup_iters)

    def capture(self, module, sample_args, num_warmup_iters):
        assert not (torch.is_autocast_enabled("cpu") and torch.is_autocast_cache_enabled()), "autocast cache on"
        params = [p for p in module.parameters() if p.requires_grad]
        for _ in range(num_warmup_iters):
            outputs = tree_leaves(module(*sample_args))
            torch.autograd.grad(outputs, params, grad_outputs=[torch.randn_like(o) for o in outputs])
        self.captures.append(tuple(sample_args[0].shape))
        if not self.shift:
            return module
        return lambda x: type(out := module(x))(tuple(t + self.shift for t in out.logits), out.features)


class OldMaker(FakeMaker):
    """make_graphed_callables of PyTorch 2.10–2.13: no capture_error_mode (passing it is a TypeError)."""

    def __call__(self, module, sample_args, num_warmup_iters=3):
        return self.capture(module, sample_args, num_warmup_iters)


def _image(h=64, w=96, seed=0, channels_last=False):
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 60
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def test_one_capture_per_domain_shape_and_layout_and_bn_statistics_as_after_an_eager_forward():
    torch.manual_seed(0)
    model = create_model("tiny").train()
    twin = copy.deepcopy(model)
    maker = FakeMaker()
    graphed = CudaGraphedForward(model, maker=maker)
    out = graphed("source", _image())
    expected = twin(_image())
    assert maker.captures == [(1, 3, 64, 96)]
    for a, b in zip(tree_leaves(out), tree_leaves(expected)):
        assert torch.equal(a, b)
    # The capture's warm-up iterations updated the running statistics; only the real forward's update remains.
    for (name, a), b in zip(model.named_buffers(), twin.buffers()):
        assert torch.equal(a, b), name
    graphed.new_step()
    graphed("source", _image(seed=1))
    assert len(maker.captures) == 1  # same key: replayed, not captured again
    graphed("target", _image())
    graphed("source", _image(h=48, w=80))
    graphed("source", _image(channels_last=True))
    assert len(maker.captures) == len(graphed.captured) == 4
    assert maker.modes == ["thread_local"] * 4  # a loader thread pinning memory cannot invalidate a capture


def test_a_graph_replays_at_most_once_per_step():
    """A graph's backward writes the gradients into its own buffer, which param.grad is after the first backward: a
    second replay before zero_grad would give 2·g2 instead of g1 + g2, so it is refused until new_step()."""
    graphed = CudaGraphedForward(create_model("tiny").train(), maker=FakeMaker())
    graphed("source", _image())
    graphed("target", _image())  # another graph: fine
    with pytest.raises(CudaGraphError, match=r"source images of shape \[1, 3, 64, 96\] would replay twice"):
        graphed("source", _image(seed=1))
    graphed.new_step()
    graphed("source", _image(seed=1))


def test_after_capturing_every_shape_an_unseen_one_is_an_error_naming_it(monkeypatch):
    maker = FakeMaker()
    _patched(monkeypatch, maker)
    cfg = build_config({"method": "source-only", "model": "tiny", "speed.cuda_graphs": True, "device": "cpu",
                        "data.source_size": "96x64", "data.augment": False, "steps": 2})
    step = build_train_step(cfg)
    step.capture_cuda_graphs(input_shapes(cfg, uses_target=False))
    label = torch.randint(0, 19, (1, 64, 96))
    step(0, {"image": _image(), "label": label}, None)
    step(1, {"image": _image(seed=1), "label": label}, None)  # one replay per step: new_step runs every step
    with pytest.raises(CudaGraphError, match=r"source batch of shape \[1, 3, 48, 80\].*captured before training: "
                                             r"source \[1, 3, 64, 96\]"):
        step(2, {"image": _image(h=48, w=80), "label": torch.randint(0, 19, (1, 48, 80))}, None)
    assert maker.captures == [(1, 3, 64, 96)]  # nothing was captured lazily


def test_a_pytorch_without_capture_error_mode_gets_the_plain_call():
    maker = OldMaker()
    out = CudaGraphedForward(create_model("tiny").train(), maker=maker)("source", _image())
    assert maker.captures == [(1, 3, 64, 96)] and out.features.ndim == 4


def _patched(monkeypatch, maker):
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", maker)
    monkeypatch.setattr(ftadapt.training.step, "check_step_options", lambda cfg, device, dist_env: None)  # CPU


def test_graphed_training_equals_eager_training_in_the_parity_check(monkeypatch):
    maker = FakeMaker()
    _patched(monkeypatch, maker)
    report = gpu.cuda_graphs_parity(torch.device("cpu"), steps=4)
    # Three shapes per domain captured up front (the steps use two of them); weights, statistics and losses equal.
    assert report["graphs_captured"] == 6 and len(maker.captures) == 6
    assert report["graphed_vs_eager_max_rel"] == 0.0 and report["eager_vs_eager_max_rel"] == 0.0
    assert report["match"] and report["compared_tensors"] > 100


def test_the_parity_check_catches_a_graph_that_computes_something_else(monkeypatch):
    _patched(monkeypatch, FakeMaker(shift=1e-3))
    report = gpu.cuda_graphs_parity(torch.device("cpu"), steps=2)
    assert not report["match"] and report["graphed_vs_eager_max_rel"] > 1e-5


def test_bf16_graphed_step_runs_autocast_without_its_cache(monkeypatch):
    maker = FakeMaker()  # asserts the cache is off inside every capture
    _patched(monkeypatch, maker)
    cfg = build_config({"method": "norm-only", "model": "tiny", "speed.amp": "bf16", "speed.cuda_graphs": True,
                        "device": "cpu", "steps": 2})
    step = build_train_step(cfg)
    label = torch.randint(0, 19, (1, 64, 96))
    for i in range(2):
        numbers = step(i, {"image": _image(seed=i), "label": label}, {"image": _image(h=48, w=80)}).readback \
            .numbers(None)
    assert len(maker.captures) == 2 and set(numbers) >= {"loss/seg", "loss/norm_src", "loss/norm_tgt"}
    assert WARMUP_ITERS == 3


def test_training_captures_every_input_shape_before_its_loaders_start(synthetic, tmp_path, monkeypatch):
    maker = OldMaker()  # the global capture mode of older PyTorch: no capture may overlap a pinning thread
    _patched(monkeypatch, maker)
    at_loader_start = []

    def batches(*args, **kwargs):
        at_loader_start.append(len(maker.captures))
        return endless_batches(*args, **kwargs)

    monkeypatch.setattr(ftadapt.training.datasets, "endless_batches", batches)
    seen = set()
    replay = CudaGraphedForward.__call__

    def recorded_replay(self, domain, image):
        seen.add((domain, tuple(image.shape)))
        return replay(self, domain, image)

    monkeypatch.setattr(CudaGraphedForward, "__call__", recorded_replay)
    cfg = resolve_config({"method": "clan-norm", "model": "tiny", "steps": 8, "speed.cuda_graphs": True,
                          "device": "cpu", "data.source_size": "160x96", "data.target_size": "128x64",
                          "data.num_workers": 0, "tensorboard": False, "data.source": f"gta5:{synthetic.gta5_root}",
                          "data.target": f"cityscapes:{synthetic.cityscapes_root}"}, out=tmp_path / "run", resume=False)
    train(cfg, out=tmp_path / "run", progress=False)
    shapes = input_shapes(cfg, uses_target=True)
    assert shapes == {"source": [(1, 3, 96, 160), (1, 3, 105, 176), (1, 3, 76, 128)],
                      "target": [(1, 3, 64, 128), (1, 3, 70, 140), (1, 3, 51, 102)]}
    assert at_loader_start == [6, 6]  # all six captured before either loader started
    assert len(maker.captures) == 6  # and none while training: every batch had a captured shape
    assert {s for _, s in seen} > {shapes["source"][0], shapes["target"][0]}  # the steps did replay
    assert {(d, s) for d, ss in shapes.items() for s in ss} >= seen


def test_input_shapes_without_augmentation_and_without_a_target():
    cfg = build_config({"method": "source-only", "model": "tiny", "data.augment": False, "data.batch_size": 2,
                        "data.source_size": "160x96"})
    assert input_shapes(cfg, uses_target=False) == {"source": [(2, 3, 96, 160)]}


@pytest.mark.parametrize("device, options, world_size, message", [
    ("cpu", {}, 1, "cuda_graphs=true needs a CUDA device, not cpu"),
    ("cuda", {"compile": "default"}, 1, "cuda_graphs=true with compile=default: choose one"),  # the old key name
    ("cuda", {}, 2, "cuda_graphs=true with several processes is not supported"),
])
def test_cuda_graphs_refuses_what_it_cannot_do(device, options, world_size, message, monkeypatch):
    cfg = build_config({"method": "clan", "model": "tiny", "speed.cuda_graphs": True, "device": device, **options})
    with pytest.raises(UsageError, match=message):
        ftadapt.training.step.check_step_options(cfg, torch.device(device), DistEnv(rank=0, world_size=world_size))
    if device == "cpu":  # and the builder checks before it builds anything
        created = []
        monkeypatch.setattr(ftadapt.training.step, "create_model", lambda *a, **k: created.append(a) or pytest.fail())
        with pytest.raises(UsageError, match=message):
            build_train_step(cfg)
        assert not created


@pytest.mark.gpu
def test_cuda_graphs_train_like_the_eager_step_on_a_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU with CUDA: torch.cuda.is_available() is False")
    report = gpu.cuda_graphs_parity(torch.device("cuda"))
    assert report["match"], report
