"""Weighted ensembles of checkpoint folders: the paper's starred rows (e.g. 0.7 · norm-only + 0.3 · original CLAN).

Each member runs on the same input with its own head rule ("sum" of both heads for CLAN layouts, "main" for multi)
and its own ASPP variant (both from the member's config.json); the weights are normalised to sum to 1. The modes,
all at the members' stride 8 (the fused scores are then upsampled, align_corners=True, and argmaxed):

- ``fusion="probs"`` (default, what a deployment runs): Σ w_i · softmax(logits_i);
- ``fusion="probs", flip=True``: Σ w_i · ½(softmax(logits_i(x)) + mirror(softmax(logits_i(mirror x)))) —
  FeatureToAdapt's evaluate.py with flip, the evaluation that made the starred rows ("CLAN + Norm*", "MaxSquare +
  Norm*"): every version of evaluate.py of the results' date (2020-05-30) fuses only under flip (methods.md §6.3);
- ``fusion="logits"``: Σ w_i · logits_i — HEAD's evaluate.py (the 2020-06-01 refactor) without flip; no paper row
  was computed this way. (Flip with logits fusion is in neither and is refused.)
- ``fusion="fta-code"`` (evaluation only, never exported): an emulation of evaluate.py's path for two CLAN-layout
  members, bug included — the second member's un-flipped output is computed with model 1. With P_k = softmax(p1 + p2
  of member k) and L_k its logits: with flip ½·P1(x) + (w1/2)·mirror(P1(mirror x)) + (w2/2)·mirror(P2(mirror x)),
  member 2 entering only through the mirrored view; without flip w1·L1 + w2·L1, member 1 alone. It exists to
  reproduce the published "CLAN + Norm*" number; it is not an ensemble to use.

:class:`Ensemble` is not a model: its output is the fused scores (``ensemble.fused(x)``). Evaluation scores it through
:class:`~ftadapt.evaluation.pytorch.EnsemblePredictor` and the export wraps it in
:class:`~ftadapt.export.onnx_graph.SegmentationGraph`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ftadapt.artifact import ArtifactMember
from ftadapt.checkpoint import load_model_and_meta
from ftadapt.errors import UsageError
from ftadapt.models.deeplab import HEAD_RULES, DeepLabV2, combine_heads
from ftadapt.run_folder import checkpoint_name, resolve_checkpoint

FUSIONS = ("probs", "logits", "fta-code")
EXPORT_FUSIONS = ("probs", "logits")  # "fta-code" emulates a bug of the authors' evaluation: never exported


@dataclasses.dataclass(frozen=True)
class MemberSpec:
    """A member as the user names it: a checkpoint (or run) folder and a positive, not yet normalised weight."""

    path: Path
    weight: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> MemberSpec:
        """``DIR:WEIGHT`` (e.g. ``runs/norm-only:0.7``) or just ``DIR`` (weight 1)."""
        head, sep, tail = spec.rpartition(":")
        if not (sep and head):
            return cls(Path(spec))
        try:
            weight = float(tail)
        except ValueError:
            raise UsageError(f"ensemble member {spec!r}: {tail!r} is not a number; write DIR:WEIGHT, "
                             "e.g. runs/norm-only:0.7") from None
        return cls(Path(head), _check_weight(weight, spec))


def _check_weight(weight: float, what: str) -> float:
    if not (math.isfinite(weight) and weight > 0):
        raise UsageError(f"ensemble member {what}: weight {weight!r} must be a positive number (finite, above 0), "
                         "e.g. DIR:0.7; weights are relative: they are normalised to sum to 1")
    return float(weight)


def normalise_weights(weights: Sequence[float], names: Sequence[str] | None = None) -> list[float]:
    """The members' weights (each finite and > 0, else a UsageError naming the member) scaled to sum to 1 — the one
    normalisation of ensemble weights. Each is divided by the largest first, so weights near the float limit (1e308)
    cannot overflow the sum to inf (which would make every weight 0). A weight so much smaller than another that it
    would become 0 in the float32 the fusion computes in is refused: the member would not count at all."""
    names = list(names) if names is not None else [f"#{i + 1}" for i in range(len(weights))]
    checked = [_check_weight(float(w), name) for w, name in zip(weights, names)]
    largest = max(checked)
    scaled = [w / largest for w in checked]
    total = sum(scaled)
    out = [w / total for w in scaled]
    for w, share, name in zip(checked, torch.tensor(out, dtype=torch.float32).tolist(), names):
        if share == 0.0:
            raise UsageError(f"ensemble member {name}: weight {w!r} is negligible beside the largest, {largest!r} (it "
                             "would count 0); give weights of comparable size, e.g. 0.7 and 0.3")
    return out


@dataclasses.dataclass(frozen=True)
class MemberInfo:
    """Provenance of one loaded member (what the ONNX metadata records). ``weight`` is normalised."""

    name: str
    path: Path
    method: str | None
    head_rule: str
    weight: float
    sha256: str
    miou: float | None
    miou_source: str | None

    def to_artifact(self) -> ArtifactMember:
        return ArtifactMember(name=self.name, method=self.method, head_rule=self.head_rule, weight=self.weight,
                              sha256=self.sha256, miou=self.miou, miou_source=self.miou_source)


def recorded_miou(meta: dict[str, Any]) -> tuple[float | None, str | None]:
    """The mIoU (percent) a checkpoint's meta.json records and the field it came from: ``metrics.miou`` (a plain
    evaluation), else ``metrics.eval/miou_oracle`` (the trainer's periodic evaluation on target val)."""
    metrics = meta.get("metrics") or {}
    for key in ("miou", "eval/miou_oracle"):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value), f"metrics.{key}"
    return None, None


