"""The TensorRT engine cache: shape profiles, the cache key (DESIGN.md §4) and validated reads and atomic writes.

An engine (plan) is valid only for the exact ONNX bytes, TensorRT version and the CUDA major version that TensorRT
build targets (the CUDA 12 and CUDA 13 builds of one TensorRT share ``trt.__version__``), GPU model and compute
capability, precision, the outputs it computes, shape profile and builder settings it was built with. All of them go
into the key; the cache file is named
by the key's digest and a JSON record beside it repeats the full key and the plan's sha256. A plan whose record is
missing, names another key (foreign or stale) or whose bytes do not match (corrupt) is never handed to TensorRT:
the lookup says why, and the caller rebuilds or refuses. Nothing here imports TensorRT, so it is tested on any machine.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ftadapt.errors import UsageError
from ftadapt.fsutil import atomic_path, write_text_atomic
from ftadapt.runtime.frames import Size, check_batch, check_size

ENGINE_FORMAT = 2  # bump when the key fields or the record layout change
DEFAULT_MAX_FRAME: Size = (2048, 1024)  # W×H of a Cityscapes camera frame
Shape = tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class ShapeProfile:
    """The optimization profile of the ``image`` input: N×H×W×3 shapes (min, opt, max), TensorRT's own layout of
    the tensor; the frame sizes it is made from and gives back are W×H."""

    min: Shape
    opt: Shape
    max: Shape

    @property
    def static(self) -> bool:
        """min = opt = max: TensorRT builds for exactly one shape (best tactics; allows CUDA graphs)."""
        return self.min == self.opt == self.max

    @property
    def max_batch(self) -> int:
        return self.max[0]

    @property
    def max_frame(self) -> Size:
        """(W, H) of the largest frame."""
        return self.max[2], self.max[1]

    @property
    def min_frame(self) -> Size:
        """(W, H) of the smallest frame."""
        return self.min[2], self.min[1]

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def compute_profile(max_batch: int | None = None, max_frame: object = None, min_frame: object = None, *,
                    opt_batch: int | None = None, opt_frame: object = None) -> ShapeProfile:
    """The ``image`` profile for frames up to ``max_frame`` (W, H; default 2048×1024) in batches up to ``max_batch``
    (default 1), down to ``min_frame`` (default 1×1) and batch 1.

    TensorRT picks its tactics for the opt shape: ``opt_batch`` (default 1) frames of ``opt_frame`` (default
    ``max_frame``) — a driving-perception app runs one frame per call at its camera size, so that is what is tuned
    by default, not the largest batch. ``min_frame == max_frame`` with ``max_batch == 1`` gives a static profile (one
    camera resolution, per-frame calls).
    """
    batch = 1 if max_batch is None else check_batch(max_batch)
    high = check_size(max_frame, "max_frame") or DEFAULT_MAX_FRAME
    low = check_size(min_frame, "min_frame") or (1, 1)
    if low[0] > high[0] or low[1] > high[1]:
        raise UsageError(f"min_frame {low[0]}×{low[1]} exceeds max_frame {high[0]}×{high[1]} (both W×H)")
    opt_n = 1 if opt_batch is None else check_batch(opt_batch, "opt_batch")
    opt = check_size(opt_frame, "opt_frame") or high
    if opt_n > batch:
        raise UsageError(f"opt_batch={opt_n} exceeds max_batch={batch}; tune for a batch the engine takes")
    if not (low[0] <= opt[0] <= high[0] and low[1] <= opt[1] <= high[1]):
        raise UsageError(f"opt_frame {opt[0]}×{opt[1]} is outside min_frame {low[0]}×{low[1]} … max_frame "
                         f"{high[0]}×{high[1]} (all W×H)")
    return ShapeProfile(min=(1, low[1], low[0], 3), opt=(opt_n, opt[1], opt[0], 3), max=(batch, high[1], high[0], 3))


@dataclasses.dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. ``builder`` holds the build settings that change the plan."""

    model_sha256: str
    tensorrt: str
    gpu: str
    compute_capability: str
    precision: str
    profile: ShapeProfile
    builder: dict[str, Any] = dataclasses.field(default_factory=dict)
    cuda: str = "unknown"  # the CUDA major version of this TensorRT build, e.g. "cuda13"
    outputs: tuple[str, ...] = ("labels",)  # the outputs the engine computes (others are unmarked before the build)

    def to_dict(self) -> dict[str, Any]:
        return {"format": ENGINE_FORMAT, "model_sha256": self.model_sha256, "tensorrt": self.tensorrt,
                "cuda": self.cuda, "gpu": self.gpu, "compute_capability": self.compute_capability,
                "precision": self.precision, "outputs": sorted(self.outputs), "profile": self.profile.to_dict(),
                "builder": dict(sorted(self.builder.items()))}

    def digest(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Lookup:
    """A cache lookup: the plan bytes when a valid engine is cached, else None and the ``problem`` (None = absent)."""

    plan: bytes | None
    path: Path
    problem: str | None = None
    record: dict[str, Any] | None = None


def default_cache_dir() -> Path:
    """``$FTADAPT_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/ftadapt/engines``, else ``~/.cache/ftadapt/engines``."""
    if os.environ.get("FTADAPT_ENGINE_CACHE"):
        return Path(os.environ["FTADAPT_ENGINE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ftadapt" / "engines"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "x"


class EngineCache:
    """A folder of ``<model>-<digest>.engine`` plans, each with a ``.json`` record, plus per-GPU timing caches."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"engine cache {self.root} is a file; pass a folder")

    def engine_path(self, key: EngineKey, model_name: str) -> Path:
        return self.root / f"{_slug(Path(model_name).stem)}-{key.digest()[:24]}.engine"

    def timing_cache_path(self, key: EngineKey) -> Path:
        """Timing caches are reusable across models but not across TensorRT builds or GPU models."""
        return self.root / (f"timing-trt{_slug(key.tensorrt)}-{_slug(key.cuda)}-{_slug(key.gpu)}"
                            f"-sm{_slug(key.compute_capability)}.cache")

    def lookup(self, key: EngineKey, model_name: str) -> Lookup:
        """The cached plan for ``key``, checked against its record (see the module docstring)."""
        path = self.engine_path(key, model_name)
        if not path.exists():
            return Lookup(None, path)
        record_path = path.with_suffix(".json")
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError) as exc:
            return Lookup(None, path, f"{path} has no readable record {record_path.name} ({exc}); it is incomplete")
        if not isinstance(record, dict) or record.get("key") != key.to_dict():
            return Lookup(None, path, f"{path} was built for another model, TensorRT, GPU or profile (its record "
                                      f"{record_path.name} names a different key); it is stale or foreign")
        plan = path.read_bytes()
        if hashlib.sha256(plan).hexdigest() != record.get("plan_sha256"):
            return Lookup(None, path, f"{path} does not match the sha256 in {record_path.name}; it is corrupt")
        return Lookup(plan, path, None, record)

    def store(self, key: EngineKey, model_name: str, plan: bytes, info: dict[str, Any]) -> Path:
        """Write the plan, then its record (the record commits it), each atomically; returns the engine path."""
        path = self.engine_path(key, model_name)
        with atomic_path(path, suffix=".engine", overwrite=True) as tmp:  # a stale engine
            tmp.write_bytes(plan)
        record = {"key": key.to_dict(), "plan_sha256": hashlib.sha256(plan).hexdigest(), "model": model_name, **info}
        write_text_atomic(path.with_suffix(".json"), json.dumps(record, indent=2) + "\n", overwrite=True)
        return path

    def read_timing_cache(self, key: EngineKey) -> bytes:
        path = self.timing_cache_path(key)
        return path.read_bytes() if path.is_file() else b""

    def write_timing_cache(self, key: EngineKey, data: bytes) -> None:
        with atomic_path(self.timing_cache_path(key), suffix=".cache", overwrite=True) as tmp:
            tmp.write_bytes(data)


__all__ = ["DEFAULT_MAX_FRAME", "ENGINE_FORMAT", "EngineCache", "EngineKey", "Lookup", "ShapeProfile",
           "compute_profile", "default_cache_dir"]
