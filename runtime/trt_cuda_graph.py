"""Optional CUDA-graph replay of a TensorRT enqueue for static shapes (``reference/deploy.md`` §7.1).

pycuda has no stream-capture API, so capture uses NVIDIA's ``cuda-bindings`` runtime module on the pycuda stream's
handle (the same primary context). trtexec's recipe: enqueue once outside capture (lazy initialisation must not be
captured), capture one ``execute_async_v3`` on the non-default stream, instantiate, then replay with one launch per
frame. A graph freezes shapes and tensor addresses: the backend allocates its buffers once and drops the graph when
the input shape changes (then captures again). Host↔device copies stay outside the graph.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ftadapt.runtime.errors import BackendUnavailable, EngineError


def cuda_runtime() -> Any:
    """NVIDIA's ``cuda.bindings.runtime``; BackendUnavailable naming the package when it is missing."""
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        raise BackendUnavailable(f"cuda_graph=True needs NVIDIA's cuda-bindings ({exc}); pip install cuda-bindings "
                                 "matching your driver's CUDA major version, or leave cuda_graph off") from None
    return runtime


def _check(result: Any, what: str) -> Any:
    """cuda-bindings calls return (error, *values); raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineError(f"CUDA graph {what} failed: {err}")
    return values[0] if len(values) == 1 else values


class TrtCudaGraph:
    """One captured enqueue, replayed on the stream whose handle it was captured on."""

    def __init__(self, stream_handle: int, enqueue: Callable[[], None]) -> None:
        rt = cuda_runtime()
        self._rt, self._exec = rt, None
        self._stream = rt.cudaStream_t(stream_handle)
        _check(rt.cudaStreamBeginCapture(self._stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
               "capture start")
        try:
            enqueue()
        except BaseException:
            # End the capture so the stream is usable again, but report the enqueue's error, not the capture's
            # (a failed enqueue usually invalidates the capture, so ending it fails too).
            result = rt.cudaStreamEndCapture(self._stream)
            if isinstance(result, tuple) and len(result) > 1 and int(result[0]) == 0 and result[1] is not None:
                rt.cudaGraphDestroy(result[1])
            raise
        graph = _check(rt.cudaStreamEndCapture(self._stream), "capture end")
        try:
            self._exec = _check(rt.cudaGraphInstantiate(graph, 0), "instantiation")
        finally:
            _check(rt.cudaGraphDestroy(graph), "cleanup")

    def launch(self) -> None:
        _check(self._rt.cudaGraphLaunch(self._exec, self._stream), "launch")

    def close(self) -> None:
        if self._exec is not None:
            _check(self._rt.cudaGraphExecDestroy(self._exec), "cleanup")
            self._exec = None
