"""Every TensorRT API member the runtime uses exists, with a compatible signature, in TensorRT 11.4 and 10.16.

TensorRT cannot be installed on CI (DESIGN.md §8), so the backend is checked against the API surfaces dumped from the
real bindings (``reference/tensorrt-*-python-api.txt``). The checker is itself tested: it must find the calls the
backend is known to make, and it must flag removed or misused API (``BuilderFlag.FP16`` on 11.x,
``execute_async_v2``, the bindings API, wrong argument counts) — so the test cannot pass by finding nothing.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from trt_surface import check, find_uses, load_api

ROOT = Path(__file__).resolve().parents[1]
# Copies of shared/reference/tensorrt-*-python-api.txt (the introspected bindings), so CI checks them everywhere.
REFERENCE = ROOT / "tests" / "data"
VERSIONS = ("11.4", "10.16")
TRT_MODULES = sorted((ROOT / "runtime").glob("*.py"))
# Members the backend must use (deploy.md §1.2–1.5); if the checker stops seeing them, it has gone blind.
EXPECTED = {
    "Builder.create_network", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "OnnxParser.parse_from_file",
    "OnnxParser.num_errors", "OnnxParser.get_error", "Builder.create_builder_config",
    "IBuilderConfig.set_memory_pool_limit", "MemoryPoolType.WORKSPACE", "Builder.create_optimization_profile",
    "IOptimizationProfile.set_shape", "IBuilderConfig.add_optimization_profile", "IBuilderConfig.create_timing_cache",
    "IBuilderConfig.set_timing_cache", "IBuilderConfig.get_timing_cache", "ITimingCache.serialize",
    "Builder.build_serialized_network", "Runtime.deserialize_cuda_engine", "ICudaEngine.create_engine_inspector",
    "EngineInspector.get_engine_information", "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name",
    "ICudaEngine.get_tensor_mode", "ICudaEngine.get_tensor_dtype", "ICudaEngine.create_execution_context",
    "IExecutionContext.set_input_shape", "IExecutionContext.get_tensor_shape", "IExecutionContext.set_tensor_address",
    "IExecutionContext.execute_async_v3", "IBuilderConfig.profiling_verbosity", "BuilderFlag.TF32",
    "IBuilderConfig.progress_monitor", "IProgressMonitor.phase_start", "IProgressMonitor.step_complete",
    "IProgressMonitor.phase_finish",
}
PRECISION_FLAGS = {"FP16", "BF16", "INT8", "FP8", "FP4", "INT4"}
# Receivers that look like TensorRT objects must be typed, or their calls would escape the check.
TRT_LOOKING = re.compile(r"(^|_|\.)(engine|context|config|builder|network|parser|runtime|inspector|logger)$")


@pytest.fixture(scope="module", params=VERSIONS)
def api(request):
    return load_api(REFERENCE / f"tensorrt-{request.param}-python-api.txt")


def _uses(api, sources=None):
    """All uses in the runtime's modules, and per module using TensorRT its untyped receivers."""
    found, untyped = [], {}
    for path in TRT_MODULES:
        names: set[str] = set()
        uses = find_uses(path.read_text() if sources is None else sources.get(path.name, path.read_text()), api,
                         names)
        found += uses
        if uses:
            untyped[path.name] = names
    return found, untyped


def test_api_files_parse_into_the_known_surface(api):
    assert len(api) > 150
    create = api["ICudaEngine"]["create_execution_context"]
    assert len(create.signatures) == 2 and all(s.returns == "IExecutionContext" for s in create.signatures)
    assert api["IExecutionContext"]["execute_async_v3"].signatures[0].accepts(1, ())
    assert not api["IBuilderConfig"]["set_timing_cache"].signatures[0].accepts(1, ())
    assert api["ICudaEngine"]["num_io_tensors"].kind == "property"


def test_every_used_member_exists_with_a_compatible_signature(api):
    uses, untyped = _uses(api)
    used = {u.qualname for u in uses}
    assert used >= EXPECTED, f"the checker no longer sees {sorted(EXPECTED - used)}"
    assert check(uses, api) == []
    suspicious = {name: sorted(n for n in names if TRT_LOOKING.search(n)) for name, names in untyped.items()}
    assert not any(suspicious.values()), f"annotate these TensorRT objects (x: trt.Class) so calls are checked: " \
                                         f"{suspicious}"


