"""The TensorRT backend on a CPU: profiles, the engine-cache key and validation, buffer sizing, version and import
errors, and the whole build → cache → run flow against in-process fakes of ``tensorrt`` and ``pycuda``
(``tests/fake_trt.py``). The real-GPU check at the end is marked ``gpu``/``trt`` and skips with its reason.
"""
from __future__ import annotations

import inspect
import json
import sys
import types
from pathlib import Path

import fake_trt
import numpy as np
import pytest
from onnx_models import build_model, expected_labels
from trt_surface import load_api

from ftadapt.errors import UsageError
from ftadapt.runtime import BackendUnavailable, EngineError, Segmenter, backends, trt_backend
from ftadapt.runtime.engine_cache import EngineCache, EngineKey, compute_profile
from ftadapt.runtime.trt_api import check_version, import_pycuda, import_tensorrt, numpy_dtype
from ftadapt.runtime.trt_backend import buffer_bytes
from ftadapt.runtime.trt_engine import count_half_layers

API_11 = Path(__file__).resolve().parent / "data" / "tensorrt-11.4-python-api.txt"


def _key(**changes) -> EngineKey:
    fields = {"model_sha256": "a" * 64, "tensorrt": "11.4.0.106", "gpu": "Fake GPU 9000", "compute_capability": "8.9",
              "precision": "fp16", "profile": compute_profile(1, (64, 128)), "builder": {"tf32": False}}
    return EngineKey(**{**fields, **changes})


# ---- profiles, keys, cache, buffers ----------------------------------------------------------------------------
def test_profile_defaults_and_static_profiles():
    p = compute_profile()
    assert (p.min, p.opt, p.max) == ((1, 1, 1, 3), (1, 1024, 2048, 3), (1, 1024, 2048, 3)) and not p.static
    s = compute_profile(1, (512, 1024), (512, 1024))
    assert s.static and s.max_size == (512, 1024) and s.min_size == (512, 1024)
    b = compute_profile(4, (64, 96), (32, 48))
    assert (b.min, b.max, b.max_batch) == ((1, 32, 48, 3), (4, 64, 96, 3), 4) and not b.static


@pytest.mark.parametrize("args, message", [((0,), "max_batch=0"), (("2",), "max_batch='2'"), ((True,), "max_batch"),
                                           ((1, (0, 5)), "max_size"), ((1, (1, 2, 3)), "max_size"),
                                           ((1, (64, 64), (65, 10)), "exceeds max_size")])
def test_profile_rejects_bad_limits(args, message):
    with pytest.raises(UsageError, match=message):
        compute_profile(*args)


def test_engine_key_covers_every_field():
    base = _key()
    assert base.digest() == _key().digest() and len(base.digest()) == 64
    variants = [_key(model_sha256="b" * 64), _key(tensorrt="10.16.1.11"), _key(gpu="Other GPU"),
                _key(compute_capability="9.0"), _key(precision="fp32"), _key(profile=compute_profile(2, (64, 128))),
                _key(builder={"tf32": True})]
    assert len({v.digest() for v in variants} | {base.digest()}) == len(variants) + 1
    assert base.to_dict()["profile"] == {"min": [1, 1, 1, 3], "opt": [1, 64, 128, 3], "max": [1, 64, 128, 3]}


def test_cache_round_trip_and_what_it_refuses(tmp_path):
    cache, key = EngineCache(tmp_path / "engines"), _key()
    assert cache.lookup(key, "ens.onnx").plan is None and cache.lookup(key, "ens.onnx").problem is None
    path = cache.store(key, "ens.onnx", b"PLAN", {"half_layers": 7})
    assert path.name.startswith("ens-") and path.suffix == ".engine" and path.with_suffix(".json").is_file()
    hit = cache.lookup(key, "ens.onnx")
    assert hit.plan == b"PLAN" and hit.record["half_layers"] == 7
    assert cache.lookup(_key(gpu="Other"), "ens.onnx").plan is None  # another GPU: another file

    path.write_bytes(b"PLAn")
    assert "corrupt" in cache.lookup(key, "ens.onnx").problem
    record = json.loads(path.with_suffix(".json").read_text())
    record["key"]["tensorrt"] = "10.12.0"
    path.with_suffix(".json").write_text(json.dumps(record))
    assert "stale or foreign" in cache.lookup(key, "ens.onnx").problem
    path.with_suffix(".json").unlink()
    assert "incomplete" in cache.lookup(key, "ens.onnx").problem

    cache.write_timing_cache(key, b"T")
    assert cache.read_timing_cache(key) == b"T" and "fake-gpu-9000-sm8.9" in cache.timing_cache_path(key).name
    assert cache.read_timing_cache(_key(gpu="Other")) == b""
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        EngineCache(tmp_path / "file")


