"""The backend-specific settings of a ``Segmenter``: one small frozen dataclass per backend.

``Segmenter`` takes what every backend shares (model, backend, device, batch and frame limits, probabilities) as
keywords and the rest as ``tensorrt=TensorRTOptions(...)`` / ``onnxruntime=OnnxRuntimeOptions(...)``: the settings
of the backend that runs are used, and those of the other one are ignored (with a note), except the two that only
make sense for one backend and say so — ``providers`` where TensorRT runs, and ``stream``/``cuda_graph`` where
``backend="onnxruntime"`` was named.

Until this release the Segmenter took all of them as flat keywords, and its frame sizes as (H, W) (``max_size``,
``min_size``, ``opt_size``). :func:`translate_deprecated` still accepts those for one release, with a
``DeprecationWarning`` that names the new spelling and, for sizes, the flipped value to pass.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ftadapt.errors import UsageError

Size = tuple[int, int]  # (W, H)


def _positive(value: object, name: str, owner: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise UsageError(f"{owner}({name}={value!r}): expected a positive integer")


@dataclasses.dataclass(frozen=True)
class TensorRTOptions:
    """TensorRT settings (ignored, with a note, when ``backend="auto"`` ends up on ONNX Runtime).

    Args:
        engine_cache: folder of TensorRT engines (default ``$FTADAPT_ENGINE_CACHE`` or ``~/.cache/ftadapt/engines``).
        build: build a missing or invalid engine (False: raise instead, for devices that must not build).
        workspace_mb: builder workspace limit (default 4096).
        opt_batch, opt_frame: the batch and (W, H) frame TensorRT tunes its tactics for (default: 1 frame of
            ``max_frame``, one camera frame per call); part of the engine's cache key.
        stream: a ``pycuda.driver.Stream`` for TensorRT work (default: the Segmenter's own non-default stream).
        cuda_graph: replay the enqueue as a CUDA graph, captured per input shape (needs ``cuda-bindings``; pays off
            at one camera size).
        device_timing: time each call's inference on the device with CUDA events around the enqueue (no copies);
            ``Segmenter.last_device_ms`` then holds the last call's device time.
    """

    engine_cache: str | os.PathLike | None = None
    build: bool = True
    workspace_mb: int | None = None
    opt_batch: int | None = None
    opt_frame: Size | None = None
    stream: object = None
    cuda_graph: bool = False
    device_timing: bool = False

    def __post_init__(self) -> None:
        _positive(self.workspace_mb, "workspace_mb", "TensorRTOptions")


@dataclasses.dataclass(frozen=True)
class OnnxRuntimeOptions:
    """ONNX Runtime settings.

    Args:
        providers: providers to request instead of CUDA-then-CPU (e.g. with TensorRT's execution provider first).
        threads: intra-op threads (default: ONNX Runtime's, one per physical core).
        cpu_fallback: with a CUDA ``device`` named explicitly, run on the CPU, with a warning, when ONNX Runtime cannot
            load its CUDA/TensorRT provider (default: raise BackendUnavailable naming the fix). ``backend="auto"`` and
            ``device="auto"`` always fall back.
    """

    providers: Sequence[Any] | None = None
    threads: int | None = None
    cpu_fallback: bool = False

    def __post_init__(self) -> None:
        _positive(self.threads, "threads", "OnnxRuntimeOptions")
        if self.providers is not None:
            object.__setattr__(self, "providers", tuple(self.providers))


TENSORRT_KEYWORDS = tuple(f.name for f in dataclasses.fields(TensorRTOptions) if f.name != "opt_frame")
ONNXRUNTIME_KEYWORDS = tuple(f.name for f in dataclasses.fields(OnnxRuntimeOptions))
# The (H, W) keywords of earlier releases → their (W, H) successors.
SIZE_KEYWORDS = {"max_size": "max_frame", "min_size": "min_frame", "opt_size": "opt_frame"}


def _flipped(name: str, value: object) -> Size:
    """An (H, W) pair of a deprecated keyword as (W, H)."""
    try:
        h, w = value  # type: ignore[misc]
    except (TypeError, ValueError):
        raise UsageError(f"{name}={value!r}: expected (H, W), two positive integers (and {name} is deprecated: "
                         f"pass {SIZE_KEYWORDS[name]}=(W, H))") from None
    return w, h


def _deprecated(old: str, new: str) -> None:
    """Warn, from ``translate_deprecated``, at the line that created the Segmenter."""
    warnings.warn(f"Segmenter({old}) is deprecated and goes in the next release; pass {new}", DeprecationWarning,
                  stacklevel=4)


def _options(cls: type, given: Any, flat: dict[str, Any], keyword: str) -> Any:
    """``given`` (a ``cls`` or None), or a ``cls`` of the deprecated flat keywords; never both."""
    if given is not None and not isinstance(given, cls):
        raise UsageError(f"{keyword}={given!r}: expected a {cls.__name__}(...) or None")
    if flat and given is not None:
        raise UsageError(f"give the {cls.__name__} settings once: {keyword}={cls.__name__}(...), or (deprecated) "
                         f"the keywords {', '.join(flat)}, not both")
    return cls(**flat) if flat else (given or cls())


def translate_deprecated(
        deprecated: Mapping[str, Any], *, max_frame: object, min_frame: object, tensorrt: TensorRTOptions | None,
        onnxruntime: OnnxRuntimeOptions | None) -> tuple[Any, Any, TensorRTOptions, OnnxRuntimeOptions]:
    """(max_frame, min_frame, TensorRT options, ONNX Runtime options) from the Segmenter's arguments and its
    deprecated keywords (module docstring). A keyword that never existed is a TypeError, as Python raises it."""
    unknown = sorted(set(deprecated) - set(SIZE_KEYWORDS) - set(TENSORRT_KEYWORDS) - set(ONNXRUNTIME_KEYWORDS))
    if unknown:
        raise TypeError(f"Segmenter() got an unexpected keyword argument {unknown[0]!r}")
    frames = {"max_frame": max_frame, "min_frame": min_frame}
    flat: dict[str, dict[str, Any]] = {"tensorrt": {}, "onnxruntime": {}}
    for old, value in deprecated.items():
        if old in SIZE_KEYWORDS:
            if value is None:
                continue
            new, value = SIZE_KEYWORDS[old], _flipped(old, value)
            shown = f"{old}={(value[1], value[0])!r}"
            if new == "opt_frame":
                flat["tensorrt"][new] = value
                _deprecated(shown, f"tensorrt=TensorRTOptions(opt_frame={value!r}) (W, H)")
            elif frames[new] is not None:
                raise UsageError(f"give {new}=(W, H) only; {old} is its deprecated (H, W) spelling")
            else:
                frames[new] = value
                _deprecated(shown, f"{new}={value!r} (W, H)")
        else:
            keyword = "tensorrt" if old in TENSORRT_KEYWORDS else "onnxruntime"
            cls = TensorRTOptions if keyword == "tensorrt" else OnnxRuntimeOptions
            flat[keyword][old] = value
            _deprecated(f"{old}=…", f"{keyword}={cls.__name__}({old}={value!r})")
    return (frames["max_frame"], frames["min_frame"],
            _options(TensorRTOptions, tensorrt, flat["tensorrt"], "tensorrt"),
            _options(OnnxRuntimeOptions, onnxruntime, flat["onnxruntime"], "onnxruntime"))


__all__ = ["TensorRTOptions", "OnnxRuntimeOptions", "translate_deprecated"]
