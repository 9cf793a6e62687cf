"""The TensorRT backend on a CPU: profiles, the engine-cache key and validation, buffer sizing, version and import
errors, and the whole build → cache → run flow against in-process fakes of ``tensorrt`` and ``pycuda``
(``tests/fake_trt.py``). The real-GPU checks, on a real exported file, are in ``test_runtime_export``.
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

from ftadapt import devices
from ftadapt.devices import DeviceError
from ftadapt.errors import UsageError
from ftadapt.runtime import (
    BackendUnavailable,
    EngineError,
    OnnxRuntimeOptions,
    Segmenter,
    TensorRTOptions,
    backends,
    trt_api,
    trt_backend,
)
from ftadapt.runtime.engine_cache import EngineCache, EngineKey, compute_profile
from ftadapt.runtime.trt_api import check_version, import_pycuda, import_tensorrt, numpy_dtype
from ftadapt.runtime.trt_backend import buffer_bytes
from ftadapt.runtime.trt_engine import count_half_layers

API_11 = Path(__file__).resolve().parent / "data" / "tensorrt-11.4-python-api.txt"


def _key(**changes) -> EngineKey:
    fields = {"model_sha256": "a" * 64, "tensorrt": "11.4.0.106", "gpu": "Fake GPU 9000", "compute_capability": "8.9",
              "precision": "fp16", "profile": compute_profile(1, (128, 64)), "builder": {"tf32": False},
              "cuda": "cuda13"}
    return EngineKey(**{**fields, **changes})


# ---- profiles, keys, cache, buffers ----------------------------------------------------------------------------
def test_profile_defaults_and_static_profiles():
    """Frames are given W×H; the profile holds TensorRT's N×H×W×3 shapes of the ``image`` tensor."""
    p = compute_profile()
    assert (p.min, p.opt, p.max) == ((1, 1, 1, 3), (1, 1024, 2048, 3), (1, 1024, 2048, 3)) and not p.static
    assert p.max_frame == (2048, 1024) and p.min_frame == (1, 1)
    s = compute_profile(1, (1024, 512), (1024, 512))
    assert s.static and s.max == (1, 512, 1024, 3) and s.max_frame == (1024, 512) and s.min_frame == (1024, 512)
    b = compute_profile(4, (96, 64), (48, 32))
    assert (b.min, b.max, b.max_batch) == ((1, 32, 48, 3), (4, 64, 96, 3), 4) and not b.static
    # Tuned for what a camera app runs: one frame per call at the configured frame size, not the largest batch.
    assert b.opt == (1, 64, 96, 3)
    tuned = compute_profile(4, (96, 64), (48, 32), opt_batch=2, opt_frame=(64, 48))
    assert tuned.opt == (2, 48, 64, 3) and tuned.max == b.max


@pytest.mark.parametrize("args, options, message", [
    ((0,), {}, "max_batch=0"), (("2",), {}, "max_batch='2'"), ((True,), {}, "max_batch"),
    ((1, (0, 5)), {}, r"max_frame=\(0, 5\): expected \(W, H\)"), ((1, (1, 2, 3)), {}, "max_frame"),
    ((1, (64, 64), (10, 65)), {}, r"min_frame 10×65 exceeds max_frame 64×64 \(both W×H\)"),
    ((2, (64, 64)), {"opt_batch": 3}, "opt_batch=3 exceeds max_batch=2"), ((2,), {"opt_batch": 0}, "opt_batch=0"),
    ((1, (64, 64), (32, 32)), {"opt_frame": (64, 16)}, r"opt_frame 64×16 is outside .*\(all W×H\)")])
def test_profile_rejects_bad_limits(args, options, message):
    with pytest.raises(UsageError, match=message):
        compute_profile(*args, **options)