def test_buffer_bytes_by_hand():
    sizes = buffer_bytes({"image": (2, 1024, 2048, 3), "labels": (2, 1024, 2048), "probs": (2, 19, 1024, 2048)},
                         {"image": np.dtype(np.uint8), "labels": np.dtype(np.int32), "probs": np.dtype(np.float32)})
    assert sizes == {"image": 12_582_912, "labels": 16_777_216, "probs": 318_767_104}
    with pytest.raises(EngineError, match="depends on the data"):
        buffer_bytes({"labels": (1, -1, 8)}, {"labels": np.dtype(np.int32)})


def test_half_layer_count_from_inspector_json():
    layers = [{"Inputs": [{"Format/Datatype": "Row major linear FP32"}],
               "Outputs": [{"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
              {"Inputs": [{"Format/Datatype": "Half"}], "Outputs": []},
              {"Inputs": [{"Format/Datatype": "Row major linear Int32"}], "Outputs": []}]
    assert count_half_layers(json.dumps({"Layers": layers, "Bindings": []})) == (2, 3)
    assert count_half_layers(json.dumps({"Layers": ["conv1", "relu1"]})) == (None, 2)
    assert count_half_layers("not json") == (None, None)


# ---- versions, imports, backend choice ------------------------------------------------------------------------
@pytest.mark.parametrize("version, ok", [("10.12.0.36", True), ("10.16.1.11", True), ("11.4.0.106", True),
                                         ("10.8.0.43", False), ("8.6.1", False), ("12.0.0", False)])
def test_supported_tensorrt_versions(version, ok):
    if ok:
        assert check_version(version) >= (10, 12)
    else:
        with pytest.raises(BackendUnavailable, match=r"ftadapt\[trt\].*backend='onnxruntime'"):
            check_version(version)


def test_missing_tensorrt_or_pycuda_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(BackendUnavailable, match=r"TensorRT cannot be imported.*pip install 'ftadapt\[trt\]'"):
        import_tensorrt()
    with pytest.raises(BackendUnavailable, match=r"pycuda cannot be imported.*ftadapt\[trt\]"):
        import_pycuda()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt.tensorrt_module("10.8.0.43"))
    with pytest.raises(BackendUnavailable, match="10.8.0.43 is too old"):
        import_tensorrt()


def test_dtype_mapping():
    trt = fake_trt.tensorrt_module()
    assert numpy_dtype(trt, trt.DataType.INT32) == np.int32 and numpy_dtype(trt, trt.DataType.UINT8) == np.uint8
    with pytest.raises(BackendUnavailable, match="I/O data type"):
        numpy_dtype(trt, "DataType.FP8")


def test_backend_choice(monkeypatch):
    monkeypatch.setattr(backends, "cuda_device_count", lambda: (0, "no NVIDIA driver (libcuda not found)"))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    choice = backends.choose_backend("auto", 0)
    assert choice.backend == "onnxruntime" and any("libcuda" in n for n in choice.notes)
    with pytest.raises(BackendUnavailable, match=r"ftadapt\[trt\].*needs an NVIDIA GPU"):
        backends.choose_backend("tensorrt", 0)
    with pytest.raises(UsageError, match="device='cpu'"):
        backends.choose_backend("tensorrt", "cpu")
    with pytest.raises(UsageError, match="expected one of auto, tensorrt, onnxruntime"):
        backends.choose_backend("trt", 0)
    with pytest.raises(UsageError, match="device=-1"):
        backends.choose_backend("auto", -1)
    assert backends.choose_backend("onnxruntime", 3).backend == "onnxruntime"


# ---- the backend against fakes ----------------------------------------------------------------------------------
@pytest.fixture
def fake_gpu(monkeypatch):
    """Fake TensorRT 11.4, pycuda and cuda.bindings, one visible GPU."""
    trt = fake_trt.tensorrt_module()
    package, driver = fake_trt.pycuda_modules()
    rt = fake_trt.cuda_runtime_module()
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    for name, module in {"tensorrt": trt, "pycuda": package, "pycuda.driver": driver, "cuda": cuda,
                         "cuda.bindings": bindings, "cuda.bindings.runtime": rt}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(backends, "cuda_device_count", lambda: (1, ""))
    monkeypatch.setattr(trt_backend, "_PRIMARY_CONTEXTS", {})
    monkeypatch.setattr(fake_trt.Builder, "half_layers", 5)
    fake_trt.MEMORY.clear()
    fake_trt.STATS.clear()
    fake_trt.STATS.update(builds=0, enqueues=0, graph_launches=0, pushes=0, pops=0, flags_set=0)
    return trt


@pytest.fixture
def toy(tmp_path):
    return build_model(tmp_path / "toy.onnx", with_probs=True, precision="fp16", external_data=True)


def _frames(n, h=6, w=9, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_build_then_cache_then_run(fake_gpu, toy, tmp_path):
    cache = tmp_path / "engines"
    with Segmenter(toy, engine_cache=cache, max_size=(8, 12), max_batch=2) as seg:
        assert seg.backend == "tensorrt" and seg.providers == ("TensorRT",) and seg.notes == ()
        info = seg.describe()
        assert info["engine"]["built"] and info["engine"]["half_layers"] == 5 and info["engine"]["layers"] == 8
        assert info["gpu"] == "Fake GPU 9000" and info["compute_capability"] == "8.9"
        frames = _frames(5)
        np.testing.assert_array_equal(seg(frames[0]), expected_labels(frames[0]))
        labels, probs = seg.predict_batch(frames, probs=True)  # 5 frames, max_batch 2: three engine calls
        np.testing.assert_array_equal(labels, expected_labels(frames))
        assert probs.shape == (5, 19, 6, 9) and np.all(probs.argmax(1) == labels)
        assert fake_trt.STATS["enqueues"] == 4
        with pytest.raises(UsageError, match="larger than max_size 8×12"):
            seg(_frames(1, 9, 9)[0])
    plan = json.loads(Path(info["engine"]["path"]).read_bytes())
    assert plan["strongly_typed"] == 1 << 1  # 1 << STRONGLY_TYPED (1 in the fake)
    assert plan["tf32_cleared"] and plan["workspace"] == 4096 << 20
    assert plan["profile"] == {"input": "image", "min": [1, 1, 1, 3], "opt": [2, 8, 12, 3], "max": [2, 8, 12, 3]}
    assert fake_trt.STATS["flags_set"] == 0  # no precision flag, ever
    assert fake_trt.MEMORY == {} and fake_trt.STATS["pushes"] == fake_trt.STATS["pops"]

    with Segmenter(toy, backend="tensorrt", engine_cache=cache, max_size=(8, 12), max_batch=2) as again:
        assert not again.describe()["engine"]["built"]
        np.testing.assert_array_equal(again(frames[1]), expected_labels(frames[1]))
    assert fake_trt.STATS["builds"] == 1
    with Segmenter(toy, engine_cache=cache, max_size=(8, 16)) as other_profile:
        engine = other_profile.describe()["engine"]
    assert engine["built"]
    plan = json.loads(Path(engine["path"]).read_bytes())
    assert plan["timing_cache"] == "+"  # the first build's timing cache was reused


def test_corrupt_stale_and_missing_engines_are_never_run(fake_gpu, toy, tmp_path):
    cache = tmp_path / "engines"
    with Segmenter(toy, engine_cache=cache, max_size=(8, 12)) as seg:
        path = Path(seg.describe()["engine"]["path"])
    path.write_bytes(b"garbage")
    with pytest.raises(EngineError, match=r"corrupt\. Build it with `ftadapt build-engine"):
        Segmenter(toy, engine_cache=cache, max_size=(8, 12), build=False)
    with Segmenter(toy, engine_cache=cache, max_size=(8, 12)) as seg:
        assert seg.describe()["engine"]["built"] and "corrupt; rebuilt it" in seg.notes[0]
    assert fake_trt.STATS["builds"] == 2

    build_model(toy, weights=np.eye(19, 3, dtype=np.float32)[:, :, None, None] * 2, precision="fp16",
                with_probs=True, external_data=True)  # new weights: a new key, the old engine is stale
    with pytest.raises(EngineError, match="no engine for this model"):
        Segmenter(toy, engine_cache=cache, max_size=(8, 12), build=False)


def test_fp16_export_without_half_layers_is_refused(fake_gpu, toy, tmp_path, monkeypatch):
    monkeypatch.setattr(fake_trt.Builder, "half_layers", 0)
    with pytest.raises(EngineError, match="none of the engine's 3 layers runs in half"):
        Segmenter(toy, engine_cache=tmp_path / "engines")
    assert not list((tmp_path / "engines").glob("*.engine"))
    fp32 = build_model(tmp_path / "fp32.onnx", precision="fp32")
    with Segmenter(fp32, engine_cache=tmp_path / "engines") as seg:  # an FP32 export may have no half layers
        assert seg.describe()["engine"]["half_layers"] == 0


def test_parser_errors_are_reported(fake_gpu, tmp_path):
    model = build_model(tmp_path / "unparseable.onnx")
    with pytest.raises(EngineError, match=r"cannot parse .*unsupported operator"):
        Segmenter(model, engine_cache=tmp_path / "engines")


def test_cuda_graph_replays_static_shapes(fake_gpu, toy, tmp_path):
    with pytest.raises(UsageError, match="static profile"):
        Segmenter(toy, engine_cache=tmp_path / "e", cuda_graph=True)
    with Segmenter(toy, engine_cache=tmp_path / "e", max_size=(6, 9), min_size=(6, 9), cuda_graph=True) as seg:
        frames = _frames(3, seed=1)
        results = [seg(f) for f in frames]
        with pytest.raises(UsageError, match="smaller than min_size 6×9"):
            seg(_frames(1, 5, 9)[0])
    for frame, labels in zip(frames, results):
        np.testing.assert_array_equal(labels, expected_labels(frame))
    assert fake_trt.STATS["graph_launches"] == 2  # first call plain, then capture, then replays


def test_failed_capture_falls_back_to_plain_enqueues(fake_gpu, toy, tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules["cuda.bindings.runtime"], "cudaStreamBeginCapture", lambda s, m: (901,))
    with Segmenter(toy, engine_cache=tmp_path / "e", max_size=(6, 9), min_size=(6, 9), cuda_graph=True) as seg:
        frames = _frames(3, seed=2)
        with pytest.warns(RuntimeWarning, match="CUDA graph capture failed"):
            first = seg(frames[0])
        rest = [seg(f) for f in frames[1:]]
        assert seg.describe()["cuda_graph"].startswith("off: capture failed")
    for frame, labels in zip(frames, [first, *rest]):
        np.testing.assert_array_equal(labels, expected_labels(frame))
    assert fake_trt.STATS["graph_launches"] == 0 and fake_trt.STATS["enqueues"] == 3


def test_segmenters_that_are_never_closed_are_released(fake_gpu, toy, tmp_path):
    import gc

    seg = Segmenter(toy, engine_cache=tmp_path / "e", max_size=(8, 8))
    assert fake_trt.MEMORY
    del seg
    gc.collect()
    assert fake_trt.MEMORY == {} and fake_trt.STATS["pushes"] == fake_trt.STATS["pops"]


def test_argument_errors(fake_gpu, toy, tmp_path):
    with pytest.raises(UsageError, match="pycuda.driver.Stream"):
        Segmenter(toy, engine_cache=tmp_path, stream=3)
    with pytest.raises(UsageError, match="providers= configures ONNX Runtime"):
        Segmenter(toy, backend="tensorrt", providers=["CPUExecutionProvider"], engine_cache=tmp_path)
    seg = Segmenter(toy, engine_cache=tmp_path / "e", max_size=(8, 8))
    seg.close()
    seg.close()
    with pytest.raises(UsageError, match="closed"):
        seg(_frames(1)[0][:8, :8])


def test_the_fakes_only_use_real_api_names():
    """Members the fake classes define must exist in TensorRT 11.4, or the fake could hide a wrong call."""
    api = load_api(API_11)
    trt = fake_trt.tensorrt_module()
    invented = []
    for name in ("Builder", "IBuilderConfig", "INetworkDefinition", "OnnxParser", "ITimingCache",
                 "IOptimizationProfile", "Runtime", "ICudaEngine", "IExecutionContext", "EngineInspector",
                 "ParserError"):
        cls = getattr(trt, name)
        members = [m for m, v in vars(cls).items()
                   if not m.startswith("_") and (callable(v) or isinstance(v, property))]
        invented += [f"{name}.{m}" for m in members if m not in api[name]]
        for m in members:
            if callable(getattr(cls, m)) and m in api[name] and api[name][m].signatures:
                params = [p for p in inspect.signature(getattr(cls, m)).parameters if p != "self"]
                real = api[name][m].signatures  # the fake may leave out trailing parameters that have defaults
                assert any([p.name for p in s.params[:len(params)]] == params
                           and all(p.has_default for p in s.params[len(params):]) for s in real), \
                    f"{name}.{m}{params} matches no real signature"
    assert invented == []


# ---- a real GPU ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.trt
def test_real_tensorrt_engine_matches_onnxruntime(tmp_path):
    count, why = backends.cuda_device_count()
    if count == 0:
        pytest.skip(f"needs an NVIDIA GPU: {why}")
    try:
        import_tensorrt()
        import_pycuda()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    model = build_model(tmp_path / "toy.onnx", with_probs=True)
    frames = _frames(2, 64, 96)
    with Segmenter(model, backend="onnxruntime", device="cpu") as ort:
        expected = ort.predict_batch(frames)
    with Segmenter(model, backend="tensorrt", engine_cache=tmp_path / "e", max_batch=2, max_size=(64, 96)) as seg:
        np.testing.assert_array_equal(seg.predict_batch(frames), expected)
        assert seg.describe()["engine"]["built"]