class Ensemble(nn.Module):
    """Weighted fusion of DeepLab-v2 members; see the module docstring for the modes.

    ``rules`` overrides each member's head rule (default: its config's). ``infos`` records where members came from.
    ``fusion`` is "probs" (Σ w_i · softmax, the deployment default), "logits" (Σ w_i · logits, HEAD's evaluate.py of
    2020-06-01 without flip, which made no paper row) or "fta-code" (the emulation of evaluate.py's two-CLAN-member
    path, bug included: exactly two members under head rule "sum"); ``flip`` replaces each member's softmax by the
    mean of softmax(member(x)) and the mirrored softmax(member(mirrored x)) — the evaluation of the paper's starred
    rows (with flip), which fuses probabilities. Members may be in half precision (the FP16 export): the input is
    cast to each member's dtype and the logits back to FP32, so the softmax, the flip average and the fusion always
    run in FP32.
    """

    def __init__(self, models: Sequence[DeepLabV2], weights: Sequence[float], *, rules: Sequence[str] | None = None,
                 infos: Sequence[MemberInfo] | None = None, fusion: str = "probs", flip: bool = False) -> None:
        super().__init__()
        if not models:
            raise UsageError("an ensemble needs at least one member")
        if len(weights) != len(models):
            raise UsageError(f"{len(models)} members but {len(weights)} weights")
        names = [i.name for i in infos] if infos else None
        weights = normalise_weights(weights, names)
        rules = list(rules) if rules is not None else [m.config.head_rule for m in models]
        for rule in rules:
            if rule not in HEAD_RULES:
                raise UsageError(f"head rule {rule!r}: expected one of {', '.join(HEAD_RULES)}")
        check_mode(fusion, flip)
        if fusion == "fta-code":
            check_fta_code(names or [f"#{i + 1}" for i in range(len(models))], rules)
        classes = {m.config.num_classes for m in models}
        if len(classes) > 1:
            names = [i.name for i in infos] if infos else [f"#{i + 1}" for i in range(len(models))]
            found = ", ".join(f"{n}: {m.config.num_classes}" for n, m in zip(names, models))
            raise UsageError(f"ensemble members predict different label spaces ({found} classes); every member must "
                             "predict the same classes in the same order")
        self.members = nn.ModuleList(models)
        self.rules = tuple(rules)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.infos = tuple(infos) if infos is not None else ()
        self.num_classes = classes.pop()
        self.fusion, self.flip = fusion, bool(flip)

    def member_scores(self, x: Tensor) -> list[Tensor]:
        """What each member contributes before weighting, in FP32: its combined logits ("logits" fusion), its softmax
        ("probs"), or with ``flip`` its flip-averaged softmax — the frame and its mirror image in one batch. For
        "fta-code", what evaluate.py computes for its two members (see :meth:`fta_code_scores`).

        Shape: x N×3×H×W (BGR − mean, FP32) → list of N×C×h×w (stride 8).
        """
        if self.fusion == "fta-code":
            return self.fta_code_scores(x)
        n = x.shape[0]
        views = torch.cat([x, x.flip(-1)]) if self.flip else x
        out = []
        for member, rule in zip(self.members, self.rules):
            logits = _logits(member, views, rule)
            if self.fusion == "logits":
                out.append(logits)
            elif self.flip:
                probs = logits.softmax(dim=1)
                out.append(0.5 * (probs[:n] + probs[n:].flip(-1)))
            else:
                out.append(logits.softmax(dim=1))
        return out

    def fta_code_scores(self, x: Tensor) -> list[Tensor]:
        """The two members' terms as FeatureToAdapt's evaluate.py computes them (its non-multi two-member path), bug
        included: member 2's un-flipped view is model 1's. With flip: [½(P1(x) + mirror(P1(mirror x))),
        ½(P1(x) + mirror(P2(mirror x)))], P_k = softmax(logits of member k); without flip [L1, L1], member 1's logits
        twice (member 2 does not run).

        Shape: x N×3×H×W (BGR − mean, FP32) → two N×C×h×w (stride 8).
        """
        (first, second), (rule1, rule2) = self.members, self.rules
        if not self.flip:
            logits = _logits(first, x, rule1)
            return [logits, logits]
        n = x.shape[0]
        probs1 = _logits(first, torch.cat([x, x.flip(-1)]), rule1).softmax(dim=1)
        plain, mirrored1 = probs1[:n], probs1[n:].flip(-1)
        mirrored2 = _logits(second, x.flip(-1), rule2).softmax(dim=1).flip(-1)
        return [0.5 * (plain + mirrored1), 0.5 * (plain + mirrored2)]

    def fuse(self, scores: Sequence[Tensor]) -> Tensor:
        """Σ_i w_i · s_i with the normalised weights. Shape: list of N×C×h×w → N×C×h×w."""
        fused = scores[0] * self.weights[0]
        for i in range(1, len(scores)):
            fused = fused + scores[i] * self.weights[i]
        return fused

    def fused(self, x: Tensor) -> Tensor:
        """The fused scores at the members' stride 8: probabilities for "probs" fusion (and "fta-code" with flip),
        logits for "logits" (and "fta-code" without flip); their upsampled argmax is the ensemble's prediction.
        Shape: x N×3×H×W (BGR − mean) → N×C×h×w (FP32)."""
        return self.fuse(self.member_scores(x))

    def forward(self, x: Tensor) -> Tensor:
        """``fused(x)``."""
        return self.fused(x)

    def describe_mode(self) -> str:
        """One line for people: how members are combined."""
        if self.fusion == "fta-code":
            return ("fta-code: an emulation of the authors' evaluate.py for two CLAN-layout members, bug included (" +
                    ("member 2 enters only through its mirrored view" if self.flip else "member 1 alone") +
                    "), not an ensemble to use")
        what = {"probs": "softmax", "logits": "raw logits (under each head rule)"}[self.fusion]
        return f"weighted sum of each member's {'flip-averaged ' if self.flip else ''}{what}"


