"""The artifact metadata on the export side: build it from an ensemble, write it into a file, and ``describe`` a file.

The schema itself (keys, JSON encoding, validation, format version) lives in the torch-free :mod:`ftadapt.artifact`,
and the one reader of a file — metadata, inputs and outputs, external-data files — is the runtime's
:mod:`ftadapt.runtime.onnx_file`, which needs neither torch nor ``onnx``. This module adds what writes (through
``onnx``) and ``describe``, what ``ftadapt inspect`` prints: the reader's facts plus, when ``onnx`` is installed, the
element types the graph really computes in (convolution weights, and the tensors entering Softmax / Resize / ArgMax).
Importing it needs neither torch nor ``onnx``: ``ftadapt inspect`` runs with the runtime alone.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftadapt.artifact import ArtifactError, ArtifactInfo
from ftadapt.errors import UsageError
from ftadapt.fsutil import atomic_path
from ftadapt.labels import CLASS_NAMES, NUM_CLASSES, PALETTE
from ftadapt.protocol import IMG_MEAN_BGR
from ftadapt.runtime.onnx_file import ModelFile, TensorSpec, not_onnx, read_model_file
from ftadapt.version import __version__

if TYPE_CHECKING:
    import onnx

    from ftadapt.export.onnx_graph import SegmentationGraph

INPUT_SPEC = {"name": "image", "dtype": "uint8", "layout": "NHWC", "channels": "RGB", "dynamic": ["N", "H", "W"]}
NO_ONNX = "unknown (onnx not installed)"


def artifact_info(graph: SegmentationGraph, *, precision: str, opset: int) -> ArtifactInfo:
    """The metadata of ``graph`` exported at ``precision`` (verification "skipped" until a verification runs).

    Raises UsageError when the members do not predict the 19 Cityscapes train classes (the only named label space).
    """
    from ftadapt.export.onnx_graph import IMAGE_RESIZE, PROBS_UPSAMPLE

    ensemble = graph.ensemble
    if ensemble.num_classes != NUM_CLASSES:
        raise UsageError(f"the members predict {ensemble.num_classes} classes; only the {NUM_CLASSES}-class "
                         "Cityscapes label space can be exported (class names and palette go into the file)")
    if not ensemble.infos:
        raise UsageError("the ensemble has no member provenance; build it with load_ensemble(...) from checkpoints")
    return ArtifactInfo(
        classes=CLASS_NAMES, palette=PALETTE, members=tuple(i.to_artifact() for i in ensemble.infos),
        working_size=graph.working_size, precision=precision, opset=opset, version=__version__,
        outputs=("labels", "probs") if graph.with_probs else ("labels",), input=dict(INPUT_SPEC),
        preprocessing={"channel_order": "BGR", "mean_bgr": list(IMG_MEAN_BGR), "scale": 1.0,
                       "resize": IMAGE_RESIZE, "upsample": PROBS_UPSAMPLE},
        fusion=f"{ensemble.describe_mode()} (FP32) at the working size, then upsample and argmax",
        ensemble={"fusion": ensemble.fusion, "flip": ensemble.flip})


def _load_header(model: ModelFile) -> onnx.ModelProto:
    """The model without its external weight data (cheap even for GB-sized ensembles). It takes what the runtime's
    reader returned, so a missing or non-ONNX file and external-data paths that leave the model's folder were refused
    before ``onnx`` sees the file. The reader skips node bodies, so damage inside one is found here."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(model.path), load_external_data=False)
    except DecodeError as exc:
        raise not_onnx(model.path, f"onnx cannot parse it: {exc}") from None


def write_props(path: str | os.PathLike, info: ArtifactInfo) -> None:
    """Replace the ftadapt entries of ``path``'s ``metadata_props`` with ``info`` (other entries kept), atomically.

    Weights stored externally stay where they are; embedded weights are rewritten with the graph.
    """
    import onnx

    path = Path(path)
    model = _load_header(read_model_file(path))
    props = {p.key: p.value for p in model.metadata_props if not p.key.startswith("ftadapt.")}
    props.update(info.to_props())
    onnx.helper.set_model_props(model, props)
    with atomic_path(path, overwrite=True) as tmp:  # rewrites the file it read
        onnx.save(model, str(tmp))


def graph_types(model: onnx.ModelProto) -> dict[str, Any]:
    """Element types the graph really computes in: the weight and input types of every Conv, and the input types of
    every Softmax, Resize and ArgMax (types from the initializers and ONNX shape inference)."""
    import onnx

    def name(elem_type: int) -> str:
        return onnx.TensorProto.DataType.Name(elem_type).lower()

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    types.update((t.name, t.data_type) for t in model.graph.initializer)
    summary: dict[str, Any] = {"conv_weights": collections.Counter(), "conv_inputs": collections.Counter()}
    for op in ("Softmax", "Resize", "ArgMax"):
        summary[op.lower()] = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            summary["conv_weights"][name(types.get(node.input[1], 0))] += 1
            summary["conv_inputs"][name(types.get(node.input[0], 0))] += 1
        elif node.op_type in ("Softmax", "Resize", "ArgMax"):
            summary[node.op_type.lower()].append(name(types.get(node.input[0], 0)))
    summary["conv_weights"] = dict(summary["conv_weights"])
    summary["conv_inputs"] = dict(summary["conv_inputs"])
    return summary


