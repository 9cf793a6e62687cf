"""The metadata schema of an exported ONNX artifact (DESIGN.md §4), shared by ``ftadapt.export`` and the runtime.

ONNX ``metadata_props`` is a string → string map; every ftadapt entry is a key under ``ftadapt.`` whose value is JSON.
This module reads and writes that map as a plain ``dict`` — it imports neither numpy nor onnx nor torch, so the runtime
can validate an artifact from ``onnxruntime.InferenceSession(...).get_modelmeta().custom_metadata_map`` alone.

``FORMAT_VERSION`` changes when a key's meaning changes; a reader refuses versions it does not know.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from ftadapt.errors import FtadaptError

FORMAT_VERSION = 1
PREFIX = "ftadapt."
PRECISIONS = ("fp32", "fp16")
OUTPUTS = ("labels", "probs")
VERIFICATION_STATUSES = ("passed", "failed", "skipped")
# Every key the format defines, without the prefix; all are required.
KEYS = ("format_version", "version", "classes", "palette", "members", "working_size", "precision", "opset", "input",
        "outputs", "preprocessing", "fusion", "verification")
# Keys added within format 1, with the value a file written before them means (such files stay readable).
OPTIONAL_KEYS: dict[str, Any] = {"ensemble": {"fusion": "probs", "flip": False}}
FUSIONS = ("probs", "logits")


class ArtifactError(FtadaptError):
    """An ONNX file whose ftadapt metadata is missing, damaged or of an unknown format version."""


@dataclasses.dataclass(frozen=True)
class ArtifactMember:
    """One fused model: ``weight`` is normalised (the members' weights sum to 1); ``miou`` is the mIoU (percent)
    recorded in the checkpoint's meta.json, ``miou_source`` the field it came from (None when none was recorded)."""

    name: str
    method: str | None
    head_rule: str
    weight: float
    sha256: str
    miou: float | None = None
    miou_source: str | None = None


@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    """Everything ``metadata_props`` says about an exported graph.

    ``working_size`` is (W, H), the resolution the members run at. ``input`` describes the ``image`` tensor (uint8 RGB
    N×H×W×3), ``preprocessing`` what the graph does to it, ``fusion`` how member outputs combine (for people),
    ``ensemble`` the same as data — ``{"fusion": "probs" | "logits", "flip": bool}`` —, ``verification`` the parity
    figures (``status`` one of passed / failed / skipped).
    """

    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    members: tuple[ArtifactMember, ...]
    working_size: tuple[int, int]
    precision: str
    opset: int
    version: str
    outputs: tuple[str, ...] = ("labels",)
    input: dict[str, Any] = dataclasses.field(default_factory=dict)
    preprocessing: dict[str, Any] = dataclasses.field(default_factory=dict)
    fusion: str = "weighted mean of per-member softmax"
    verification: dict[str, Any] = dataclasses.field(default_factory=lambda: {"status": "skipped"})
    ensemble: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(OPTIONAL_KEYS["ensemble"]))
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def verified(self) -> bool:
        """True only when the export's parity verification ran and passed."""
        return self.verification.get("status") == "passed"

    def with_verification(self, verification: Mapping[str, Any]) -> ArtifactInfo:
        return dataclasses.replace(self, verification=dict(verification))

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries: ``ftadapt.<key>`` → JSON text."""
        values = {
            "format_version": self.format_version, "version": self.version, "classes": list(self.classes),
            "palette": [list(c) for c in self.palette], "members": [dataclasses.asdict(m) for m in self.members],
            "working_size": list(self.working_size), "precision": self.precision, "opset": self.opset,
            "input": self.input, "outputs": list(self.outputs), "preprocessing": self.preprocessing,
            "fusion": self.fusion, "verification": self.verification, "ensemble": self.ensemble,
        }
        return {PREFIX + key: json.dumps(values[key], allow_nan=False, separators=(",", ":"))
                for key in (*KEYS, *OPTIONAL_KEYS)}

    @classmethod
    def from_props(cls, props: Mapping[str, str], *, source: str = "the model") -> ArtifactInfo:
        """Parse and validate ``metadata_props`` (other keys are ignored); raises ArtifactError naming ``source``."""
        if not any(k.startswith(PREFIX) for k in props):
            raise ArtifactError(f"{source} carries no ftadapt metadata: it was not written by `ftadapt export` "
                                "(re-export it with `ftadapt export`)")
        absent = [PREFIX + k for k in KEYS if PREFIX + k not in props]
        if PREFIX + "format_version" not in absent:
            version = _json(props, "format_version", source)
            if version != FORMAT_VERSION:
                newer = isinstance(version, int) and version > FORMAT_VERSION
                raise ArtifactError(f"{source} has ftadapt metadata format {version!r}; this ftadapt reads format "
                                    f"{FORMAT_VERSION}" + (" — upgrade ftadapt" if newer else " — re-export it"))
        if absent:
            raise ArtifactError(f"{source}: ftadapt metadata lacks {', '.join(absent)}; the file is damaged or was "
                                "edited — re-export it")
        v = {key: _json(props, key, source) for key in KEYS}
        v.update({key: _json(props, key, source) if PREFIX + key in props else default
                  for key, default in OPTIONAL_KEYS.items()})
        try:
            members = tuple(ArtifactMember(**m) for m in v["members"])
            return cls(classes=tuple(v["classes"]), palette=tuple(tuple(c) for c in v["palette"]), members=members,
                       working_size=tuple(v["working_size"]), precision=v["precision"], opset=v["opset"],
                       version=v["version"], outputs=tuple(v["outputs"]), input=v["input"],
                       preprocessing=v["preprocessing"], fusion=v["fusion"], verification=v["verification"],
                       ensemble=v["ensemble"], format_version=v["format_version"])
        except (TypeError, ValueError) as exc:  # wrong JSON shapes, unknown member fields, failed validation
            raise ArtifactError(f"{source}: invalid ftadapt metadata: {exc}") from None


def _json(props: Mapping[str, str], key: str, source: str) -> Any:
    try:
        return json.loads(props[PREFIX + key])
    except (TypeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{source}: metadata {PREFIX + key} is not valid JSON ({exc})") from None


def _validate(info: ArtifactInfo) -> None:
    """Raise ValueError when a field is out of its domain (the parser turns it into an ArtifactError)."""
    if not info.classes or not all(isinstance(c, str) for c in info.classes):
        raise ValueError(f"classes must be a non-empty list of names, got {info.classes!r}")
    if len(info.palette) != len(info.classes) or not all(
            len(c) == 3 and all(isinstance(x, int) and 0 <= x <= 255 for x in c) for c in info.palette):
        raise ValueError(f"palette must hold one RGB triple (0-255) per class ({len(info.classes)})")
    if not info.members:
        raise ValueError("members must name at least one model")
    for m in info.members:
        if not (isinstance(m.weight, (int, float)) and m.weight > 0 and math.isfinite(m.weight)):
            raise ValueError(f"member {m.name!r} has weight {m.weight!r}; weights must be positive")
    total = sum(m.weight for m in info.members)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"member weights must be normalised to sum to 1, they sum to {total}")
    if len(info.working_size) != 2 or not all(isinstance(s, int) and s > 0 for s in info.working_size):
        raise ValueError(f"working_size must be two positive integers (W, H), got {info.working_size!r}")
    if info.precision not in PRECISIONS:
        raise ValueError(f"precision {info.precision!r} is not one of {', '.join(PRECISIONS)}")
    if not isinstance(info.opset, int) or info.opset < 1:
        raise ValueError(f"opset must be a positive integer, got {info.opset!r}")
    if not info.outputs or info.outputs[0] != "labels" or not set(info.outputs) <= set(OUTPUTS):
        raise ValueError(f"outputs must be ['labels'] or ['labels', 'probs'], got {list(info.outputs)}")
    mode = info.ensemble
    if not (isinstance(mode, dict) and set(mode) == {"fusion", "flip"} and mode["fusion"] in FUSIONS
            and isinstance(mode["flip"], bool)):
        raise ValueError(f"ensemble must be {{'fusion': one of {', '.join(FUSIONS)}, 'flip': true/false}}, "
                         f"got {mode!r}")
    if not isinstance(info.verification, dict) or info.verification.get("status") not in VERIFICATION_STATUSES:
        raise ValueError(f"verification must be an object whose status is one of {', '.join(VERIFICATION_STATUSES)}")


__all__ = ["ArtifactError", "ArtifactInfo", "ArtifactMember", "FORMAT_VERSION", "KEYS", "PREFIX", "PRECISIONS"]
