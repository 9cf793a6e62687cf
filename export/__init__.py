"""ftadapt.export: ensembles and the fused ONNX export (needs the ``export`` extra).

- :mod:`~ftadapt.export.ensemble` — ``load_ensemble(["runs/norm-only:0.7", "converted/clan:0.3"])`` → ``Ensemble``
- :mod:`~ftadapt.export.ensemble_eval` — ``evaluate_ensemble``: members and the ensemble on the eval protocol
- :mod:`~ftadapt.export.graph` — ``SegmentationGraph``: pre-processing, members, fusion, upsample, argmax
- :mod:`~ftadapt.export.fp16` — BN folding and half members for the FP16 graph
- :mod:`~ftadapt.export.onnx_export` — ``export_onnx(ensemble, "model.onnx", precision="fp16")``
- :mod:`~ftadapt.export.verify` — checker + ONNX Runtime parity against the PyTorch module
- :mod:`~ftadapt.export.metadata` — ``metadata_props`` on the file and ``describe`` (``ftadapt inspect``); the schema
  itself is the torch-free :mod:`ftadapt.artifact`, shared with the runtime
"""
