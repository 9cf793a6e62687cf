"""CLAN's category-level adversarial term and weight-discrepancy term (methods.md §3.3, §3.4, §4).

One discriminator D reads softmax(p1 + p2) at full resolution; its 1/32 output is upsampled back (bilinear,
align_corners=True) so that CLAN's per-pixel weight map M = 1 − cos(softmax p1, softmax p2) can scale the BCE.
Domain labels: source 0, target 1; G's adversarial term asks D to say "source" (0) on the target.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ftadapt.config import LossConfig
from ftadapt.losses import clan_weight_map, weight_discrepancy_loss, weighted_bce_with_logits
from ftadapt.methods.base import DomainOutput, StepContext, Term, require_heads
from ftadapt.models.deeplab import upsample_logits
from ftadapt.training.schedules import linear_damping

SOURCE, TARGET = 0.0, 1.0


def _adv_damping(cfg: LossConfig, ctx: StepContext) -> float:
    return linear_damping(ctx.step, ctx.steps) if cfg.adv_damping else 1.0


def _discriminate(ctx: StepContext, prob: Tensor) -> Tensor:
    """D's logits upsampled to the prediction's size. Shape: N×C×H×W → N×1×H×W."""
    return upsample_logits(ctx.discriminator(prob), prob.shape[-2:])


class ClanAdversarial(Term):
    """G: λ_adv · damping · WBCE(D(softmax(p1_t + p2_t)), source, M) — M not detached, as in CLAN.
    D: BCE(D(source prediction), source) + WBCE(D(target prediction), target, M), all inputs detached; no ½, no damping.
    G's term is plain BCE before step ``adv_preheat_steps``, D's target term before ``d_preheat_steps`` (CLAN's code:
    both 5,000; the paper's code: G weighted from the first step, D after its 5,000-step warm-up)."""

    name = "clan-adversarial"
    uses_target = True
    uses_discriminator = True

    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg

    def check_model(self, heads: str) -> None:
        require_heads("the CLAN adversarial term", heads, "clan", "deeplabv2-r101")

    def _wbce(self, d_logits: Tensor, label: float, weight_map: Tensor | None, plain: bool) -> Tensor:
        return weighted_bce_with_logits(d_logits, label, None if plain else weight_map, self.cfg.epsilon,
                                        self.cfg.lambda_local)

    def target(self, ctx: StepContext, out: DomainOutput) -> dict[str, Tensor]:
        p1, p2 = out.logits
        weight_map = clan_weight_map(p1, p2)
        prob = torch.softmax(p1 + p2, dim=1)
        ctx.cache["clan_target"] = (prob.detach(), weight_map.detach())
        loss = self._wbce(_discriminate(ctx, prob), SOURCE, weight_map, ctx.step < self.cfg.adv_preheat_steps)
        return {"adv": self.cfg.lambda_adv * _adv_damping(self.cfg, ctx) * loss}

    def discriminator(self, ctx: StepContext, src: DomainOutput, tgt: DomainOutput) -> dict[str, Tensor]:
        prob_s = torch.softmax(src.logits[0].detach() + src.logits[1].detach(), dim=1)
        prob_t, weight_map = ctx.cache["clan_target"]
        return {"d_src": weighted_bce_with_logits(_discriminate(ctx, prob_s), SOURCE),
                "d_tgt": self._wbce(_discriminate(ctx, prob_t), TARGET, weight_map,
                                    ctx.step < self.cfg.d_preheat_steps)}


class WeightDiscrepancy(Term):
    """CLAN's push of the two heads apart: (cos(W5, W6) + 1) · λ_weight · damping · 2 (the factor 2 is CLAN's)."""

    name = "weight-discrepancy"

    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg

    def check_model(self, heads: str) -> None:
        require_heads("the weight-discrepancy term", heads, "clan", "deeplabv2-r101")

    def target(self, ctx: StepContext, out: DomainOutput) -> dict[str, Tensor]:
        loss = weight_discrepancy_loss(ctx.model.layer5, ctx.model.layer6)
        return {"weight": 2.0 * self.cfg.lambda_weight * _adv_damping(self.cfg, ctx) * loss}
