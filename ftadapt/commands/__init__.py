"""The command layer of ``ftadapt`` (``cli.py`` is the group over it): one module per command family.

- :mod:`~ftadapt.commands.common` — option types (sizes W×H), ``--json`` and the one way results are emitted
- :mod:`~ftadapt.commands.data` — ``data synth``, ``data check``
- :mod:`~ftadapt.commands.train` — ``train``, ``convert``
- :mod:`~ftadapt.commands.evaluate` — ``eval``
- :mod:`~ftadapt.commands.report` — ``report``: results as the paper's Table 1
- :mod:`~ftadapt.commands.export` — ``export``, ``inspect``
- :mod:`~ftadapt.commands.deploy` — ``build-engine``, ``predict``
- :mod:`~ftadapt.commands.bench` — ``bench <name>``, every benchmark
- :mod:`~ftadapt.commands.demo` — ``demo``: every stage on synthetic data

Commands parse, call one library function and print; they import torch, onnx and the runtime only inside.
"""
