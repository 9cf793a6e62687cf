"""What the demo runs: :class:`DemoSettings` (the data, the training runs, the pictures), the methods it trains, the
ensemble it exports and the files it owns in its folder."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEMO_METHODS = ("source-only", "norm-only", "clan-norm")
DEMO_STEPS = 300
ENSEMBLE = ("norm-only", "clan-norm")  # members, weight 0.5 each
# Everything the demo writes in its folder (``--overwrite`` removes these and nothing else).
DEMO_ENTRIES = ("data", "runs", "results.json", "ensemble-fp32.onnx", "ensemble-fp16.onnx", "deployed-predictions",
                "figures", "bench-accuracy", "table1.md", "table1.csv", "report.md")
FIGURES = "figures"
GRID_FILE, CURVES_FILE = "predictions.png", "training_curves.png"
# The scatter plots show the paper's three classes (its Figure 3: roads, buildings, signs) and three more common
# ones; the numbers cover all 19.
PLOT_CLASSES = ("road", "building", "traffic sign", "vegetation", "car", "person")
GRID_FRAMES = 4
DEPLOYED = "deployed FP16"


@dataclass(frozen=True)
class DemoSettings:
    """One demo: the seed and training steps, the synthetic set (images per split, sizes W×H, also the training and
    evaluation sizes), how often the runs log, and the feature analysis (images per domain, points per class and
    domain: t-SNE's cost grows with them). A rerun continues a demo only with the same settings."""

    seed: int = 0
    steps: int = DEMO_STEPS
    n_source: int = 64
    n_target_train: int = 32
    n_target_val: int = 16
    source_size: tuple[int, int] = (320, 180)
    target_size: tuple[int, int] = (256, 128)
    log_every: int = 10
    analysis_images: int = 16
    analysis_points: int = 60

    def train_overrides(self) -> dict[str, Any]:
        """The config keys of every run. The tiny model starts from random weights (no ImageNet init), so it needs a
        larger lr than the paper's 2.5e-4 fine-tuning rate; everything else keeps the paper's defaults."""
        return {"model": "tiny", "device": "cpu", "optim.lr": 1e-2, "optim.d_lr": 1e-4, "checkpoint_every": 0,
                "log_every": self.log_every, "steps": self.steps, "seed": self.seed,
                "data.source_size": self.source_size, "data.target_size": self.target_size,
                "eval.size": self.target_size, "data.num_workers": 0, "tensorboard": False, "check_data": False}

    def record(self) -> dict[str, Any]:
        """What ``demo.json`` records (with the ftadapt version): a rerun with other settings is refused."""
        from ftadapt.version import __version__

        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        return {**fields, "ftadapt": __version__}


def data_root(out: Path, data: dict, kind: str) -> Path:
    """Where the data stage put the ``kind`` ("gta5" or "cityscapes") dataset of the demo in ``out``."""
    return out / data[kind]


def members(out: Path) -> list[str]:
    """The ensemble's members as ``DIR:WEIGHT`` specs: the demo's runs of ``ENSEMBLE``, 0.5 each."""
    return [f"{out / 'runs' / m}:0.5" for m in ENSEMBLE]
