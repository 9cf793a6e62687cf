"""The six training methods, each a composition of loss terms (``base.Term``) that the training loop calls."""
from __future__ import annotations

from ftadapt.config import METHODS, LossConfig
from ftadapt.errors import UsageError
from ftadapt.methods.base import DomainOutput, Method, StepContext, Term
from ftadapt.methods.clan import ClanAdversarial, WeightDiscrepancy
from ftadapt.methods.maxsquare import MaxSquare
from ftadapt.methods.segmentation import FeatureNorm, Segmentation

_TERMS = {
    "source-only": (Segmentation,),
    "norm-only": (Segmentation, FeatureNorm),
    "clan": (Segmentation, ClanAdversarial, WeightDiscrepancy),
    "clan-norm": (Segmentation, FeatureNorm, ClanAdversarial, WeightDiscrepancy),
    "maxsquare": (Segmentation, MaxSquare),
    "maxsquare-norm": (Segmentation, FeatureNorm, MaxSquare),
}
assert tuple(_TERMS) == METHODS


def create_method(name: str, loss: LossConfig) -> Method:
    """The method ``name`` with its terms weighted by ``loss``."""
    if name not in _TERMS:
        raise UsageError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return Method(name, tuple(term(loss) for term in _TERMS[name]))


__all__ = ["create_method", "Method", "Term", "StepContext", "DomainOutput", "METHODS"]
