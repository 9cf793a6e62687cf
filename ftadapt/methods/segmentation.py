"""The source segmentation loss (every method) and the paper's step-wise feature-norm term (the ``-norm`` methods)."""
from __future__ import annotations

from torch import Tensor

from ftadapt.config import LossConfig
from ftadapt.losses import cross_entropy, feature_norm_loss, focal_loss
from ftadapt.methods.base import DomainOutput, StepContext, Term
from ftadapt.training.schedules import damping_horizon, norm_damping


class Segmentation(Term):
    """Supervised loss on the labelled source, per head layout (methods.md §3.1).

    clan: seg(p1) + seg(p2) (both heads, weight 1); multi: seg(main) + aux_weight·seg(aux); single: seg(p).
    seg is cross-entropy (paper text) or focal loss γ=2 (CLAN / FTA code), ignore 255.
    """

    name = "segmentation"

    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg

    def _seg(self, logits: Tensor, label: Tensor) -> Tensor:
        if self.cfg.seg == "focal":
            return focal_loss(logits, label, gamma=self.cfg.focal_gamma)
        return cross_entropy(logits, label)

    def coefficients(self, step: int, steps: int) -> dict[str, float]:
        return {"seg": 1.0}

    def source(self, ctx: StepContext, out: DomainOutput) -> dict[str, Tensor]:
        if ctx.heads == "multi":
            aux, main = out.logits
            return {"seg": self._seg(main, out.label) + self.cfg.aux_weight * self._seg(aux, out.label)}
        return {"seg": sum(self._seg(logits, out.label) for logits in out.logits)}


class FeatureNorm(Term):
    """The paper's step-wise L2 feature-norm loss on the layer4 features of both domains (methods.md §3.6):
    λ_norm · damping · mean_p (‖f_p‖ − (‖f_p‖.detach() + Δr))², damping = 1 − k·i/N (k = ``norm_damping``, 0 = off;
    N = ``damping_steps``, or the run's steps)."""

    name = "feature-norm"
    uses_target = True

    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg

    def coefficients(self, step: int, steps: int) -> dict[str, float]:
        horizon = damping_horizon(self.cfg.damping_steps, steps)
        weight = self.cfg.lambda_norm * norm_damping(step, horizon, factor=self.cfg.norm_damping)
        return {"norm_src": weight, "norm_tgt": weight}

    def source(self, ctx: StepContext, out: DomainOutput) -> dict[str, Tensor]:
        return {"norm_src": self.coefficients(ctx.step, ctx.steps)["norm_src"]
                * feature_norm_loss(out.features, self.cfg.delta_r)}

    def target(self, ctx: StepContext, out: DomainOutput) -> dict[str, Tensor]:
        return {"norm_tgt": self.coefficients(ctx.step, ctx.steps)["norm_tgt"]
                * feature_norm_loss(out.features, self.cfg.delta_r)}
