"""Evaluation: one ``evaluate(predictors, split, protocol)`` for every kind of predictor (DESIGN.md §5).

- :mod:`~ftadapt.evaluation.metrics` — ``ConfusionMatrix``, ``EvalResult`` (mIoU19/16/13), numpy only
- :mod:`~ftadapt.evaluation.protocols` — ``ADAPTSEGNET`` (default) and ``MAXSQUARE``, frozen dataclasses
- :mod:`~ftadapt.evaluation.frames` — ``LabelledSplit`` (a Cityscapes root or a ``gtFine/<split>`` folder) and the
  per-frame ``Sample`` predictors see
- :mod:`~ftadapt.evaluation.evaluate` — ``evaluate`` (optionally against a reference predictor, pixel by pixel) and
  the ``Predictor`` interface
- predictors: :mod:`~ftadapt.evaluation.folder` (``PredictionFolder``: trainId PNGs; ``SavingPredictions``),
  :mod:`~ftadapt.evaluation.pytorch` (``ModelPredictor``, ``EnsemblePredictor``, ``GraphPredictor``: the exported
  graph's own module; torch),
  :mod:`~ftadapt.evaluation.onnx` (``OnnxPredictor``: an exported file through ``ftadapt.runtime``)
- :mod:`~ftadapt.evaluation.tables` — tables for people

This package and its numpy-only modules import no torch: scoring prediction PNGs needs only the base install.
"""
from ftadapt.evaluation.evaluate import Predictor, evaluate
from ftadapt.evaluation.frames import LabelledSplit
from ftadapt.evaluation.metrics import ConfusionMatrix, EvalResult
from ftadapt.evaluation.protocols import ADAPTSEGNET, MAXSQUARE, PROTOCOLS, Protocol, get_protocol

__all__ = ["evaluate", "Predictor", "LabelledSplit", "ConfusionMatrix", "EvalResult", "Protocol", "ADAPTSEGNET",
           "MAXSQUARE", "PROTOCOLS", "get_protocol"]
