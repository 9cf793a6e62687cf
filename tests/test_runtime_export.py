"""End to end: a tiny checkpoint exported with ``ftadapt.export`` runs through ``Segmenter(backend="onnxruntime")``
and gives the labels of the PyTorch graph it was exported from. The file hand-off is the only link between the two
stages (DESIGN.md §3), so this is the test that the runtime reads what the exporter really writes — metadata, the
``image``/``labels``/``probs`` contract and an external-data file."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ftadapt.export import onnx_export
from ftadapt.export.ensemble import load_ensemble
from ftadapt.export.graph import build_graph
from ftadapt.labels import CLASS_NAMES, PALETTE
from ftadapt.runtime import Segmenter
from ftadapt.runtime.onnx_file import read_model_file

from test_ensemble import make_member

WORKING = (64, 32)  # (W, H)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime-export")
    ensemble = load_ensemble([str(make_member(root / "clan", 0, method="clan", miou=41.0))])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)  # force the external-data layout torch uses for big models
        result = onnx_export.export_onnx(ensemble, root / "ens.onnx", working_size=WORKING, with_probs=True,
                                         verify=False, progress=False)
    return ensemble, result.path


@pytest.mark.slow
def test_exported_ensemble_runs_in_the_runtime(exported):
    ensemble, path = exported
    assert read_model_file(path).data_files, "the export should have written an external-data file"
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 80, 3), dtype=np.uint8)
    with torch.no_grad():
        reference = build_graph(ensemble, working_size=WORKING)(torch.from_numpy(frames)).numpy()
    with Segmenter(path, backend="onnxruntime", device="cpu") as seg:
        assert seg.classes == CLASS_NAMES and seg.palette.tolist() == [list(c) for c in PALETTE]
        assert [(m.name, m.miou) for m in seg.metadata.members] == [("clan", 41.0)]
        assert seg.metadata.working_size == WORKING and seg.metadata.precision == "fp32"
        labels, probs = seg.predict_batch(frames, probs=True)
        single = seg(frames[1])
    assert labels.shape == (2, 48, 80) and probs.shape == (2, 19, 48, 80)
    assert np.mean(labels == reference) >= 0.999
    np.testing.assert_array_equal(single, labels[1])
    np.testing.assert_array_equal(probs.argmax(1), labels)