def test_engine_key_covers_every_field():
    base = _key()
    assert base.digest() == _key().digest() and len(base.digest()) == 64
    variants = [_key(model_sha256="b" * 64), _key(tensorrt="10.16.1.11"), _key(gpu="Other GPU"),
                _key(compute_capability="9.0"), _key(precision="fp32"), _key(profile=compute_profile(2, (128, 64))),
                _key(builder={"tf32": True}), _key(cuda="cuda12"), _key(outputs=("labels", "probs")),
                _key(profile=compute_profile(1, (128, 64), opt_frame=(64, 32)))]
    assert len({v.digest() for v in variants} | {base.digest()}) == len(variants) + 1
    assert base.to_dict()["profile"] == {"min": [1, 1, 1, 3], "opt": [1, 64, 128, 3], "max": [1, 64, 128, 3]}
    assert base.to_dict()["cuda"] == "cuda13" and base.to_dict()["outputs"] == ["labels"]


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
    assert cache.read_timing_cache(key) == b"T" and "cuda13-fake-gpu-9000-sm8.9" in cache.timing_cache_path(key).name
    assert cache.read_timing_cache(_key(gpu="Other")) == b"" and cache.read_timing_cache(_key(cuda="cuda12")) == b""
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
    """Which backend runs on which device, and why, for every backend and device spelling, with and without a GPU."""
    monkeypatch.setattr(devices, "cuda_device_count", lambda: (0, "no NVIDIA driver (libcuda not found)"))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    for device in ("auto", 0, "cuda:0"):  # auto runs on the CPU, whatever device was asked for, and says why
        choice = backends.choose_backend("auto", device)
        assert (choice.backend, str(choice.device)) == ("onnxruntime", "cpu")
        assert any("libcuda" in n for n in choice.notes)
    with pytest.raises(BackendUnavailable, match=r"TensorRT needs a CUDA device, and this machine has none \(no "
                                                 r"NVIDIA driver.*; and TensorRT cannot be imported.*ftadapt\[trt\]"):
        backends.choose_backend("tensorrt", "auto")
    with pytest.raises(UsageError, match="device='cpu'"):
        backends.choose_backend("tensorrt", "cpu")
    with pytest.raises(UsageError, match="expected one of auto, tensorrt, onnxruntime"):
        backends.choose_backend("trt", 0)
    with pytest.raises(UsageError, match="device -1: a CUDA index is 0 or more"):
        backends.choose_backend("auto", -1)
    assert backends.choose_backend("onnxruntime", "auto").notes == ("ONNX Runtime CUDA skipped: no NVIDIA driver "
                                                                    "(libcuda not found)",)
    with pytest.raises(DeviceError, match="device cuda:3 asked for, but this machine has no CUDA device"):
        backends.choose_backend("onnxruntime", 3)
    monkeypatch.setattr(devices, "cuda_device_count", lambda: (2, ""))
    choice = backends.choose_backend("auto", "cuda")
    assert (choice.backend, str(choice.device)) == ("onnxruntime", "cuda:0")
    assert choice.notes[0].startswith("TensorRT skipped: TensorRT cannot be imported")
    assert str(backends.choose_backend("onnxruntime", 1).device) == "cuda:1"
    with pytest.raises(DeviceError, match=r"only 2 CUDA device\(s\) are visible \(cuda:0 … cuda:1\)"):
        backends.choose_backend("onnxruntime", "cuda:2")


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
    monkeypatch.setattr(devices, "cuda_device_count", lambda: (1, ""))
    monkeypatch.setattr(trt_backend, "_PRIMARY_CONTEXTS", {})
    monkeypatch.setattr(trt_backend, "tensorrt_cuda", lambda trt: "cuda13")  # see test_tensorrt_cuda_build
    monkeypatch.setattr(fake_trt.Builder, "half_layers", 5)
    monkeypatch.setattr(fake_trt.Builder, "fail_with", None)
    monkeypatch.setattr(fake_trt.Runtime, "build", "cuda13")
    fake_trt.MEMORY.clear()
    fake_trt.STATS.clear()
    fake_trt.STATS.update(builds=0, enqueues=0, graph_launches=0, pushes=0, pops=0, flags_set=0)
    return trt


