"""The demo: every stage that exists, on the built-in synthetic data, on a CPU, in a few minutes, ending in one report
a person opens to see what happened (``OUT/report.md``). ``ftadapt demo`` is its command.

Stages: (1) write the synthetic two-domain dataset and run the dataset doctor on it; (2) train the tiny DeepLab-v2
with ``source-only``, ``norm-only`` and ``clan-norm`` and compare their per-class IoU on the synthetic target val set;
(3) evaluate the 0.5/0.5 ensemble of the two adapted runs beside its members, with probability fusion and with the
paper's flip fusion, and export the first as one ONNX graph in FP32 and FP16, each verified against PyTorch; (4) run
the FP16 graph through ``ftadapt.runtime.Segmenter`` on the val frames, write colour overlays, report backend,
providers and latency, and score the deployed predictions with the same evaluator to show the deployed mIoU next to
PyTorch's; (5) the feature space of the three runs (the paper's Figures 1 and 3), a prediction grid (Figures 4 and
5) and the training curves; (6) ``ftadapt bench accuracy`` of the FP16 graph with the PyTorch and ONNX Runtime
backends (the parity gate, per-class deltas, ``bench-accuracy/`` with its own report and figures) and its results as
the paper's Table 1 (``ftadapt report``); (7) ``report.md`` with all of it.

The package: ``settings`` (what runs), ``state`` (the resumable folder, stopping as a whole), ``stages`` (1–4, 6),
``figures`` (5), ``report`` (7), ``run`` (``run_demo``, the stages in order). Nothing is imported here, so that
``ftadapt --help`` (which reads the demo's settings) loads no stage.
"""
