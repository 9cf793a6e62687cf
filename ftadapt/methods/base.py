"""What a training method is: a tuple of loss terms, each reading one forward of G per domain.

The training loop (``ftadapt.training``) runs, per step: the source forward and the source losses of every term, one
backward; the target forward and the target losses, one backward; then the discriminator losses on the *detached*
predictions of those same forwards, one backward. A term returns its weighted contributions by name (the names are
what the logs show and what a NaN report names); the loop sums them. Terms hold no state across steps; within a step
they may leave detached tensors in ``StepContext.cache`` for the discriminator hook.

Each term says, in ``coefficients``, the factor every loss it reports is scaled by at a step (λ × damping): the hooks
multiply by exactly that, and ``ftadapt train --plan`` prints it, so the schedule a user checks is the one that runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from ftadapt.errors import UsageError


@dataclass
class DomainOutput:
    """One domain's forward, as the terms see it.

    ``logits``: every head's logits upsampled (bilinear, align_corners=True) to the nominal size of the domain — the
    source label size or the target protocol size — in float32, state-dict order (layer5, layer6). ``features``: the
    layer4 output at stride 8. ``label``: N×H×W trainIds (source only).
    """

    logits: tuple[Tensor, ...]
    features: Tensor
    label: Tensor | None = None


@dataclass
class StepContext:
    """What a term may read at one step: the step, the run's steps (the poly horizon), the models and the head
    layout."""

    step: int
    steps: int
    model: nn.Module
    heads: str  # "clan" | "multi" | "single"
    head_rule: str  # "sum" | "main"
    discriminator: nn.Module | None = None
    cache: dict[str, Any] = field(default_factory=dict)


class Term:
    """A loss term. Each hook returns ``{name: weighted scalar loss}``; an empty dict means "nothing here".

    ``name`` is the term's name in the method catalogue (``ftadapt.config.methods``). ``uses_target`` /
    ``uses_discriminator`` tell the loop whether it needs a target forward and a discriminator.
    """

    name: str
    uses_target = False
    uses_discriminator = False

    def coefficients(self, step: int, steps: int) -> dict[str, float]:
        """The factor each loss this term reports is multiplied by at 0-based ``step`` of a run of ``steps``, by
        loss name (λ × damping; the plain-BCE preheat changes a loss's form, not its factor: see ``plain``)."""
        return {}

    def plain(self, step: int) -> frozenset[str]:
        """The losses still in their plain-BCE preheat form at ``step`` (their weight map not yet applied)."""
        return frozenset()

    def check_model(self, heads: str) -> None:
        """Raise a UsageError when the term cannot work with this head layout."""

    def source(self, ctx: StepContext, out: DomainOutput) -> dict[str, Tensor]:
        return {}

    def target(self, ctx: StepContext, out: DomainOutput) -> dict[str, Tensor]:
        return {}

    def discriminator(self, ctx: StepContext, src: DomainOutput, tgt: DomainOutput) -> dict[str, Tensor]:
        return {}


def require_heads(term: str, heads: str, wanted: str, example: str) -> None:
    """UsageError unless the model has the ``wanted`` head layout."""
    if heads != wanted:
        raise UsageError(f"{term} needs a model with {wanted!r} heads (e.g. --model {example}); "
                         f"this model has {heads!r} heads")


@dataclass(frozen=True)
class Method:
    """A named composition of terms; the loop calls the three hooks and knows nothing else about the method."""

    name: str
    terms: tuple[Term, ...]

    @property
    def uses_target(self) -> bool:
        return any(t.uses_target for t in self.terms)

    @property
    def uses_discriminator(self) -> bool:
        return any(t.uses_discriminator for t in self.terms)

    def check_model(self, heads: str) -> None:
        for term in self.terms:
            term.check_model(heads)

    def coefficients(self, step: int, steps: int) -> dict[str, float]:
        """Every term's ``coefficients`` at ``step``, by loss name, in the order the loop calls the terms."""
        return _merge(term.coefficients(step, steps) for term in self.terms)

    def plain(self, step: int) -> frozenset[str]:
        """The losses of every term that are in their plain-BCE preheat form at ``step``."""
        return frozenset().union(*(term.plain(step) for term in self.terms))

    def source_losses(self, ctx: StepContext, out: DomainOutput) -> dict[str, Tensor]:
        return _merge(term.source(ctx, out) for term in self.terms)

    def target_losses(self, ctx: StepContext, out: DomainOutput) -> dict[str, Tensor]:
        return _merge(term.target(ctx, out) for term in self.terms)

    def discriminator_losses(self, ctx: StepContext, src: DomainOutput, tgt: DomainOutput) -> dict[str, Tensor]:
        return _merge(term.discriminator(ctx, src, tgt) for term in self.terms)


def _merge(parts) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for part in parts:
        clash = out.keys() & part.keys()
        assert not clash, f"two terms report the same loss name(s) {sorted(clash)}"
        out.update(part)
    return out
