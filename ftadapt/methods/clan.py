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
from ftadapt.training.schedules import damping_horizon, linear_damping

SOURCE, TARGET = 0.0, 1.0


def _adv_damping(cfg: LossConfig, step: int, steps: int) -> float:
    """1 − i/N over the damping horizon N (``loss.damping_steps``), or 1 with ``loss.adv_damping`` off."""
    return linear_damping(step, damping_horizon(cfg.damping_steps, steps)) if cfg.adv_damping else 1.0


def _discriminate(ctx: StepContext, prob: Tensor) -> Tensor:
    """D's logits upsampled to the prediction's size. Shape: N×C×H×W → N×1×H×W."""
    return upsample_logits(ctx.discriminator(prob), prob.shape[-2:])


class ClanAdversarial(Term):
    """G: λ_adv · damping · WBCE(D(softmax(p1_t + p2_t)), source, M) — M not detached, as in CLAN.
    D: BCE(D(source prediction), source) + WBCE(D(target prediction), target, M), all inputs detached; no ½, no damping.
    G's term is plain BCE before step ``adv_preheat_steps``, D's target term before ``d_preheat_steps`` (CLAN's code:
    both 5,000; the paper's code: G weighted from the first step, D after its 7,500-step preheat)."""

    name = "clan-adversarial"
    uses_target = True
    uses_discriminator = True

    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg

    def check_model(self, heads: str) -> None:
        require_heads("the CLAN adversarial term", heads, "clan", "deeplabv2-r101")

    def coefficients(self, step: int, steps: int) -> dict[str, float]:
        return {"adv": self.cfg.lambda_adv * _adv_damping(self.cfg, step, steps), "d_src": 1.0, "d_tgt": 1.0}

    def plain(self, step: int) -> frozenset[str]:
        return frozenset(name for name, until in (("adv", self.cfg.adv_preheat_steps),
                                                  ("d_tgt", self.cfg.d_preheat_steps)) if step < until)

    def _wbce(self, d_logits: Tensor, label: float, weight_map: Tensor | None, plain: bool) -> Tensor:
        return weighted_bce_with_logits(d_logits, label, None if plain else weight_map, self.cfg.epsilon,
                                        self.cfg.lambda_local)

    def target(self, ctx: StepContext, out: DomainOutput) -> dict[str, Tensor]:
        p1, p2 = out.logits
        weight_map = clan_weight_map(p1, p2)
        prob = torch.softmax(p1 + p2, dim=1)
        ctx.cache["clan_target"] = (prob.detach(), weight_map.detach())
        loss = self._wbce(_discriminate(ctx, prob), SOURCE, weight_map, "adv" in self.plain(ctx.step))
        return {"adv": self.coefficients(ctx.step, ctx.steps)["adv"] * loss}

    def discriminator(self, ctx: StepContext, src: DomainOutput, tgt: DomainOutput) -> dict[str, Tensor]:
        prob_s = torch.softmax(src.logits[0].detach() + src.logits[1].detach(), dim=1)
        prob_t, weight_map = ctx.cache["clan_target"]
        weights = self.coefficients(ctx.step, ctx.steps)
        return {"d_src": weights["d_src"] * weighted_bce_with_logits(_discriminate(ctx, prob_s), SOURCE),
                "d_tgt": weights["d_tgt"] * self._wbce(_discriminate(ctx, prob_t), TARGET, weight_map,
                                                       "d_tgt" in self.plain(ctx.step))}


class WeightDiscrepancy(Term):
    """CLAN's push of the two heads apart: (cos(W5, W6) + 1) · λ_weight · damping · 2 (the factor 2 is CLAN's)."""

    name = "weight-discrepancy"

    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg

    def check_model(self, heads: str) -> None:
        require_heads("the weight-discrepancy term", heads, "clan", "deeplabv2-r101")

    def coefficients(self, step: int, steps: int) -> dict[str, float]:
        return {"weight": 2.0 * self.cfg.lambda_weight * _adv_damping(self.cfg, step, steps)}

    def target(self, ctx: StepContext, out: DomainOutput) -> dict[str, Tensor]:
        loss = weight_discrepancy_loss(ctx.model.layer5, ctx.model.layer6)
        return {"weight": self.coefficients(ctx.step, ctx.steps)["weight"] * loss}
