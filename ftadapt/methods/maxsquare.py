"""MaxSquare's target term (methods.md §3.7): the plain or image-wise-weighted max-square loss on the target
prediction, optionally with the multi-level self-produced guidance of the auxiliary head. No discriminator."""
from __future__ import annotations

from torch import Tensor

from ftadapt.config import LossConfig
from ftadapt.losses import iw_maxsquare_loss, maxsquare_loss, multilevel_self_guidance_loss
from ftadapt.methods.base import DomainOutput, StepContext, Term, require_heads
from ftadapt.models.deeplab import combine_heads


class MaxSquare(Term):
    """λ_target · MaxSquare(prediction) with the head rule's prediction (multi: main head; clan: p1 + p2).

    ``iw_ratio`` > 0 uses the image-wise class-balanced form; ``self_guidance`` adds
    aux_weight · λ_target · CE(aux, pseudo labels of both heads above ``guidance_threshold``) (multi heads only).
    """

    name = "maxsquare"
    uses_target = True

    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg

    def check_model(self, heads: str) -> None:
        if self.cfg.self_guidance:
            require_heads("MaxSquare's self-guidance (loss.self_guidance)", heads, "multi",
                          "deeplabv2-r101-multi-reduced")

    def coefficients(self, step: int, steps: int) -> dict[str, float]:
        weights = {"maxsquare": self.cfg.lambda_target}
        if self.cfg.self_guidance:
            weights["guidance"] = self.cfg.aux_weight * self.cfg.lambda_target
        return weights

    def target(self, ctx: StepContext, out: DomainOutput) -> dict[str, Tensor]:
        weights = self.coefficients(ctx.step, ctx.steps)
        pred = combine_heads(out.logits, ctx.head_rule)
        loss = iw_maxsquare_loss(pred, self.cfg.iw_ratio) if self.cfg.iw_ratio > 0 else maxsquare_loss(pred)
        losses = {"maxsquare": weights["maxsquare"] * loss}
        if self.cfg.self_guidance:
            aux, main = out.logits
            guidance = multilevel_self_guidance_loss(main, aux, self.cfg.guidance_threshold)
            losses["guidance"] = weights["guidance"] * guidance
        return losses
