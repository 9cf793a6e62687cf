"""ONNX-side handling of the artifact metadata: build it from an ensemble, write it, read it, and describe a file.

The schema itself (keys, JSON encoding, validation, format version) lives in the torch-free :mod:`ftadapt.artifact`,
which the runtime shares; this module adds what needs ``onnx``: reading ``metadata_props`` from a file (without
loading external weights), rewriting them, and ``describe`` — what ``ftadapt inspect`` prints, including the element
types the graph really uses (convolution weights, and the tensors entering Softmax / Resize / ArgMax).
"""
from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path
from typing import Any

import onnx

from ftadapt import __version__
from ftadapt.artifact import ArtifactError, ArtifactInfo
from ftadapt.errors import UsageError
from ftadapt.export.onnx_graph import IMAGE_RESIZE, PROBS_UPSAMPLE, SegmentationGraph
from ftadapt.fsutil import atomic_path
from ftadapt.labels import CLASS_NAMES, NUM_CLASSES, PALETTE
from ftadapt.protocol import IMG_MEAN_BGR

INPUT_SPEC = {"name": "image", "dtype": "uint8", "layout": "NHWC", "channels": "RGB", "dynamic": ["N", "H", "W"]}


def artifact_info(graph: SegmentationGraph, *, precision: str, opset: int) -> ArtifactInfo:
    """The metadata of ``graph`` exported at ``precision`` (verification "skipped" until a verification runs).

    Raises UsageError when the members do not predict the 19 Cityscapes train classes (the only named label space).
    """
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


def _load_header(path: str | os.PathLike) -> onnx.ModelProto:
    """The model without its external weight data (cheap even for GB-sized ensembles)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give the .onnx file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise UsageError(f"no ONNX file at {path}") from None
    except Exception as exc:  # DecodeError and friends from protobuf
        raise ArtifactError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None


def read_props(path: str | os.PathLike) -> dict[str, str]:
    """All ``metadata_props`` of the ONNX file at ``path``."""
    return {p.key: p.value for p in _load_header(path).metadata_props}


def read_artifact(path: str | os.PathLike) -> ArtifactInfo:
    """The validated ftadapt metadata of ``path``; ArtifactError when absent or damaged."""
    return ArtifactInfo.from_props(read_props(path), source=str(path))


def write_props(path: str | os.PathLike, info: ArtifactInfo) -> None:
    """Replace the ftadapt entries of ``path``'s ``metadata_props`` with ``info`` (other entries kept), atomically.

    Weights stored externally stay where they are; embedded weights are rewritten with the graph.
    """
    path = Path(path)
    model = _load_header(path)
    props = {p.key: p.value for p in model.metadata_props if not p.key.startswith("ftadapt.")}
    props.update(info.to_props())
    onnx.helper.set_model_props(model, props)
    with atomic_path(path, overwrite=True) as tmp:  # rewrites the file it read
        onnx.save(model, str(tmp))


def _type_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type).lower()


def _value_info(value: onnx.ValueInfoProto) -> dict[str, Any]:
    tensor = value.type.tensor_type
    dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor.shape.dim]
    return {"name": value.name, "dtype": _type_name(tensor.elem_type), "shape": dims}


def graph_types(model: onnx.ModelProto) -> dict[str, Any]:
    """Element types the graph really computes in: the weight and input types of every Conv, and the input types of
    every Softmax, Resize and ArgMax (types from the initializers and ONNX shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    types.update((t.name, t.data_type) for t in model.graph.initializer)
    summary: dict[str, Any] = {"conv_weights": collections.Counter(), "conv_inputs": collections.Counter()}
    for op in ("Softmax", "Resize", "ArgMax"):
        summary[op.lower()] = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            summary["conv_weights"][_type_name(types.get(node.input[1], 0))] += 1
            summary["conv_inputs"][_type_name(types.get(node.input[0], 0))] += 1
        elif node.op_type in ("Softmax", "Resize", "ArgMax"):
            summary[node.op_type.lower()].append(_type_name(types.get(node.input[0], 0)))
    summary["conv_weights"] = dict(summary["conv_weights"])
    summary["conv_inputs"] = dict(summary["conv_inputs"])
    return summary


def graph_precision(types: dict[str, Any]) -> str:
    """"fp16" / "fp32" when every Conv weight has that type, else "mixed" (or "none" without Conv)."""
    kinds = set(types["conv_weights"])
    return {frozenset({"float16"}): "fp16", frozenset({"float"}): "fp32", frozenset(): "none"}.get(
        frozenset(kinds), "mixed")


def external_files(path: str | os.PathLike, model: onnx.ModelProto | None = None) -> list[Path]:
    """The external-data files the model at ``path`` references (beside it), in first-use order."""
    path = Path(path)
    model = model or _load_header(path)
    names: dict[str, None] = {}
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            names.setdefault(next(e.value for e in tensor.external_data if e.key == "location"), None)
    return [path.parent / name for name in names]


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """What ``ftadapt inspect`` reports: files and sizes, opset, inputs, outputs, graph types and precision, and the
    ftadapt metadata (``metadata_error`` says why it could not be read, if so)."""
    path = Path(path)
    model = _load_header(path)
    data = external_files(path, model)
    missing = [str(p) for p in data if not p.is_file()]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    types = graph_types(model)
    props = {p.key: p.value for p in model.metadata_props}
    out: dict[str, Any] = {
        "path": str(path), "files": [str(path), *map(str, data)], "missing_files": missing,
        "size_bytes": path.stat().st_size + sum(p.stat().st_size for p in data if p.is_file()),
        "opset": opset, "ir_version": model.ir_version, "producer": f"{model.producer_name} {model.producer_version}",
        "inputs": [_value_info(v) for v in model.graph.input],
        "outputs": [_value_info(v) for v in model.graph.output],
        "nodes": len(model.graph.node), "graph_types": types, "graph_precision": graph_precision(types),
        "metadata": None, "metadata_error": None,
        "other_metadata": {k: v for k, v in props.items() if not k.startswith("ftadapt.")},
    }
    try:
        out["metadata"] = dataclasses.asdict(ArtifactInfo.from_props(props, source=str(path)))
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


__all__ = ["artifact_info", "read_props", "read_artifact", "write_props", "graph_types", "graph_precision",
           "external_files", "describe", "format_description", "INPUT_SPEC"]
