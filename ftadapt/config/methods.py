"""The training methods, each named once here: the loss terms it is made of, in the order the loop calls them, and the
architecture of its reference code.

The config's ``method`` key, the command line's METHOD choices and ``ftadapt.methods.create_method`` all read
:data:`METHOD_TERMS`; ``ftadapt.methods`` maps each term name to the term that computes it. Torch-free, so the command
line lists the methods without importing torch.
"""
from __future__ import annotations

METHOD_TERMS: dict[str, tuple[str, ...]] = {
    "source-only": ("segmentation",),
    "norm-only": ("segmentation", "feature-norm"),
    "clan": ("segmentation", "clan-adversarial", "weight-discrepancy"),
    "clan-norm": ("segmentation", "feature-norm", "clan-adversarial", "weight-discrepancy"),
    "maxsquare": ("segmentation", "maxsquare"),
    "maxsquare-norm": ("segmentation", "feature-norm", "maxsquare"),
}
METHODS = tuple(METHOD_TERMS)

# The architecture of each method's reference code, used when the model is not given: MaxSquare's released models are
# multi-level with the reduced ASPP; CLAN, the paper and the others use two full-ASPP heads on layer4.
DEFAULT_MODELS = {"maxsquare": "deeplabv2-r101-multi-reduced", "maxsquare-norm": "deeplabv2-r101-multi-reduced"}

__all__ = ["METHOD_TERMS", "METHODS", "DEFAULT_MODELS"]
