"""The evaluation protocols (DESIGN.md §5, methods.md §6): how frames are shown to a predictor and scored.

Both protocols accumulate one 19×19 confusion matrix over the whole split (rows ground truth, columns prediction),
count only ground-truth pixels with trainIds 0–18, count a prediction of 255 as wrong, and feed models the image
resized to ``input_size`` (W, H; 1024×512 for Cityscapes) with PIL BICUBIC. They differ in where they compare:

- ``adaptsegnet`` (the default, the papers' tables): logits upsampled bilinearly (align_corners=True) to the ground
  truth's own resolution (2048×1024 for Cityscapes).
- ``maxsquare``: MaxSquare's own evaluation — the ground truth downsampled (NEAREST) to the input size and the
  prediction compared there. The smaller ground truth loses thin and small structures, which raises IoU, so its
  numbers are not comparable with the AdaptSegNet protocol's and are always labelled.

They also differ in where flip TTA takes each view's softmax (``flip_softmax``): ``adaptsegnet`` at stride 8, then
upsamples the mirror-averaged probabilities (FeatureToAdapt's evaluate.py); ``maxsquare`` after upsampling the
logits to the input size (MaxSquare's model upsamples inside, its tools/evaluate.py then averages the softmaxes).
A model predictor follows its protocol; an ensemble always fuses at stride 8 (as the FeatureToAdapt code).

What a predictor adds (head rule, flip, ensemble members, the checkpoint) is recorded by the predictor itself; a
result's ``protocol`` dict holds both.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ftadapt.errors import UsageError
from ftadapt.protocol import CITYSCAPES_SIZE

FLIP_SOFTMAX_AT_STRIDE_8 = "at stride 8"
FLIP_SOFTMAX_AFTER_UPSAMPLING = "after upsampling"


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol. ``gt_resolution`` is "full" (the label file's own) or "input" (``input_size``);
    ``flip_softmax`` says where flip TTA takes each view's softmax: "at stride 8" or "after upsampling" (the logits,
    to the input size)."""

    name: str
    gt_resolution: str
    input_size: tuple[int, int] = CITYSCAPES_SIZE
    flip_softmax: str = FLIP_SOFTMAX_AT_STRIDE_8

    def at(self, input_size: tuple[int, int]) -> Protocol:
        """The same protocol at another input size (W, H)."""
        w, h = (int(v) for v in input_size)
        if w < 1 or h < 1:
            raise UsageError(f"input size {input_size!r}: expected two positive integers (W, H)")
        return dataclasses.replace(self, input_size=(w, h))

    def describe(self, **details: Any) -> dict[str, Any]:
        """The ``protocol`` record of a result: this protocol, then ``details`` (the predictor's, the split's). With
        flip (``details["flip"]``) it records ``flip_softmax``, unless the predictor states its own."""
        flip = {"flip_softmax": self.flip_softmax} if details.get("flip") else {}
        return {"name": self.name, "accumulation": "dataset", "gt_resolution": self.gt_resolution,
                "prediction_255": "counted as wrong", "input_size": list(self.input_size), **flip, **details}


ADAPTSEGNET = Protocol("adaptsegnet", "full")
MAXSQUARE = Protocol("maxsquare", "input", flip_softmax=FLIP_SOFTMAX_AFTER_UPSAMPLING)
PROTOCOLS = {p.name: p for p in (ADAPTSEGNET, MAXSQUARE)}


def get_protocol(name: str, input_size: tuple[int, int] | None = None) -> Protocol:
    """The protocol called ``name`` (at ``input_size`` when given), or a UsageError listing the known ones."""
    if name not in PROTOCOLS:
        raise UsageError(f"protocol {name!r}: expected one of {', '.join(PROTOCOLS)}")
    protocol = PROTOCOLS[name]
    return protocol if input_size is None else protocol.at(input_size)


__all__ = ["Protocol", "ADAPTSEGNET", "MAXSQUARE", "PROTOCOLS", "get_protocol", "FLIP_SOFTMAX_AT_STRIDE_8",
           "FLIP_SOFTMAX_AFTER_UPSAMPLING"]
