"""G's forward and backward replayed as CUDA graphs in training (the ``speed.cuda_graphs`` config key), without
torch.compile. Not to be confused with the exported ONNX graph (``ftadapt.export.onnx_graph``) or the TensorRT
engine's CUDA graph at deployment (``ftadapt.runtime.trt_cuda_graph``): this one exists only inside a training step.

An eager DeepLab-v2 R101 clan-norm training step makes ~12,500 operator calls (torch.profiler's count; ~15,200 under
bf16 autocast, which adds the weight and activation casts), nearly all of them in G's forward and backward; on a fast
GPU the host cannot queue them as fast as the GPU runs them. ``CudaGraphedForward`` captures G's forward and backward
once per (domain, input shape) with ``torch.cuda.make_graphed_callables`` and then replays each as one graph launch;
the losses, the discriminator, the gradient accumulation and the optimizers stay eager (~3,000 calls by the same
count). Capture takes seconds, not the minutes of compilation, and the kernels are the eager ones, so the numbers are
those of the eager step.

What the capture needs and this module provides: a fixed input shape per graph (CLAN's random scale gives three per
domain, each captured on first sight or ahead with ``capture``); the source and target forwards in separate graphs
(the source outputs are still read — by the discriminator — after the target forward ran); autocast without its
weight-cast cache (the caller's ``torch.autocast(..., cache_enabled=False)``); and BN running statistics as they were
before the capture's warm-up iterations, so that the first replay updates them exactly as an eager step would. Each
graph keeps its own memory pool (the shapes arrive in random order, so pools cannot be shared safely): memory grows
with the number of shapes (six in training with CLAN's rescale, all captured up front), each holding one domain's
activations (the whole eager bf16 step of R101 at the paper's sizes peaks at 4.7 GiB).

Two rules keep a replay from being silently wrong. A graph's outputs and the parameter gradients of its backward live
in the graph's own static buffers, and the first backward of a step hands those buffers to ``param.grad``: a second
replay of the same graph before ``zero_grad`` would overwrite them (2·g₂ instead of g₁ + g₂). So each graph replays at
most once per step (``new_step`` starts one); gradient accumulation over several batches of one shape must not use
this module. And once ``seal`` has been called (after capturing every shape training can produce), an unseen shape
is an error naming it rather than a capture in the middle of training, which on PyTorch < 2.14 fails next to the
loaders' pin-memory threads.
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ftadapt.errors import FtadaptError
from ftadapt.models.deeplab import SegOutput

WARMUP_ITERS = 3  # make_graphed_callables' default: cuDNN autotuning and lazy initialisation happen before capture


class _Forward(nn.Module):
    """One capture's view of G: make_graphed_callables replaces this wrapper's forward, never G's own."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> SegOutput:
        return self.model(image)


class CudaGraphError(FtadaptError):
    """A use of the training CUDA graphs that would silently give wrong gradients or capture at the wrong time."""


class CudaGraphedForward:
    """``graphed(domain, image)`` = ``model(image)`` with G's forward and backward replayed from CUDA graphs, one pair
    per (domain, image shape, strides, dtype), captured on first use or ahead by ``capture``; at most one replay per
    graph between ``new_step`` calls, and no capture after ``seal`` (see the module docstring). ``maker`` is
    ``torch.cuda.make_graphed_callables`` (tests pass a stand-in with the same contract)."""

    def __init__(self, model: nn.Module, maker: Callable | None = None) -> None:
        self.model = model
        self.maker = maker or torch.cuda.make_graphed_callables
        self.options = _capture_options(self.maker)
        self.captured: dict[tuple, Callable[[Tensor], SegOutput]] = {}  # (domain, shape, strides, dtype) → replay
        self.sealed = False
        self._replayed: set[tuple] = set()  # the graphs replayed since new_step

    def __call__(self, domain: str, image: Tensor) -> SegOutput:
        key = _key(domain, image)
        if key in self._replayed:
            raise CudaGraphError(
                f"G's CUDA graph for {domain} images of shape {list(image.shape)} would replay twice in one step: "
                "its backward writes the gradients into the graph's own buffer, which param.grad already is, so the "
                "second replay would overwrite the first gradients instead of adding to them. Call new_step() after "
                "each zero_grad, and do not accumulate gradients over batches of one shape with speed.cuda_graphs")
        graphed = self.capture(domain, image)
        self._replayed.add(key)
        with _on_device(image):
            return graphed(image)

    def new_step(self) -> None:
        """A new training step (after ``zero_grad``): every graph may replay once again."""
        self._replayed.clear()

    def seal(self) -> None:
        """Allow no more captures: every shape training produces is captured (``TrainStep.capture_cuda_graphs``)."""
        self.sealed = True

    def capture(self, domain: str, image: Tensor) -> Callable[[Tensor], SegOutput]:
        """The graphed forward for ``image``'s (domain, shape, strides, dtype), captured now if it is new; ``image``
        is only the capture's sample (its values do not matter). Call it under the step's autocast."""
        key = _key(domain, image)
        graphed = self.captured.get(key)
        if graphed is None:
            if self.sealed:
                known = sorted({f"{d} {list(shape)}" for d, shape, _, _ in self.captured})
                raise CudaGraphError(
                    f"a {domain} batch of shape {list(image.shape)} (strides {image.stride()}, {image.dtype}) has no "
                    f"captured CUDA graph; captured before training: {', '.join(known) or 'none'}. Every shape must "
                    "be captured before the loaders start (a capture beside their pin-memory threads fails on "
                    "PyTorch < 2.14): check data.*_size and data.batch_size, or train with --set cuda_graphs=false")
            with _on_device(image):
                graphed = self.captured[key] = self._capture(image)
        return graphed

    def _capture(self, image: Tensor) -> Callable[[Tensor], SegOutput]:
        buffers = list(self.model.buffers())
        saved = [b.clone() for b in buffers]  # the warm-up iterations run the BN statistics updates
        graphed = self.maker(_Forward(self.model), (image.clone(),), num_warmup_iters=WARMUP_ITERS,
                             **self.options)
        with torch.no_grad():
            for b, s in zip(buffers, saved):
                b.copy_(s)
        return graphed


def _key(domain: str, image: Tensor) -> tuple:
    return domain, tuple(image.shape), image.stride(), image.dtype


def _on_device(image: Tensor) -> contextlib.AbstractContextManager:
    """Capture and replay on the image's GPU even when another one is current (device=cuda:1)."""
    return torch.cuda.device(image.device) if image.is_cuda else contextlib.nullcontext()


def _capture_options(maker: Callable) -> dict[str, str]:
    """``capture_error_mode="thread_local"`` where ``maker`` takes it (``make_graphed_callables`` does from PyTorch
    2.14 on): a loader thread that pins memory during a capture then cannot invalidate it. Older releases capture in
    the global mode, where it can; the training loop therefore captures every input shape before its loaders start."""
    try:
        parameters = inspect.signature(maker).parameters
    except (TypeError, ValueError):  # a callable without a signature: the plain call
        return {}
    return {"capture_error_mode": "thread_local"} if "capture_error_mode" in parameters else {}


__all__ = ["CudaGraphError", "CudaGraphedForward", "WARMUP_ITERS"]
