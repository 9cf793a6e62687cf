"""The six training methods, each a composition of loss terms (``base.Term``) that the training loop calls. Which terms
a method has is declared once, in the torch-free catalogue ``ftadapt.config.methods``; here each term name gets the
term that computes it."""
from __future__ import annotations

from ftadapt.config import LossConfig
from ftadapt.config.methods import METHOD_TERMS
from ftadapt.errors import UsageError
from ftadapt.methods.base import DomainOutput, Method, StepContext, Term
from ftadapt.methods.clan import ClanAdversarial, WeightDiscrepancy
from ftadapt.methods.maxsquare import MaxSquare
from ftadapt.methods.segmentation import FeatureNorm, Segmentation

TERMS: dict[str, type[Term]] = {term.name: term for term in (Segmentation, FeatureNorm, ClanAdversarial,
                                                              WeightDiscrepancy, MaxSquare)}


def create_method(name: str, loss: LossConfig) -> Method:
    """The method ``name`` with its terms weighted by ``loss``."""
    if name not in METHOD_TERMS:
        raise UsageError(f"unknown method {name!r}; valid methods: {', '.join(METHOD_TERMS)}")
    return Method(name, tuple(TERMS[term](loss) for term in METHOD_TERMS[name]))


__all__ = ["create_method", "Method", "Term", "StepContext", "DomainOutput", "TERMS"]
