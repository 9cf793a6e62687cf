"""``run_demo``: every stage in order, in one resumable folder (``ftadapt.demo.state``)."""
from __future__ import annotations

from pathlib import Path

from click import echo

from ftadapt.demo.figures import figures_stage
from ftadapt.demo.report import report_stage
from ftadapt.demo.settings import DEMO_ENTRIES, DEMO_METHODS, ENSEMBLE, DemoSettings
from ftadapt.demo.stages import bench_stage, data_stage, deploy_stage, ensemble_stage, train_stage
from ftadapt.demo.state import DemoState, DemoStopped, stop_on_signals


def run_demo(out: str | Path, settings: DemoSettings | None = None, *, overwrite: bool = False) -> dict:
    """Run (or continue) the demo of ``settings`` (default: ``DemoSettings()``) in ``out`` and return every stage's
    record (also in ``out/demo.json``); raises ``DemoStopped`` when a signal stops it."""
    settings = settings or DemoSettings()
    out, steps = Path(out), settings.steps
    state = DemoState.open(out, settings.record(), entries=DEMO_ENTRIES, overwrite=overwrite)
    try:
        with stop_on_signals():
            data = state.run("data", "1. synthetic data + dataset doctor", lambda: data_stage(out, settings))
            train = state.run("train", f"2. train the tiny DeepLab-v2 with {', '.join(DEMO_METHODS)} ({steps} steps "
                              "each) and evaluate", lambda: train_stage(out, data, settings))
            ensemble = state.run("ensemble", f"3. ensemble of the adapted runs (0.5 {ENSEMBLE[0]} + 0.5 "
                                 f"{ENSEMBLE[1]}, with and without flip): evaluate, export FP32 + FP16",
                                 lambda: ensemble_stage(out, data, settings))
            state.run("deploy", "4. deploy the FP16 graph with ftadapt.runtime.Segmenter and score its predictions",
                      lambda: deploy_stage(out, data, ensemble))
            state.run("analysis", "5. feature space, prediction grid and training curves",
                      lambda: figures_stage(out, data, train, ensemble, settings))
            state.run("bench", "6. ftadapt bench accuracy of the FP16 graph (ONNX Runtime against its PyTorch "
                      "module), ftadapt report", lambda: bench_stage(out, data, ensemble))
            state.run("report", "7. report", lambda: report_stage(out, state.settings, state.stages))
    except DemoStopped as exc:
        raise state.stopped(str(exc) or "stopped") from None
    except KeyboardInterrupt:
        raise state.stopped("interrupted (SIGINT)") from None
    echo(f"\ndemo finished: everything is in {out}\nreport: {out / 'report.md'}")
    return state.stages
