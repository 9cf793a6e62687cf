"""Investigations: measurements that informed a design decision once and can be repeated, apart from the user
benchmarks (``ftadapt bench``). Their command line is ``python -m ftadapt.commands.investigate NAME``.

- ``eval_speed``: the prediction-folder evaluation on Cityscapes-size pairs against a naive loop;
- ``export_speed``: export time and size, ONNX Runtime against PyTorch, in-graph against PIL pre-processing;
- ``loader_speed``: one loader worker's cost per training sample, and the workers a training speed needs.
"""