def _logits(member: nn.Module, x: Tensor, rule: str) -> Tensor:
    """A member's logits under ``rule`` in FP32, ``x`` cast to the member's dtype (FP16 members).

    Shape: x N×3×H×W → N×C×h×w."""
    dtype = next(member.parameters()).dtype
    return combine_heads(member(x.to(dtype)).logits, rule).float()


def check_fta_code(names: Sequence[str], rules: Sequence[str] | None = None) -> None:
    """UsageError unless the members (``names``, with their head ``rules`` when known) fit fusion "fta-code": exactly
    two, both under head rule "sum" (the CLAN layout)."""
    if len(names) == 2 and (rules is None or all(r == "sum" for r in rules)):
        return
    found = ", ".join(f"{n} ({r})" for n, r in zip(names, rules)) if rules is not None else ", ".join(names)
    raise UsageError(f"fusion 'fta-code' emulates the authors' evaluate.py path for two CLAN-layout members only: it "
                     f"needs exactly two members under head rule 'sum'; got {len(names)}: {found or 'none'}")


def check_mode(fusion: str, flip: bool) -> None:
    """UsageError unless (``fusion``, ``flip``) is one of the ensemble's modes."""
    if fusion not in FUSIONS:
        raise UsageError(f"fusion {fusion!r}: expected one of {', '.join(FUSIONS)}")
    if flip and fusion == "logits":
        raise UsageError("flip averages each member's softmax over the frame and its mirror image, so it fuses "
                         "probabilities: use fusion 'probs' with flip (the paper's starred rows), or 'logits' without")


def load_ensemble(specs: Sequence[MemberSpec | str], *, device: str | torch.device = "cpu", fusion: str = "probs",
                  flip: bool = False) -> Ensemble:
    """Load every member's checkpoint folder (a run folder means its newest checkpoint) into an :class:`Ensemble`
    fusing with ``fusion`` and ``flip``.

    Raises CheckpointError for a missing, corrupt or backbone-only folder and UsageError for weights ≤ 0 or
    mismatched label spaces.
    """
    check_mode(fusion, flip)
    specs = [MemberSpec.parse(s) if isinstance(s, str) else s for s in specs]
    if not specs:
        raise UsageError("name at least one member: ftadapt export DIR, or --ensemble DIR:WEIGHT (repeatable)")
    if fusion == "fta-code":
        check_fta_code([str(s.path) for s in specs])  # before loading; the head rules are checked once loaded
    weights = normalise_weights([s.weight for s in specs], [str(s.path) for s in specs])
    models, infos, names = [], [], set()
    for spec, weight in zip(specs, weights):
        path = resolve_checkpoint(spec.path)
        model, meta = load_model_and_meta(path, device=device)  # verifies the weights' sha256 against meta.json
        models.append(model)
        name = checkpoint_name(path)
        name = name if name not in names else f"{name}#{len(infos) + 1}"
        names.add(name)
        miou, miou_source = recorded_miou(meta)
        infos.append(MemberInfo(name=name, path=path, method=meta.get("method"), head_rule=model.config.head_rule,
                                weight=weight, sha256=str(meta.get("sha256")), miou=miou,
                                miou_source=miou_source))
    return Ensemble(models, [s.weight for s in specs], infos=infos, fusion=fusion, flip=flip).eval()


__all__ = ["Ensemble", "FUSIONS", "EXPORT_FUSIONS", "check_fta_code", "check_mode", "MemberInfo", "MemberSpec",
           "load_ensemble", "normalise_weights", "recorded_miou"]
