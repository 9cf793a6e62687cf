"""``ftadapt build-engine`` and ``ftadapt predict``: an exported file on the runtime (``ftadapt.runtime``).

Frame-size options are W×H like every size of the CLI and of the runtime (``--max-frame 2048x1024`` is
``Segmenter(max_frame=(2048, 1024))``). The older ``--max-size``/``--min-size`` took H×W; they still work for one
release, with a warning. ``--device`` is the one device option (``ftadapt.devices``), auto by default.
"""
from __future__ import annotations

from pathlib import Path

import click

from ftadapt.commands.common import (
    SIZE,
    check_json,
    device_option,
    echo,
    emit,
    json_option,
    legacy_hw,
    overwrite_option,
)
from ftadapt.devices import Device


def _frame_options(func):
    """``--max-frame``/``--min-frame`` (W×H) and their deprecated H×W spellings ``--max-size``/``--min-size``."""
    options = [
        click.option("--max-frame", type=SIZE, default=None, help="Largest frame W×H [TensorRT: 2048x1024]."),
        click.option("--min-frame", type=SIZE, default=None,
                     help="Smallest frame W×H [1x1]; equal to --max-frame with --max-batch 1 builds a static engine."),
        click.option("--max-size", "legacy_max", callback=legacy_hw, metavar="HxW", default=None, hidden=True),
        click.option("--min-size", "legacy_min", callback=legacy_hw, metavar="HxW", default=None, hidden=True),
    ]
    for option in options:
        func = option(func)
    return func


def _frame(frame: tuple[int, int] | None, legacy: tuple[int, int] | None) -> tuple[int, int] | None:
    """The W×H frame option, or its deprecated spelling (already turned into W×H); not both."""
    if frame is not None and legacy is not None:
        raise click.UsageError("give --max-frame/--min-frame (W×H) only; --max-size/--min-size are their deprecated "
                               "H×W spellings")
    return frame or legacy


@click.command("build-engine")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Engine cache folder [$FTADAPT_ENGINE_CACHE or ~/.cache/ftadapt/engines].")
@click.option("--max-batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Largest batch per engine call.")
@_frame_options
@click.option("--opt-frame", type=SIZE, default=None, help="Frame W×H TensorRT tunes for [--max-frame].")
@click.option("--opt-batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Batch TensorRT tunes for (≤ --max-batch).")
@click.option("--probs", "with_probs", is_flag=True, help="Also compute the probabilities (a model exported with "
              "--probs; the Segmenter then needs with_probs=True to use this engine).")
@device_option(" (TensorRT needs a CUDA device)")
@click.option("--workspace-mb", type=click.IntRange(min=64), default=None, help="Builder workspace limit [4096].")
@json_option("the engine report")
@overwrite_option()
def build_engine(model: Path, cache: Path | None, max_batch: int, max_frame, min_frame, legacy_max, legacy_min,
                 opt_frame, opt_batch: int, with_probs: bool, device: Device, workspace_mb: int | None,
                 json_out: str | None, overwrite: bool) -> None:
    """Build the TensorRT engine of an exported MODEL for this GPU into the engine cache (or find it there).

    \b
    ftadapt build-engine ens.onnx --max-frame 2048x1024 --min-frame 2048x1024   # static: one camera resolution
    Needs the `trt` extra (TensorRT ≥ 10.12, pycuda) and an NVIDIA GPU. The Segmenter then loads the cached engine
    when created with the same max_batch, max_frame, min_frame, with_probs and TensorRTOptions(opt_batch, opt_frame).
    """
    from ftadapt.machine import check_memory
    from ftadapt.runtime import Segmenter, TensorRTOptions

    check_memory({"--max-frame": _frame(max_frame, legacy_max)}, batch=max_batch)
    check_memory({"--opt-frame": opt_frame}, batch=opt_batch)
    check_json(json_out, overwrite, [model])
    options = TensorRTOptions(engine_cache=cache, workspace_mb=workspace_mb, opt_batch=opt_batch, opt_frame=opt_frame)
    with Segmenter(model, backend="tensorrt", device=device, max_batch=max_batch,
                   max_frame=_frame(max_frame, legacy_max), min_frame=_frame(min_frame, legacy_min),
                   with_probs=with_probs, tensorrt=options) as seg:
        info = seg.describe()
    engine = info["engine"]
    (lw, lh), (hw, hh) = info["min_frame"], info["max_frame"]
    on, oh, ow, _ = info["profile"]["opt"]
    rows = {"engine": engine["path"], "built": f"yes, in {engine['build_seconds']} s" if engine["built"] else
            "no (found in the cache)", "half layers": f"{engine['half_layers']} of {engine['layers']}",
            "precision": info["precision"], "tensorrt": f"{info['tensorrt']} ({info['tensorrt_cuda']})",
            "gpu": f"{info['gpu']} (sm {info['compute_capability']})",
            "profile": f"batch ≤ {info['max_batch']}, frames {lw}x{lh} … {hw}x{hh} (W×H), tuned for {on} × "
                       f"{ow}x{oh}", "outputs": "labels, probs" if info["with_probs"] else "labels"}
    for key, value in rows.items():
        echo(f"{key:>12}  {value}", json_out)
    for note in info["notes"]:
        click.echo(f"note: {note}", err=True)
    emit(info, json_out, overwrite=overwrite)