def graph_precision(types: dict[str, Any]) -> str:
    """"fp16" / "fp32" when every Conv weight has that type, else "mixed" (or "none" without Conv)."""
    kinds = set(types["conv_weights"])
    return {frozenset({"float16"}): "fp16", frozenset({"float"}): "fp32", frozenset(): "none"}.get(
        frozenset(kinds), "mixed")


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "dtype": spec.dtype, "shape": list(spec.dims)}


def _graph_types(model: ModelFile) -> tuple[dict[str, Any] | None, str]:
    """``graph_types`` and ``graph_precision`` of the file, or (None, why they are unknown): ``onnx`` is not
    installed, or its shape inference refuses the graph (the runtimes then say more when they load it)."""
    try:
        import onnx
    except ImportError:
        return None, NO_ONNX
    try:
        types = graph_types(_load_header(model))
    except onnx.shape_inference.InferenceError as exc:
        return None, f"unknown (onnx cannot infer the graph's types: {' '.join(str(exc).split())})"
    return types, graph_precision(types)


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """What ``ftadapt inspect`` reports: files and sizes (missing data files named), opset, inputs, outputs, graph
    types and precision (``NO_ONNX`` without the ``onnx`` package), and the ftadapt metadata (``metadata_error``
    says why it could not be read, if so)."""
    path = Path(path)
    model = read_model_file(path)
    types, precision = _graph_types(model)
    out: dict[str, Any] = {
        "path": str(path), "files": [str(path), *map(str, model.data_files)],
        "missing_files": [str(p) for p in model.missing_files], "size_bytes": model.size_bytes,
        "opset": model.opset, "ir_version": model.ir_version, "producer": model.producer,
        "inputs": [_tensor(t) for t in model.inputs], "outputs": [_tensor(t) for t in model.outputs],
        "nodes": model.nodes, "graph_types": types, "graph_precision": precision, "metadata": None,
        "metadata_error": None,
        "other_metadata": {k: v for k, v in model.metadata.items() if not k.startswith("ftadapt.")},
    }
    try:
        out["metadata"] = dataclasses.asdict(model.info)
    except ArtifactError as exc:
        out["metadata_error"] = str(exc)
    return out


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 2**20:.1f} MiB"


def _tensor_line(v: dict[str, Any]) -> str:
    return f"{v['name']}: {v['dtype']} [{', '.join(map(str, v['shape']))}]"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.4f} %"


def _verification_lines(ver: dict[str, Any]) -> list[str]:
    if ver["status"] == "skipped":
        return ["verified    SKIPPED (exported with --no-verify)"]
    prob = "-" if ver.get("max_abs_prob") is None else f"{ver['max_abs_prob']:.3g}"
    gate = ", ".join(f"{k} {'≤' if k == 'max_abs_prob' else '≥'} {v:g}" for k, v in ver.get("gate", {}).items())
    lines = [f"verified    {ver['status'].upper()}: {ver.get('runtime')} vs {ver.get('reference')} on "
             f"{ver.get('frames')} frames at {', '.join(ver.get('sizes', []))}",
             f"            max |Δprob| {prob}, label agreement {_percent(ver.get('label_agreement'))} "
             f"(identical {_percent(ver.get('identical_labels'))}); gate: {gate}"]
    return lines + [f"            - {r}" for r in ver.get("reasons", [])]


def format_description(desc: dict[str, Any]) -> str:
    """``describe``'s result as text for people."""
    lines = [f"file        {desc['path']} ({_size(desc['size_bytes'])}"
             + (f", with {len(desc['files']) - 1} external-data file(s)" if len(desc['files']) > 1 else "") + ")"]
    if desc["missing_files"]:
        lines.append(f"MISSING     {', '.join(desc['missing_files'])}")
    lines.append(f"opset       {desc['opset']} (IR {desc['ir_version']}, {desc['nodes']} nodes, {desc['producer']})")
    lines += [f"input       {_tensor_line(v)}" for v in desc["inputs"]]
    lines += [f"output      {_tensor_line(v)}" for v in desc["outputs"]]
    t = desc["graph_types"]
    if t is None:
        lines.append(f"precision   graph {desc['graph_precision']}")
    else:
        convs = ", ".join(f"{n} {k}" for k, n in t["conv_weights"].items()) or "none"
        softmax, argmax = ("/".join(sorted(set(t[op]))) or "-" for op in ("softmax", "argmax"))
        lines.append(f"precision   graph {desc['graph_precision']} (conv weights: {convs}; softmax in {softmax}; "
                     f"argmax in {argmax})")
    meta = desc["metadata"]
    if meta is None:
        lines.append(f"metadata    none readable: {desc['metadata_error']}")
        return "\n".join(lines)
    w, h = meta["working_size"]
    lines += [f"ftadapt     {meta['version']} (format {meta['format_version']}), precision {meta['precision']}, "
              f"working size {w}x{h}, outputs {', '.join(meta['outputs'])}",
              f"classes     {len(meta['classes'])}: {', '.join(meta['classes'])}",
              f"fusion      {meta['ensemble']['fusion']}, flip {'on' if meta['ensemble']['flip'] else 'off'}: "
              f"{meta['fusion']}", "members"]
    for m in meta["members"]:
        miou = "-" if m["miou"] is None else f"{m['miou']:.2f} ({m['miou_source']})"
        lines.append(f"  {m['weight']:.4f}  {m['name']}  method {m['method']}, heads {m['head_rule']}, "
                     f"mIoU {miou}, sha256 {m['sha256'][:12]}…")
    lines += _verification_lines(meta["verification"])
    return "\n".join(lines)


__all__ = ["artifact_info", "write_props", "graph_types", "graph_precision", "describe", "format_description",
           "INPUT_SPEC", "NO_ONNX"]