def _precision_flag_uses(path: Path) -> list[str]:
    """Code (not text) that requests a precision from the builder: ``BuilderFlag.FP16``-style attributes,
    ``getattr(…, "FP16")``, or any ``set_flag(…)`` call (the runtime only ever clears TF32)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        owner = node.value if isinstance(node, ast.Attribute) else None
        owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
        if isinstance(node, ast.Attribute) and node.attr in PRECISION_FLAGS and owner_name == "BuilderFlag":
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") \
                and any(isinstance(a, ast.Constant) and a.value in PRECISION_FLAGS for a in node.args):
            found.append(f"{path.name}:{node.lineno} {node.func.id}(…)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "set_flag":
            found.append(f"{path.name}:{node.lineno} set_flag(…)")
    return found


def test_the_fp16_builder_flag_is_absent_from_11x_and_used_nowhere():
    assert "FP16" not in load_api(REFERENCE / "tensorrt-11.4-python-api.txt")["BuilderFlag"]
    assert "FP16" in load_api(REFERENCE / "tensorrt-10.16-python-api.txt")["BuilderFlag"]  # deprecated there
    code = [p for base in ("runtime", "export", "bench") for p in (ROOT / base).rglob("*.py")] + [ROOT / "cli.py"]
    assert [hit for p in code for hit in _precision_flag_uses(p)] == []


def test_the_precision_flag_scan_is_not_blind(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(trt, c):\n    c.set_flag(trt.BuilderFlag.FP16)\n    x = trt.DataType.INT8\n"
                   "    return hasattr(trt.BuilderFlag, 'INT8')\n")
    assert len(_precision_flag_uses(bad)) == 3  # DataType.INT8 is a tensor type, not a precision request


def test_the_network_is_created_strongly_typed(api):
    uses, _ = _uses(api)
    lines = {u.line for u in uses if u.qualname == "Builder.create_network"}
    source = (ROOT / "runtime" / "trt_engine.py").read_text().splitlines()
    assert lines and all("STRONGLY_TYPED" in source[line - 1] for line in lines)


SNIPPET = '''
def build(trt, config: trt.IBuilderConfig, context: trt.IExecutionContext, engine: trt.ICudaEngine, cache):
    config.set_flag(trt.BuilderFlag.FP16)
    context.execute_async_v2([0, 1], 0)
    engine.get_binding_shape(0)
    context.set_tensor_address("image")
    config.set_timing_cache(cache)
    engine.num_io_tensors = 3
    inspector = engine.create_engine_inspector()
    inspector.get_engine_information()
    trt.IInt8EntropyCalibrator2


class Monitor(trt.IProgressMonitor):
    def step_complete(self, phase, step):
        return True
'''


@pytest.mark.parametrize("version", VERSIONS)
def test_the_checker_flags_removed_and_misused_api(version):
    api = load_api(REFERENCE / f"tensorrt-{version}-python-api.txt")
    problems = "\n".join(check(find_uses(SNIPPET, api), api))
    assert "execute_async_v2 does not exist" in problems
    assert "get_binding_shape does not exist" in problems
    assert "set_tensor_address called with 1 positional" in problems
    assert "set_timing_cache called with 1 positional" in problems
    assert "num_io_tensors is assigned but is not a property" not in problems  # it is a property …
    assert "get_engine_information called with 0 positional" in problems  # … typed through a method's return
    assert "step_complete is overridden with parameters ['phase', 'step']" in problems
    if version == "11.4":
        assert "BuilderFlag.FP16 does not exist" in problems
        assert "IInt8EntropyCalibrator2 does not exist" in problems
    else:
        assert "BuilderFlag.FP16" not in problems


@pytest.mark.parametrize("version", VERSIONS)
def test_a_regression_in_the_real_backend_would_be_caught(version):
    api = load_api(REFERENCE / f"tensorrt-{version}-python-api.txt")
    source = (ROOT / "runtime" / "trt_backend.py").read_text()
    assert "execute_async_v3(" in source
    broken = source.replace("execute_async_v3(", "execute_async_v2(")
    uses, _ = _uses(api, {"trt_backend.py": broken})
    assert any("execute_async_v2 does not exist" in p for p in check(uses, api))
