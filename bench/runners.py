"""What the latency bench times: for each backend, one callable from host frames to host label maps.

A runner takes a batch of camera frames as an application holds them (uint8 RGB N×H×W×3 in host memory, decoded) and
returns the int32 label maps N×H×W in host memory, so a timed call includes everything between: the copy to the
device, the graph's pre-processing, the members, fusion, upsampling, argmax and the copy back.

- :class:`SegmenterRunner` — ``ftadapt.runtime.Segmenter`` (ONNX Runtime, TensorRT): ``predict_batch``. Device time
  (CUDA events around the enqueue, no copies) on TensorRT; ONNX Runtime exposes no events around its run.
- :class:`TorchRunner` — the exported graph's PyTorch module (``SegmentationGraph``) on a torch device, eager or, on
  CUDA, replayed as a CUDA graph (one capture per batch shape, into static input and output buffers, after warm-up on
  a side stream: PyTorch's documented recipe). Device time: CUDA events around the forward or the replay. Peak
  memory: the allocator's peak over the timed calls.

``device_used_bytes`` reads the device's used memory (cudaMemGetInfo, through torch); the bench records how much it
grew from before a runner was created to after its last call — what the backend took, whatever its allocator.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class Runner:
    """The interface the latency bench times (subclass it)."""

    backend: str = "runner"
    variant: str = "eager"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Shape: uint8 N×H×W×3 (host) → int32 N×H×W (host)."""
        raise NotImplementedError

    def device_ms(self) -> float | None:
        """The device time of the last call's inference in ms (CUDA events), None where it cannot be measured."""
        return None

    def reset_peak(self) -> None:
        """Start a new peak-memory window (before the timed calls)."""

    def peak_bytes(self) -> int | None:
        """The backend allocator's peak since ``reset_peak``, None where there is none to ask."""
        return None

    def describe(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        """Release what the runner holds."""


class SegmenterRunner(Runner):
    """``segmenter.predict_batch``; the Segmenter is closed with the runner (``owned``) or left to its caller."""

    def __init__(self, segmenter: Any, *, variant: str = "eager", owned: bool = True) -> None:
        self.segmenter, self.owned = segmenter, owned
        self.backend, self.variant = segmenter.backend, variant

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.segmenter.predict_batch(batch)

    def device_ms(self) -> float | None:
        return self.segmenter.last_device_ms

    def describe(self) -> dict[str, Any]:
        seg = self.segmenter
        info = {"providers": list(seg.providers), "precision": seg.metadata.precision,
                "working_size": list(seg.metadata.working_size), "notes": list(seg.notes)}
        if seg.backend == "tensorrt":
            described = seg.describe()
            info.update(tensorrt=described.get("tensorrt"), engine=described.get("engine"))
        return info

    def close(self) -> None:
        if self.owned:
            self.segmenter.close()


class TorchRunner(Runner):
    """``graph`` (uint8 N×H×W×3 → int32 N×H×W) on ``device``; ``cuda_graph`` replays it as a CUDA graph (CUDA only)."""

    backend = "pytorch"

    def __init__(self, graph: Any, device: str, *, precision: str, cuda_graph: bool = False) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if cuda_graph and not self.cuda:
            raise ValueError("CUDA graphs need a CUDA device")
        self.module = graph.to(self.device).eval()
        self.precision, self.variant = precision, "cuda-graph" if cuda_graph else "eager"
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}
        self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if self.cuda \
            else None
        self._timed = False

    def _captured(self, shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
        """(graph, static input, static output) for ``shape``, captured on first use after three warm-up calls on a
        side stream (allocations and cuDNN autotuning stay outside the capture)."""
        torch = self.torch
        if shape not in self._graphs:
            static_in = torch.zeros(shape, dtype=torch.uint8, device=self.device)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.module(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.module(static_in)
            self._graphs[shape] = (graph, static_in, static_out)
        return self._graphs[shape]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            frames = torch.from_numpy(batch)
            if not self.cuda:
                return self.module(frames).numpy()
            with torch.cuda.device(self.device):  # streams, events and graph replay on the runner's GPU
                return self._cuda_call(frames)

    def _cuda_call(self, frames: Any) -> np.ndarray:
        torch = self.torch
        start, end = self._events
        stream = torch.cuda.current_stream(self.device)  # where the forward or the replay is enqueued
        if self.variant == "cuda-graph":
            graph, static_in, static_out = self._captured(tuple(frames.shape))
            static_in.copy_(frames)
            start.record(stream)
            graph.replay()
            end.record(stream)
            labels = static_out
        else:
            frames = frames.to(self.device)
            start.record(stream)
            labels = self.module(frames)
            end.record(stream)
        out = labels.cpu().numpy()  # synchronises with the stream
        self._timed = True
        return out

    def device_ms(self) -> float | None:
        return self._events[0].elapsed_time(self._events[1]) if self._events is not None and self._timed else None

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int | None:
        return int(self.torch.cuda.max_memory_allocated(self.device)) if self.cuda else None

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"device": str(self.device), "precision": self.precision,
                                "working_size": list(self.module.working_size)}
        if self.cuda:
            backends = self.torch.backends
            info.update(tf32_conv=backends.cudnn.allow_tf32, cudnn_benchmark=backends.cudnn.benchmark)
        return info

    def close(self) -> None:
        self._graphs.clear()


def device_used_bytes(device: Any) -> int | None:
    """Bytes in use on a CUDA ``device`` ("cuda:N"), all processes and allocators (cudaMemGetInfo, asked through
    torch), else None — also where torch is not installed (the runtime-only install times without it)."""
    if not str(device).startswith("cuda"):
        return None
    try:
        import torch
    except ImportError:
        return None
    free, total = torch.cuda.mem_get_info(torch.device(str(device)))
    return int(total - free)


__all__ = ["Runner", "SegmenterRunner", "TorchRunner", "device_used_bytes"]