@pytest.fixture
def toy(tmp_path):
    return build_model(tmp_path / "toy.onnx", with_probs=True, precision="fp16", external_data=True)


def _trt(cache, **options) -> TensorRTOptions:
    """The TensorRT options of a test: its engine cache, and ``options``."""
    return TensorRTOptions(engine_cache=cache, **options)


def _frames(n, h=6, w=9, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_build_then_cache_then_run(fake_gpu, toy, tmp_path):
    cache = tmp_path / "engines"
    with Segmenter(toy, max_frame=(12, 8), max_batch=2, with_probs=True, tensorrt=_trt(cache)) as seg:
        assert seg.backend == "tensorrt" and seg.providers == ("TensorRT",) and seg.notes == ()
        info = seg.describe()
        assert info["engine"]["built"] and info["engine"]["half_layers"] == 5 and info["engine"]["layers"] == 8
        assert info["gpu"] == "Fake GPU 9000" and info["compute_capability"] == "8.9"
        assert info["tensorrt_cuda"] == "cuda13"
        frames = _frames(5)
        np.testing.assert_array_equal(seg(frames[0]), expected_labels(frames[0]))
        labels, probs = seg.predict_batch(frames, probs=True)  # 5 frames, max_batch 2: three engine calls
        np.testing.assert_array_equal(labels, expected_labels(frames))
        assert probs.shape == (5, 19, 6, 9) and np.all(probs.argmax(1) == labels)
        assert fake_trt.STATS["enqueues"] == 4
        with pytest.raises(UsageError, match="larger than max_frame 12×8"):
            seg(_frames(1, 9, 9)[0])
    plan = json.loads(Path(info["engine"]["path"]).read_bytes())
    assert plan["strongly_typed"] == 1 << 1  # 1 << STRONGLY_TYPED (1 in the fake)
    assert plan["tf32_cleared"] and plan["workspace"] == 4096 << 20
    # Tuned for one frame per call at the largest frame size; batches up to 2 are accepted.
    assert plan["profile"] == {"input": "image", "min": [1, 1, 1, 3], "opt": [1, 8, 12, 3], "max": [2, 8, 12, 3]}
    assert set(plan["outputs"]) == {"labels", "probs"}
    assert fake_trt.STATS["flags_set"] == 0  # no precision flag, ever
    assert fake_trt.MEMORY == {} and fake_trt.STATS["pushes"] == fake_trt.STATS["pops"]

    with Segmenter(toy, backend="tensorrt", max_frame=(12, 8), max_batch=2, with_probs=True,
                   tensorrt=_trt(cache)) as again:
        assert not again.describe()["engine"]["built"]
        np.testing.assert_array_equal(again(frames[1]), expected_labels(frames[1]))
    assert fake_trt.STATS["builds"] == 1
    with Segmenter(toy, max_frame=(16, 8), tensorrt=_trt(cache)) as other_profile:
        engine = other_profile.describe()["engine"]
    assert engine["built"]
    plan = json.loads(Path(engine["path"]).read_bytes())
    assert plan["timing_cache"] == "+"  # the first build's timing cache was reused


def test_probs_are_neither_computed_nor_bound_unless_asked_for(fake_gpu, toy, tmp_path):
    """The default engine has only ``labels``: ``probs`` is unmarked before the build, so no device buffer of
    max_batch × 19 × H × W × 4 bytes exists and nothing writes one; asking for it then names the fix."""
    with Segmenter(toy, max_frame=(12, 8), max_batch=2, tensorrt=_trt(tmp_path / "e")) as seg:
        info = seg.describe()
        assert fake_trt.MEMORY and all(len(buf) < 2 * 8 * 12 * 19 * 4 for buf in fake_trt.MEMORY.values())
        assert sorted(len(buf) for buf in fake_trt.MEMORY.values()) == [2 * 8 * 12 * 3, 2 * 8 * 12 * 4]
        frame = _frames(1)[0]
        np.testing.assert_array_equal(seg(frame), expected_labels(frame))
        with pytest.raises(UsageError, match="with_probs=True"):
            seg(frame, probs=True)
    assert set(json.loads(Path(info["engine"]["path"]).read_bytes())["outputs"]) == {"labels"}
    with Segmenter(toy, max_frame=(12, 8), max_batch=2, with_probs=True, tensorrt=_trt(tmp_path / "e")) as seg:
        assert seg.describe()["engine"]["built"]  # another key: an engine with probs
    with pytest.raises(UsageError, match="has no 'probs' output"):
        Segmenter(build_model(tmp_path / "labels-only.onnx"), with_probs=True, tensorrt=_trt(tmp_path / "e"))


def test_uint8_labels_are_refused_by_tensorrt_and_auto_runs_onnxruntime(fake_gpu, tmp_path):
    from onnx import TensorProto

    model = build_model(tmp_path / "u8.onnx", label_dtype=TensorProto.UINT8)
    with pytest.raises(EngineError, match="uint8 labels.*unverified.*int32"):
        Segmenter(model, backend="tensorrt", tensorrt=_trt(tmp_path / "e"))
    with Segmenter(model, tensorrt=_trt(tmp_path / "e")) as seg:  # auto
        assert seg.backend == "onnxruntime" and "TensorRT failed" in seg.notes[0] and "uint8" in seg.notes[0]
        frame = _frames(1)[0]
        labels = seg(frame)
    assert labels.dtype == np.uint8 and np.array_equal(labels, expected_labels(frame))
    assert fake_trt.STATS["builds"] == 0


def test_auto_falls_back_to_onnxruntime_when_the_build_fails(fake_gpu, toy, tmp_path, monkeypatch):
    monkeypatch.setattr(fake_trt.Builder, "fail_with", "Requested amount of GPU memory could not be allocated")
    with pytest.raises(EngineError, match="failed to build.*could not be allocated.*backend='onnxruntime'") as err:
        Segmenter(toy, backend="tensorrt", tensorrt=_trt(tmp_path / "e"))
    assert "workspace" not in str(err.value)  # the logged error is the reason, not a guessed one
    assert fake_trt.MEMORY == {} and fake_trt.STATS["pushes"] == fake_trt.STATS["pops"]
    with Segmenter(toy, tensorrt=_trt(tmp_path / "e")) as seg:  # auto
        assert seg.backend == "onnxruntime" and seg.providers == ("CPUExecutionProvider",)
        assert "TensorRT failed, so ONNX Runtime runs instead" in seg.notes[0]
        assert "could not be allocated" in seg.notes[0]
        frame = _frames(1)[0]
        np.testing.assert_array_equal(seg(frame), expected_labels(frame))


def test_an_export_that_transposes_the_uint8_frame_is_refused_before_parsing(fake_gpu, tmp_path):
    """TensorRT's UINT8 rule: the uint8 input must feed a Cast directly; an older export read it with a Transpose."""
    old = build_model(tmp_path / "old.onnx", cast_first=False)
    with pytest.raises(EngineError, match=r"reads its uint8 'image' with Transpose 'permute'.*Re-export"):
        Segmenter(old, backend="tensorrt", tensorrt=_trt(tmp_path / "e"))
    assert fake_trt.STATS["builds"] == 0
    with Segmenter(old, tensorrt=_trt(tmp_path / "e")) as seg:  # auto
        assert seg.backend == "onnxruntime" and "Transpose" in seg.notes[0]
        frame = _frames(1)[0]
        np.testing.assert_array_equal(seg(frame), expected_labels(frame))


def test_a_plan_of_another_tensorrt_build_is_rebuilt_not_called_corrupt(fake_gpu, toy, tmp_path, monkeypatch):
    cache = tmp_path / "engines"
    with Segmenter(toy, max_frame=(12, 8), tensorrt=_trt(cache)):
        pass
    monkeypatch.setattr(fake_trt.Runtime, "build", "cuda12")  # same version string, other build, intact file
    with pytest.raises(EngineError, match="intact but TensorRT 11.4.0.106 .* built by another TensorRT build") as err:
        Segmenter(toy, backend="tensorrt", max_frame=(12, 8), tensorrt=_trt(cache, build=False))
    assert "corrupt" not in str(err.value) and "built by TensorRT for cuda13" in str(err.value)
    with Segmenter(toy, max_frame=(12, 8), tensorrt=_trt(cache)) as seg:
        assert seg.describe()["engine"]["built"] and "built by another TensorRT build" in seg.notes[0]
        assert seg.notes[0].endswith("rebuilt it")


def test_build_engine_cli_tunes_for_the_opt_frame_and_batch(fake_gpu, toy, tmp_path, capsys):
    from ftadapt.cli import main

    out = tmp_path / "engine.json"
    main(["build-engine", str(toy), "--cache", str(tmp_path / "e"), "--max-frame", "12x8", "--max-batch", "4",
          "--opt-frame", "9x6", "--opt-batch", "2", "--probs", "--json", str(out)])
    info = json.loads(out.read_text())
    assert info["profile"] == {"min": [1, 1, 1, 3], "opt": [2, 6, 9, 3], "max": [4, 8, 12, 3]}
    assert info["with_probs"] and info["engine"]["built"]
    assert "tuned for 2 × 9x6" in capsys.readouterr().out
    with Segmenter(toy, max_frame=(12, 8), max_batch=4, with_probs=True,
                   tensorrt=_trt(tmp_path / "e", opt_frame=(9, 6), opt_batch=2)) as seg:
        assert not seg.describe()["engine"]["built"]  # the same key: the CLI's engine is reused
    # The deprecated (H, W) sizes and flat keywords of earlier releases still give the very same engine.
    with pytest.warns(DeprecationWarning) as caught:
        old = Segmenter(toy, engine_cache=tmp_path / "e", max_size=(8, 12), max_batch=4, opt_size=(6, 9), opt_batch=2,
                        with_probs=True)
    with old:
        assert not old.describe()["engine"]["built"] and old.max_frame == (12, 8)
    assert "pass tensorrt=TensorRTOptions(opt_frame=(9, 6)) (W, H)" in {str(w.message).split("; ")[1] for w in caught}
    assert fake_trt.STATS["builds"] == 1


def test_tensorrt_cuda_build(monkeypatch, tmp_path):
    """The cache key's CUDA build: from the pip distribution of this TensorRT version, else from the CUDA runtime
    library mapped into the process, else unknown."""
    trt = fake_trt.tensorrt_module("10.16.1.11")
    dist = lambda name, version: types.SimpleNamespace(metadata={"Name": name}, version=version)  # noqa: E731
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f10 r-xp 00 08:01 1 /opt/venv/nvidia/cu12/lib/libcudart.so.12\n")
    monkeypatch.setattr(trt_api, "PROC_MAPS", maps)
    installed = [dist("tensorrt_cu13_bindings", "10.16.1.11"), dist("tensorrt-cu12", "10.12.0.36"), dist("numpy", "2")]
    monkeypatch.setattr(trt_api.importlib.metadata, "distributions", lambda: installed)
    assert trt_api.tensorrt_cuda(trt) == "cuda13"  # the cu12 one is another TensorRT version
    installed[:] = []
    assert trt_api.tensorrt_cuda(trt) == "cuda12"  # a tar install: the CUDA runtime it loaded
    maps.write_text("7f00-7f10 r-xp 00 08:01 1 /usr/lib/libc.so.6\n")
    assert trt_api.tensorrt_cuda(trt) == "unknown"


def test_corrupt_stale_and_missing_engines_are_never_run(fake_gpu, toy, tmp_path):
    cache = tmp_path / "engines"
    with Segmenter(toy, max_frame=(12, 8), tensorrt=_trt(cache)) as seg:
        path = Path(seg.describe()["engine"]["path"])
    path.write_bytes(b"garbage")
    with pytest.raises(EngineError, match=r"corrupt\. Build it with `ftadapt build-engine"):
        Segmenter(toy, backend="tensorrt", max_frame=(12, 8), tensorrt=_trt(cache, build=False))
    with Segmenter(toy, max_frame=(12, 8), tensorrt=_trt(cache)) as seg:
        assert seg.describe()["engine"]["built"] and "corrupt; rebuilt it" in seg.notes[0]
    assert fake_trt.STATS["builds"] == 2

    build_model(toy, weights=np.eye(19, 3, dtype=np.float32)[:, :, None, None] * 2, precision="fp16",
                with_probs=True, external_data=True)  # new weights: a new key, the old engine is stale
    with pytest.raises(EngineError, match="no engine for this model"):
        Segmenter(toy, backend="tensorrt", max_frame=(12, 8), tensorrt=_trt(cache, build=False))


def test_fp16_export_without_half_layers_is_refused(fake_gpu, toy, tmp_path, monkeypatch):
    monkeypatch.setattr(fake_trt.Builder, "half_layers", 0)
    with pytest.raises(EngineError, match="none of the engine's 3 layers runs in half"):
        Segmenter(toy, backend="tensorrt", tensorrt=_trt(tmp_path / "engines"))
    assert not list((tmp_path / "engines").glob("*.engine"))
    fp32 = build_model(tmp_path / "fp32.onnx", precision="fp32")
    with Segmenter(fp32, tensorrt=_trt(tmp_path / "engines")) as seg:  # an FP32 export may have no half layers
        assert seg.describe()["engine"]["half_layers"] == 0


def test_parser_errors_are_reported(fake_gpu, tmp_path):
    model = build_model(tmp_path / "unparseable.onnx")
    with pytest.raises(EngineError, match=r"cannot parse .*unsupported operator"):
        Segmenter(model, backend="tensorrt", tensorrt=_trt(tmp_path / "engines"))


def test_cuda_graph_is_dropped_and_captured_again_when_the_shape_changes(fake_gpu, toy, tmp_path):
    """A graph freezes the shape it was captured with (the fake's replays too): a new frame size must not replay it."""
    with Segmenter(toy, max_frame=(12, 8), tensorrt=_trt(tmp_path / "e", cuda_graph=True)) as seg:
        small, large = _frames(3, 6, 9, seed=3), _frames(3, 8, 12, seed=4)
        results = [seg(f) for f in small] + [seg(f) for f in large] + [seg(small[0])]
    for frame, labels in zip([*small, *large, small[0]], results):
        np.testing.assert_array_equal(labels, expected_labels(frame))
    # Per size: one plain enqueue, a capture, then replays (6×9: 2; 8×12: 2; 6×9 again: a plain enqueue).
    assert fake_trt.STATS["graph_launches"] == 4 and fake_trt.STATS["enqueues"] == 3 + 4


def test_a_failing_enqueue_during_capture_is_the_error_reported(fake_gpu, monkeypatch):
    from ftadapt.runtime.trt_cuda_graph import TrtCudaGraph

    rt = sys.modules["cuda.bindings.runtime"]
    end = rt.cudaStreamEndCapture
    monkeypatch.setattr(rt, "cudaStreamEndCapture", lambda stream: (end(stream), (901, None))[1])  # invalidated

    def enqueue():
        raise EngineError("TensorRT failed to enqueue the engine: an illegal memory access")

    with pytest.raises(EngineError, match="failed to enqueue the engine: an illegal memory access"):
        TrtCudaGraph(7, enqueue)
    assert fake_trt.CAPTURE == []  # the capture was ended all the same


def test_cuda_graph_replays_static_shapes(fake_gpu, toy, tmp_path):
    with Segmenter(toy, max_frame=(9, 6), min_frame=(9, 6), tensorrt=_trt(tmp_path / "e", cuda_graph=True)) as seg:
        frames = _frames(3, seed=1)
        results = [seg(f) for f in frames]
        with pytest.raises(UsageError, match="smaller than min_frame 9×6"):
            seg(_frames(1, 5, 9)[0])
    for frame, labels in zip(frames, results):
        np.testing.assert_array_equal(labels, expected_labels(frame))
    assert fake_trt.STATS["graph_launches"] == 2  # first call plain, then capture, then replays


def test_failed_capture_falls_back_to_plain_enqueues(fake_gpu, toy, tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules["cuda.bindings.runtime"], "cudaStreamBeginCapture", lambda s, m: (901,))
    with Segmenter(toy, max_frame=(9, 6), min_frame=(9, 6), tensorrt=_trt(tmp_path / "e", cuda_graph=True)) as seg:
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

    seg = Segmenter(toy, max_frame=(8, 8), tensorrt=_trt(tmp_path / "e"))
    assert fake_trt.MEMORY
    del seg
    gc.collect()
    assert fake_trt.MEMORY == {} and fake_trt.STATS["pushes"] == fake_trt.STATS["pops"]


def test_argument_errors(fake_gpu, toy, tmp_path):
    with pytest.raises(UsageError, match="pycuda.driver.Stream"):
        Segmenter(toy, tensorrt=_trt(tmp_path, stream=3))
    with pytest.raises(UsageError, match=r"OnnxRuntimeOptions\(providers=…\) configures ONNX Runtime"):
        Segmenter(toy, backend="tensorrt", onnxruntime=OnnxRuntimeOptions(providers=["CPUExecutionProvider"]),
                  tensorrt=_trt(tmp_path))
    seg = Segmenter(toy, max_frame=(8, 8), tensorrt=_trt(tmp_path / "e"))
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
                 "ParserError", "ILogger"):
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


