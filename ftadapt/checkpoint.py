"""The checkpoint folder format (DESIGN.md §4): written whole or not at all, loaded without running untrusted pickle
code (``ftadapt.safe_load``).

A folder holds ``model.pt`` (plain state_dict with the official key names), ``config.json`` (``"model"``: the
:class:`ModelConfig`; ``"contents"``: "full" or "backbone" for an initialisation checkpoint without heads; plus any
extra sections such as the resolved training config), ``meta.json`` (method, step, metrics, provenance and the sha256
of the weight files) and, for resumable runs, ``train_state.pt``. Every ``.pt`` is read with
``torch.load(weights_only=True)``, so ``train_state`` may hold only tensors, numbers, strings, lists, tuples and dicts.
Where a training run keeps its checkpoints is ``ftadapt.run_folder``'s.
"""
from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ftadapt.errors import CheckpointError, UsageError
from ftadapt.fsutil import atomic_path, check_replaceable
from ftadapt.layout import CONFIG_FILE, META_FILE, MODEL_FILE, TRAIN_STATE_FILE
from ftadapt.models.deeplab import DeepLabV2, ModelConfig, is_head_key
from ftadapt.safe_load import check_weights_only, sha256_bytes, torch_load_bytes
from ftadapt.version import __version__

REQUIRED_FILES = (MODEL_FILE, CONFIG_FILE, META_FILE)
FORMAT_VERSION = 1
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel / DataParallel and torch.compile wrappers
_RESERVED_CONFIG = ("format", "model", "contents")
_RESERVED_META = ("format", "ftadapt_version", "sha256", "train_state_sha256")


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint folder. ``config`` is the whole config.json, ``model_config`` its parsed ``"model"``."""

    path: Path
    state_dict: dict[str, Tensor]
    model_config: ModelConfig
    config: dict[str, Any]
    meta: dict[str, Any]
    train_state: dict[str, Any] | None = None

    @property
    def backbone_only(self) -> bool:
        """True for an initialisation checkpoint whose heads (layer5/layer6) were never trained."""
        return self.config.get("contents") == "backbone"


class KeyDiff(NamedTuple):
    """How a state_dict differs from what a model expects (missing ``num_batches_tracked`` is not a difference)."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (key, found shape, expected shape)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 5) -> str:
        """One line per kind of difference, listing the first ``limit`` keys."""
        def first(items: list[str]) -> str:
            more = f", … ({len(items) - limit} more)" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        lines = []
        if self.missing:
            lines.append(f"missing keys ({len(self.missing)}): {first(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected keys ({len(self.unexpected)}): {first(self.unexpected)}")
        if self.mismatched:
            lines.append(f"shape mismatches ({len(self.mismatched)}): "
                         + first([f"{k} {list(got)} vs model {list(want)}" for k, got, want in self.mismatched]))
        return "\n".join(lines)


