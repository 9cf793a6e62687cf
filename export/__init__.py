"""ftadapt.export: ensembles and the fused ONNX export (needs the ``export`` extra)."""