def test_device_timing_brackets_the_inference_with_cuda_events(fake_gpu, toy, tmp_path):
    """``device_timing``: two events on the Segmenter's stream around the enqueue (or the graph launch), so the
    copies are not in it; ``last_device_ms`` sums a call's engine runs. The fake device spends 2.5 ms per frame."""
    from ftadapt.bench.latency import time_runner
    from ftadapt.bench.runners import SegmenterRunner

    ms = fake_trt.DEVICE_MS_PER_FRAME
    with Segmenter(toy, max_frame=(12, 8), max_batch=2, tensorrt=_trt(tmp_path / "e", device_timing=True)) as seg:
        assert seg.last_device_ms is None
        seg.predict_batch(_frames(2))
        assert seg.last_device_ms == 2 * ms
        seg.predict_batch(_frames(3))  # max_batch 2: two engine runs in one call
        assert seg.last_device_ms == 3 * ms
        stats = time_runner(SegmenterRunner(seg, owned=False), list(_frames(2)), batch=2, warmup=1, runs=3)
        assert stats["device_time"] == {"p50_ms": 2 * ms, "p90_ms": 2 * ms, "p99_ms": 2 * ms, "mean_ms": 2 * ms}
    with Segmenter(toy, max_frame=(12, 8), max_batch=2,
                   tensorrt=_trt(tmp_path / "e", device_timing=True, cuda_graph=True)) as graphed:
        for _ in range(3):  # enqueue, capture, then replays: each timed alike
            graphed.predict_batch(_frames(1))
            assert graphed.last_device_ms == ms
        assert fake_trt.STATS["graph_launches"] >= 1
    with Segmenter(toy, max_frame=(12, 8), tensorrt=_trt(tmp_path / "e")) as untimed:
        untimed(_frames(1)[0])
        assert untimed.last_device_ms is None
