"""Shared fixtures: one torch thread for the whole suite, one small synthetic two-domain dataset and one tiny export
(FP32 and FP16) per session."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The suite's tensors are tiny: intra-op threads gain nothing and, on a shared 2-core machine, their
    spin-waiting makes steps several times slower."""
    try:
        import torch
    except ImportError:  # the base install: torch-free tests still run
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """A small synthetic GTA5-layout source and Cityscapes-layout target (see ftadapt.data.synthetic)."""
    from ftadapt.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic(root, n_source=6, n_target_train=4, n_target_val=3, source_size=(160, 96),
                           target_size=(128, 64), seed=0)


TINY_WORKING = (64, 32)  # (W, H) of the session's tiny exports
TINY_VERIFY_SIZES = [(96, 40), (50, 70)]  # the FP16 export's verification sizes, both unlike the working size


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """Two tiny members (CLAN layout, 0.7; multi/reduced, 0.3) exported as FP32 with ``probs`` through the command
    line (verified on one frame per size) and as FP16 through the library with its weights forced into an
    external-data file (verified at ``TINY_VERIFY_SIZES``). Exports cost seconds each: every test that needs a real
    exported file reads these, and copies them before changing anything.

    Keys: ``root`` (the members' folder: ``--checkpoints`` finds both), ``members`` (their folders), ``checkpoint``
    (the CLAN member), ``ensemble`` (the loaded FP32 ensemble), ``fp32`` / ``fp16`` (the files), ``fp16_result``
    (the library's ExportResult), ``cli_output`` and ``cli_json`` (what the FP32 export printed and wrote)."""
    import json

    from click.testing import CliRunner
    from test_ensemble import make_member

    from ftadapt.cli import cli
    from ftadapt.ensemble import load_ensemble
    from ftadapt.export import onnx_export

    root = tmp_path_factory.mktemp("tiny-export")
    clan = make_member(root / "clan", 0, method="clan", miou=44.5)
    multi = make_member(root / "maxsquare", 1, method="maxsquare", miou=None, heads="multi", aspp="reduced")
    fp32 = root / "out" / "fused.onnx"
    w, h = TINY_WORKING
    result = CliRunner().invoke(cli, ["export", "--ensemble", f"{clan}:0.7", "--ensemble", f"{multi}:0.3",
                                      "--out", str(fp32), "--working-size", f"{w}x{h}", "--probs", "--verify-frames",
                                      "1", "--json", str(root / "fp32.json")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    ensemble = load_ensemble([f"{clan}:0.7", f"{multi}:0.3"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
        fp16 = onnx_export.export_onnx(ensemble, root / "out" / "fused16.onnx", precision="fp16",
                                       working_size=TINY_WORKING, verify_sizes=TINY_VERIFY_SIZES, progress=False)
    return {"root": root, "members": [clan, multi], "checkpoint": clan, "ensemble": ensemble, "fp32": fp32,
            "fp16": fp16.path, "fp16_result": fp16, "cli_output": result.output,
            "cli_json": json.loads((root / "fp32.json").read_text())}
