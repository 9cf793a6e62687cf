"""ftadapt.export: the fused ONNX export of an ensemble (``ftadapt.ensemble``; needs the ``export`` extra).

- :mod:`~ftadapt.export.onnx_graph` — ``SegmentationGraph``: pre-processing, members, fusion, upsample, argmax
- :mod:`~ftadapt.export.fp16` — BN folding and half members for the FP16 graph
- :mod:`~ftadapt.export.onnx_export` — ``export_onnx(ensemble, "model.onnx", precision="fp16")``
- :mod:`~ftadapt.export.verify` — checker + ONNX Runtime parity against the PyTorch module
- :mod:`~ftadapt.export.rebuild` — the PyTorch module of an exported file, rebuilt from its members' checkpoints
- :mod:`~ftadapt.export.metadata` — ``metadata_props`` on the file and ``describe`` (``ftadapt inspect``); the schema
  itself is the torch-free :mod:`ftadapt.artifact`, shared with the runtime
"""
