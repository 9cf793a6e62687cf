"""Tiny ONNX models that honour the exported-artifact contract (DESIGN.md §4), for runtime tests.

``image`` uint8 N×H×W×3 (dynamic N/H/W) → ``labels`` int32 N×H×W (+ optional ``probs`` float32 N×C×H×W), with
ftadapt ``metadata_props``. Inside: cast to float, NHWC→NCHW, a fixed 1×1 convolution, argmax over classes. With the
default weights class 0 scores the red channel, class 1 green, class 2 blue and every other class −1000, so the
expected label of a pixel is ``argmax(rgb)`` (first channel on ties) — easy to compute by hand in a test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ftadapt.artifact import ArtifactInfo, ArtifactMember
from ftadapt.labels import CLASS_NAMES, PALETTE


def rgb_weights(num_classes: int = 19) -> np.ndarray:
    """Conv weights C×3×1×1: class c < 3 picks channel c, the rest score −1000 (via the bias)."""
    w = np.zeros((num_classes, 3, 1, 1), dtype=np.float32)
    for c in range(min(3, num_classes)):
        w[c, c] = 1.0
    return w


def expected_labels(frames: np.ndarray) -> np.ndarray:
    """What the default model predicts. Shape: uint8 (..., H, W, 3) → int32 (..., H, W)."""
    return np.argmax(frames, axis=-1).astype(np.int32)


def artifact_info(precision: str = "fp32", *, with_probs: bool = False, classes=CLASS_NAMES,
                  palette=PALETTE) -> ArtifactInfo:
    """Metadata of a one-member artifact (what ``ftadapt export`` would write for this toy graph)."""
    return ArtifactInfo(
        classes=tuple(classes), palette=tuple(palette),
        members=(ArtifactMember(name="toy", method="source-only", head_rule="main", weight=1.0, sha256="0" * 64),),
        working_size=(32, 16), precision=precision, opset=17, version="test",
        outputs=("labels", "probs") if with_probs else ("labels",),
        input={"name": "image", "dtype": "uint8", "layout": "NHWC", "channels": "RGB", "dynamic": ["N", "H", "W"]})


def build_model(path: str | Path, *, weights: np.ndarray | None = None, with_probs: bool = False,
                precision: str = "fp32", metadata: dict[str, str] | None = None, external_data: bool = False,
                input_dtype: int | None = None, label_dtype: int | None = None, input_name: str = "image",
                cast_first: bool = True) -> Path:
    """Write the toy model to ``path`` and return it.

    ``metadata`` replaces the ftadapt props (``{}`` writes none); ``external_data`` stores the weights in
    ``<name>.data``; ``input_dtype`` / ``label_dtype`` / ``input_name`` break the contract on purpose;
    ``cast_first=False`` transposes the uint8 frame before casting it (what exports did before ftadapt cast first,
    and what TensorRT rejects).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = rgb_weights() if weights is None else weights.astype(np.float32)
    num_classes = weights.shape[0]
    bias = np.where(np.arange(num_classes) < 3, 0.0, -1000.0).astype(np.float32)
    in_type = TensorProto.UINT8 if input_dtype is None else input_dtype
    out_type = TensorProto.INT32 if label_dtype is None else label_dtype
    first = [helper.make_node("Cast", [input_name], ["x_f"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["x_f"], ["x_nchw"], perm=[0, 3, 1, 2])]
    if not cast_first:
        first = [helper.make_node("Transpose", [input_name], ["x_t"], perm=[0, 3, 1, 2], name="permute"),
                 helper.make_node("Cast", ["x_t"], ["x_nchw"], to=TensorProto.FLOAT)]
    nodes = [
        *first,
        helper.make_node("Conv", ["x_nchw", "w", "b"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["idx"], axis=1, keepdims=0),
        helper.make_node("Cast", ["idx"], ["labels"], to=out_type),
    ]
    outputs = [helper.make_tensor_value_info("labels", out_type, ["N", "H", "W"])]
    if with_probs:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", num_classes, "H", "W"]))
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info(input_name, in_type, ["N", "H", "W", 3])], outputs,
        initializer=[numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ftadapt-tests")
    model.ir_version = 8
    if metadata is None:
        fits = num_classes <= len(CLASS_NAMES)
        classes = CLASS_NAMES[:num_classes] if fits else [f"c{i}" for i in range(num_classes)]
        palette = (PALETTE * 14)[:num_classes]
        metadata = artifact_info(precision, with_probs=with_probs, classes=classes, palette=palette).to_props()
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path