def key_diff(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> KeyDiff:
    """Compare ``state`` against ``expected`` (a model's state_dict, possibly on the meta device)."""
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items()
                  if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    return KeyDiff(missing, unexpected, mismatched)


def expected_state(config: ModelConfig, *, backbone_only: bool = False) -> dict[str, Tensor]:
    """The state_dict a model of ``config`` has, as shape-only meta tensors (no memory, no init cost)."""
    with torch.device("meta"):
        state = DeepLabV2(config).state_dict()
    return {k: v for k, v in state.items() if not (backbone_only and is_head_key(k))}


def fill_num_batches_tracked(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` in ``expected``'s key order with absent BN ``num_batches_tracked`` counters set to 0 (checkpoints
    saved before PyTorch 0.4.1 lack them); keys not in ``expected`` keep their place at the end."""
    out = {k: state[k] if k in state else torch.tensor(0, dtype=torch.long)
           for k in expected if k in state or k.endswith("num_batches_tracked")}
    out.update((k, v) for k, v in state.items() if k not in out)
    return out


def load_weights(model: DeepLabV2, state: Mapping[str, Tensor], *, source: str) -> None:
    """Load ``state`` strictly into ``model``; a model on the meta device adopts the tensors (``assign=True``).

    Raises CheckpointError naming ``source`` and listing missing / unexpected / mis-shaped keys.
    """
    expected = model.state_dict()
    diff = key_diff(expected, state)
    if diff:
        raise CheckpointError(f"{source} does not fit model {model.config}:\n{diff.describe()}")
    assign = next(model.parameters()).is_meta
    model.load_state_dict(fill_num_batches_tracked(expected, state), strict=True, assign=assign)


def plain_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Portable copy of ``state``: leading ``module.`` / ``_orig_mod.`` (DDP, DataParallel, torch.compile) dropped from
    every key, tensors detached and on the CPU."""
    out = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value.detach().cpu()
    return out


def _torch_save_hashed(obj: Any, path: Path) -> str:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    path.write_bytes(data)
    return sha256_bytes(data)


def save_checkpoint(path: str | Path, *, model_state: Mapping[str, Tensor], model_config: ModelConfig | Mapping,
                    meta: Mapping[str, Any], train_state: Mapping[str, Any] | None = None,
                    extra_config: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write a checkpoint folder at ``path`` atomically (a failure leaves no partial folder behind). An existing
    checkpoint folder there is replaced only with ``overwrite``, and only once the new one is complete; anything else
    at ``path`` (a file, another folder, a link) is never replaced.

    ``model_state`` may come from a wrapped model (prefixes are stripped); it must hold every key of ``model_config``'s
    model, or every backbone key (no layer5/layer6: written as a backbone-only init checkpoint). ``extra_config`` adds
    top-level sections to config.json; ``meta`` goes to meta.json with the format version and sha256 hashes added.
    """
    path = Path(path)
    config = model_config if isinstance(model_config, ModelConfig) else ModelConfig.from_dict(model_config)
    check_replaceable(path, overwrite=overwrite, kind="folder")  # refuses files, links and foreign folders
    if path.is_dir() and any(path.iterdir()) and not (path / MODEL_FILE).is_file():  # a marked non-checkpoint
        raise CheckpointError(f"{path} exists and is not a checkpoint folder; choose another output path")
    state = plain_state_dict(model_state)
    backbone_only = not any(is_head_key(k) for k in state)
    expected = expected_state(config, backbone_only=backbone_only)
    diff = key_diff(expected, state)
    if diff:
        raise CheckpointError(f"refusing to write {path}: the weights do not fit the model config:\n{diff.describe()}")
    state = fill_num_batches_tracked(expected, state)
    clash = sorted(set(extra_config or {}) & set(_RESERVED_CONFIG)) + sorted(set(meta) & set(_RESERVED_META))
    if clash:
        raise ValueError(f"reserved checkpoint field(s) {clash} cannot be set by the caller")
    if train_state is not None:
        check_weights_only(dict(train_state), "train_state")
    full_config = {"format": FORMAT_VERSION, "model": config.to_dict(),
                   "contents": "backbone" if backbone_only else "full", **(extra_config or {})}
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.mkdir()
        hashes = {"sha256": _torch_save_hashed(state, tmp / MODEL_FILE)}
        if train_state is not None:
            hashes["train_state_sha256"] = _torch_save_hashed(dict(train_state), tmp / TRAIN_STATE_FILE)
        full_meta = {"format": FORMAT_VERSION, "ftadapt_version": __version__, **meta, **hashes}
        (tmp / CONFIG_FILE).write_text(json.dumps(full_config, indent=2) + "\n")
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2) + "\n")
    return path


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a checkpoint folder, or a CheckpointError naming it as damaged."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON ({exc}); the checkpoint folder is damaged") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


# The meta.json fields ftadapt reads (``metrics.*``: the recorded mIoU, ``ftadapt.ensemble.recorded_miou``), each
# with the JSON types it may have (None: null), what that is in words and an example for the fix. Absent is allowed.
_META_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "sha256": ((str,), "a string: the hex sha256 of model.pt"),
    "train_state_sha256": ((str,), "a string: the hex sha256 of train_state.pt"),
    "method": ((str, type(None)), 'a string or null, e.g. "clan-norm"'),
    "step": ((int, type(None)), "a whole number ≥ 0 or null, e.g. 2000"),
    "metrics": ((dict, type(None)), 'an object or null, e.g. {"miou": 45.2}'),
    "metrics.miou": ((int, float, type(None)), "a number or null, e.g. 45.2 (percent)"),
    "metrics.eval/miou_oracle": ((int, float, type(None)), "a number or null, e.g. 45.2 (percent)"),
}
_JSON_TYPES = ((bool, "true/false"), (str, "a string"), (int, "a whole number"), (float, "a number"),
               (dict, "an object"), (list, "an array"), (type(None), "null"))


def _check_meta(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """``meta`` (read from ``path``) when every field of ``_META_FIELDS`` it holds has its type, else a
    CheckpointError naming the file, the field, what it holds and what it must hold: a hand-edited ``"step": "x"``
    must not reach the code that reads it."""
    for name, (types, expected) in _META_FIELDS.items():
        holder, _, key = name.rpartition(".")
        fields = meta.get(holder) if holder else meta
        if not isinstance(fields, dict) or key not in fields:
            continue
        value = fields[key]
        ok = isinstance(value, types) and not isinstance(value, bool) and not (key == "step" and value is not None
                                                                               and value < 0)
        if not ok:
            shown, found = json.dumps(value)[:40], next(words for kind, words in _JSON_TYPES if isinstance(value, kind))
            shown += "" if value is None or isinstance(value, bool) else f" ({found})"
            raise CheckpointError(f"{path}: field {name!r} holds {shown} but must be {expected}; correct it (or "
                                  f"restore the {META_FILE} the checkpoint was written with)")
    return meta


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of the checkpoint folder ``path`` (method, step, metrics, sha256 of the weights …), read
    without loading any weights; a CheckpointError when it is unreadable or a field ftadapt reads has the wrong type."""
    meta_path = Path(path) / META_FILE
    return _check_meta(_read_json(meta_path), meta_path)


def _read_verified(path: Path, expected_sha: Any, *, map_location: Any) -> Any:
    data = path.read_bytes()
    actual = sha256_bytes(data)
    if actual != expected_sha:
        raise CheckpointError(f"{path}: sha256 {actual} does not match {expected_sha!r} recorded in {META_FILE}; the "
                              "file was modified, truncated or belongs to another checkpoint")
    return torch_load_bytes(data, name=str(path), map_location=map_location)


def load_checkpoint(path: str | Path, *, map_location: Any = "cpu", with_train_state: bool = False) -> Checkpoint:
    """Read a checkpoint folder, verifying its layout and the sha256 of every weight file it loads."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path} is an exported ONNX graph, not a checkpoint folder: run it with `ftadapt eval "
                              "--onnx`, `ftadapt visualize --onnx` or `ftadapt predict --model`, or pass the "
                              "checkpoint folders it was exported from")
    if path.is_file():
        raise CheckpointError(f"{path} is a file, not a checkpoint folder. Import official .pth weights first with "
                              f"`ftadapt convert --from KIND {path} --out DIR` (see `ftadapt convert --help`)")
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint folder at {path}: pass a checkpoint folder written by `ftadapt "
                              "train` (RUN/checkpoints/step_NNNNNN) or by `ftadapt convert`")
    absent = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if absent:
        raise CheckpointError(f"checkpoint folder {path} lacks {', '.join(absent)} (a complete one holds "
                              f"{', '.join(REQUIRED_FILES)}); it is incomplete or not a checkpoint")
    config, meta = _read_json(path / CONFIG_FILE), read_meta(path)
    try:
        model_config = ModelConfig.from_dict(config.get("model") or {})
    except UsageError as exc:
        raise CheckpointError(f"{path / CONFIG_FILE}: bad model config: {exc}") from None
    state = _read_verified(path / MODEL_FILE, meta.get("sha256"), map_location=map_location)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path / MODEL_FILE} must hold a plain state_dict (names → tensors)")
    train_state = None
    if with_train_state:
        if not (path / TRAIN_STATE_FILE).is_file():
            raise CheckpointError(f"{path} has no {TRAIN_STATE_FILE}: it was not saved as a resumable checkpoint")
        train_state = _read_verified(path / TRAIN_STATE_FILE, meta.get("train_state_sha256"),
                                     map_location=map_location)
    return Checkpoint(path, state, model_config, config, meta, train_state)


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> DeepLabV2:
    """Rebuild the model of a checkpoint folder from its config.json, load the weights strictly, return it in eval mode.

    Imports no training code; the model is built on the meta device and adopts the loaded tensors (no random init).
    """
    return load_model_and_meta(path, device=device)[0]


def load_model_and_meta(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[DeepLabV2, dict[str, Any]]:
    """:func:`load_model` and the checkpoint's meta.json (method, step, sha256, recorded mIoU …), read and checked
    once."""
    ckpt = load_checkpoint(path, map_location=device)
    if ckpt.backbone_only:
        raise CheckpointError(f"{path} holds backbone-only initialisation weights (no trained heads); use it as "
                              f"`ftadapt train --init {path}`, not as a model")
    with torch.device("meta"):
        model = DeepLabV2(ckpt.model_config)
    load_weights(model, ckpt.state_dict, source=str(Path(path) / MODEL_FILE))
    return model.to(device).eval(), ckpt.meta


__all__ = ["Checkpoint", "KeyDiff", "key_diff", "expected_state", "fill_num_batches_tracked", "load_weights",
           "plain_state_dict", "save_checkpoint", "read_meta", "load_checkpoint", "load_model", "load_model_and_meta",
           "MODEL_FILE", "CONFIG_FILE", "META_FILE", "TRAIN_STATE_FILE", "REQUIRED_FILES"]