@click.command("predict")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .onnx file written by `ftadapt export`.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for <name>.png label maps (class ids) and <name>_color.png overlays (not inside an input).")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto",
              show_default=True, help="auto: TensorRT if usable, else ONNX Runtime CUDA, else CPU.")
@device_option()
@click.option("--engine-cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="TensorRT engine cache folder.")
@click.option("--max-frame", type=SIZE, default=None,
              help="Largest frame W×H [TensorRT: 2048x1024; ONNX Runtime: 4096x4096, about 1.8 GB of memory].")
@click.option("--max-size", "legacy_max", callback=legacy_hw, metavar="HxW", default=None, hidden=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Opacity of the colours in the overlays.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Videos: segment every N-th frame.")
@json_option("the summary")
@overwrite_option("earlier outputs of the same names in --out, and the JSON file")
def predict(model: Path, inputs: tuple[Path, ...], out: Path, backend: str, device: Device,
            engine_cache: Path | None, max_frame, legacy_max, threads: int | None, alpha: float, every: int,
            json_out: str | None, overwrite: bool) -> None:
    """Segment images, folders of images or videos (OpenCV) with an exported model.

    \b
    ftadapt predict --model ens.onnx frames/ drive.mp4 --out preds/ [--backend onnxruntime --device cpu]
    """
    from ftadapt.machine import check_memory
    from ftadapt.runtime import OnnxRuntimeOptions, Segmenter, TensorRTOptions
    from ftadapt.runtime.predict import check_outputs, collect_sources, predict_files

    check_memory({"--max-frame": _frame(max_frame, legacy_max)})
    sources = collect_sources(inputs)  # bad inputs and outputs fail before an engine is built
    check_json(json_out, overwrite, [model, *inputs], beside=[("--out", out)])
    check_outputs(sources, out, overwrite=overwrite)
    with Segmenter(model, backend=backend, device=device, max_frame=_frame(max_frame, legacy_max),
                   tensorrt=TensorRTOptions(engine_cache=engine_cache),
                   onnxruntime=OnnxRuntimeOptions(threads=threads)) as seg:
        click.echo(f"backend {seg.backend} ({', '.join(seg.providers)})", err=True)
        for note in seg.notes:
            click.echo(f"note: {note}", err=True)
        summary = predict_files(seg, sources, out, alpha=alpha, every=every, overwrite=overwrite)
        summary.update(backend=seg.backend, providers=list(seg.providers))
    echo(f"{summary['frames']} frames in {summary['seconds']} s ({summary['fps']} frames/s end to end, "
         f"{summary['model_ms_mean']} ms per frame in the model) → {out}", json_out)
    emit(summary, json_out, overwrite=overwrite)
