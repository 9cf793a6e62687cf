"""The Segmenter on ONNX Runtime's CPU provider with tiny contract-honouring models (``tests/onnx_models.py``):
labels against hand-computed values, frame validation messages (W×H), metadata and contract checks, devices,
providers, the options dataclasses and the deprecated keywords, threads, thread safety, the backend interface, and the
torch-free, onnx-free reader of exported files."""
from __future__ import annotations

import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from onnx_models import build_model, expected_labels

from ftadapt import devices
from ftadapt.artifact import ArtifactError
from ftadapt.devices import DeviceError
from ftadapt.errors import UsageError
from ftadapt.labels import PALETTE
from ftadapt.runtime import BackendUnavailable, OnnxRuntimeOptions, Segmenter, TensorRTOptions
from ftadapt.runtime.backends import Backend
from ftadapt.runtime.onnx_file import read_model_file
from ftadapt.runtime.ort_backend import OrtBackend
from ftadapt.runtime.trt_backend import TrtBackend

CPU = {"backend": "onnxruntime", "device": "cpu"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("models") / "toy.onnx", with_probs=True)


@pytest.fixture(scope="module")
def seg(model):
    with Segmenter(model, **CPU, with_probs=True) as s:
        yield s


def _frame(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_labels_by_hand(seg):
    frame = np.zeros((2, 3, 3), dtype=np.uint8)
    frame[0, 0] = (200, 10, 10)   # red wins → class 0
    frame[0, 1] = (0, 90, 20)     # green → 1
    frame[0, 2] = (5, 5, 250)     # blue → 2
    frame[1, :] = (7, 7, 7)       # a tie → the first channel, class 0
    labels = seg(frame)
    assert labels.dtype == np.int32 and labels.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_batches_probs_and_sizes(seg):
    frames = np.stack([_frame(seed=i) for i in range(3)])
    np.testing.assert_array_equal(seg.predict_batch(frames), expected_labels(frames))
    np.testing.assert_array_equal(seg.predict_batch(list(frames)), expected_labels(frames))
    labels, probs = seg(frames[0], probs=True)
    assert probs.shape == (19, 5, 7) and np.allclose(probs.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(0), labels)
    big = _frame(33, 65)  # any size: the graph's input is dynamic
    np.testing.assert_array_equal(seg(big), expected_labels(big))


def test_metadata_classes_palette_and_colorize(seg):
    assert seg.classes[0] == "road" and len(seg.classes) == 19 and seg.metadata.precision == "fp32"
    assert seg.palette.shape == (19, 3) and seg.palette[13].tolist() == list(PALETTE[13])
    colours = seg.colorize(np.array([[0, 13], [255, 40]], dtype=np.int32))
    assert colours.tolist() == [[list(PALETTE[0]), list(PALETTE[13])], [[0, 0, 0], [0, 0, 0]]]
    with pytest.raises(UsageError, match="integer label map"):
        seg.colorize(np.zeros((2, 2), dtype=np.float32))


def test_backend_and_providers_are_reported(seg):
    assert seg.backend == "onnxruntime" and seg.providers == ("CPUExecutionProvider",)
    info = seg.describe()
    assert info["execution_device"] == "cpu" and info["members"] == ["toy"] and info["device"] == "cpu"
    assert info["notes"] == []  # the backend was named, so nothing was passed over
    assert "backend='onnxruntime'" in repr(seg)


def test_both_backends_implement_the_one_interface(seg):
    """No duck typing: the Segmenter calls what ``Backend`` declares, and a backend that leaves out a part of it
    cannot be created."""
    assert issubclass(OrtBackend, Backend) and issubclass(TrtBackend, Backend)
    assert isinstance(seg._impl, OrtBackend) and seg._impl.device_ms() is None and seg.last_device_ms is None
    seg(_frame())
    assert seg.last_device_ms is None  # ONNX Runtime exposes no device time

    class Partial(Backend):
        name = "partial"

        def run(self, batch, outputs=("labels",)):
            return {}

    with pytest.raises(TypeError, match="abstract"):
        Partial()


@pytest.mark.parametrize("frame, message", [
    (None, "frame is None; expected a uint8 RGB array of shape"),
    ([[1, 2, 3]], "frame is a list"),
    (np.zeros((4, 4, 3), np.float32), r"dtype float32.*\(frame \* 255\)"),
    (np.zeros((4, 4), np.uint8), "single-channel"),
    (np.zeros((2, 4, 4, 3), np.uint8), "a batch; pass one"),
    (np.zeros((4, 4, 4), np.uint8), r"4 channels.*drop alpha"),
    (np.zeros((0, 4, 3), np.uint8), "is empty"),
    (np.zeros((4, 4, 3, 1, 1), np.uint8), "expected a uint8 RGB array"),
])
def test_bad_frames_are_value_errors_that_say_what_was_expected(seg, frame, message):
    with pytest.raises(ValueError, match=message) as info:
        seg(frame)
    assert isinstance(info.value, UsageError)


def test_bad_batches(seg):
    with pytest.raises(UsageError, match=r"frames\[1\] is 7×6 but frames\[0\] is 7×5 \(W×H\)"):
        seg.predict_batch([_frame(), _frame(6, 7)])
    with pytest.raises(UsageError, match="frames is empty"):
        seg.predict_batch([])
    with pytest.raises(UsageError, match=r"frames\[1\] has dtype int64"):
        seg.predict_batch([_frame(), _frame().astype(np.int64)])
    with pytest.raises(UsageError, match="the batch is empty"):
        seg.predict_batch(np.zeros((0, 4, 4, 3), np.uint8))


def test_non_contiguous_frames_are_copied(seg):
    base = _frame(10, 14)
    view = base[::2, ::2]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(seg(view), expected_labels(view))
    bgr_view = base[..., ::-1]
    np.testing.assert_array_equal(seg(bgr_view), expected_labels(bgr_view))


def test_max_frame_limits_frames_in_w_by_h(model):
    with Segmenter(model, max_frame=(6, 4), **CPU) as small:  # (W, H): frames up to 6 wide and 4 high
        assert small.max_frame == (6, 4) and small.describe()["max_frame"] == (6, 4)
        assert small(_frame(4, 6)).shape == (4, 6)
        with pytest.raises(UsageError, match="7×5 \\(W×H\\), larger than max_frame 6×4"):
            small(_frame())  # 5 high, 7 wide
        with pytest.raises(UsageError, match=r"frames\[0\] is 7×5 \(W×H\), larger than max_frame 6×4"):
            small.predict_batch([_frame()])
    with Segmenter(model, max_frame=(7, 5), min_frame=(7, 2), **CPU) as tall, \
            pytest.raises(UsageError, match="6×5 \\(W×H\\), smaller than min_frame 7×2"):
        tall(_frame(5, 6))


def test_onnx_runtime_has_a_default_frame_limit_that_bounds_its_memory(seg, model):
    """Issue 16, case 11: ONNX Runtime took any frame (8000×8000: 6.9 GB; 16k×16k would exhaust 24 GB); it now has
    TensorRT's configurable max_frame, 4096×4096 by default, and refuses a larger frame before running it."""
    assert seg.max_frame == (4096, 4096) and seg.describe()["max_frame"] == (4096, 4096)
    wide = np.zeros((1, 4097, 3), np.uint8)
    with pytest.raises(UsageError, match=r"4097×1 \(W×H\), larger than max_frame 4096×4096 .*max_frame=\(4097, 1\) "
                                         r"or larger \(ONNX Runtime needs about 110 bytes of memory per pixel\)"):
        seg(wide)
    with Segmenter(model, max_frame=(5000, 1), **CPU) as panorama:
        assert panorama(wide).shape == (1, 4097)


def test_the_old_keywords_work_for_one_release_and_say_what_to_write_instead(model):
    """``max_size``/``min_size`` were (H, W) and the backend settings flat keywords: each still works, with a
    DeprecationWarning pointing at the caller's line that names the new spelling and the flipped value."""
    with pytest.warns(DeprecationWarning, match=r"Segmenter\(max_size=\(4, 6\)\) is deprecated .*pass "
                                                r"max_frame=\(6, 4\) \(W, H\)") as caught:
        old = Segmenter(model, max_size=(4, 6), **CPU)
    assert caught[0].filename == __file__
    with old:
        assert old.max_frame == (6, 4) and old(_frame(4, 6)).shape == (4, 6)
    with pytest.warns(DeprecationWarning) as caught:
        old = Segmenter(model, min_size=(2, 3), threads=1, cpu_fallback=True, engine_cache="unused", **CPU)
    assert sorted(str(w.message).split("; ")[1] for w in caught) == [
        "pass min_frame=(3, 2) (W, H)", "pass onnxruntime=OnnxRuntimeOptions(cpu_fallback=True)",
        "pass onnxruntime=OnnxRuntimeOptions(threads=1)", "pass tensorrt=TensorRTOptions(engine_cache='unused')"]
    with old:
        assert old.min_frame == (3, 2) and old._impl._session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(UsageError, match=r"give max_frame=\(W, H\) only; max_size is its deprecated \(H, W\)"):
        Segmenter(model, max_size=(4, 6), max_frame=(6, 4), **CPU)
    with pytest.raises(UsageError, match="OnnxRuntimeOptions settings once"), pytest.warns(DeprecationWarning):
        Segmenter(model, threads=2, onnxruntime=OnnxRuntimeOptions(threads=1), **CPU)
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_sise'"):
        Segmenter(model, max_sise=(4, 6), **CPU)


def test_threads_and_thread_safety(model):
    with Segmenter(model, onnxruntime=OnnxRuntimeOptions(threads=1), max_batch=2, **CPU) as seg:
        assert seg._impl._session.get_session_options().intra_op_num_threads == 1
        frames = [_frame(9, 11, seed=i) for i in range(8)]
        results: dict[int, np.ndarray] = {}

        def work(i):
            results[i] = seg(frames[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(np.array_equal(results[i], expected_labels(frames[i])) for i in range(8))
        np.testing.assert_array_equal(seg.predict_batch(frames[:5]), expected_labels(np.stack(frames[:5])))
    with pytest.raises(UsageError, match=r"OnnxRuntimeOptions\(threads=0\): expected a positive integer"):
        OnnxRuntimeOptions(threads=0)


def test_close_is_idempotent_and_final(model):
    seg = Segmenter(model, **CPU)
    seg.close()
    seg.close()
    assert "closed" in repr(seg)
    with pytest.raises(UsageError, match="Segmenter is closed"):
        seg(_frame())


def test_no_probs_output(tmp_path, model):
    with pytest.raises(UsageError, match="no 'probs' output; export it with `ftadapt export --probs`"):
        Segmenter(build_model(tmp_path / "m.onnx"), **CPU, with_probs=True)
    with Segmenter(model, **CPU) as seg, pytest.raises(UsageError, match="needs a Segmenter created with "
                                                                         "with_probs=True"):
        seg(_frame(), probs=True)  # one rule for both backends: TensorRT builds without probs unless asked


def test_external_data_model(tmp_path):
    path = build_model(tmp_path / "ext.onnx", external_data=True)
    info = read_model_file(path)
    assert [p.name for p in info.data_files] == ["ext.onnx.data"] and info.missing_files == ()
    with Segmenter(path, **CPU) as seg:
        frame = _frame()
        np.testing.assert_array_equal(seg(frame), expected_labels(frame))
    digest = info.sha256()
    (tmp_path / "ext.onnx.data").write_bytes((tmp_path / "ext.onnx.data").read_bytes()[::-1])
    assert read_model_file(path).sha256() != digest  # the data file is part of the engine-cache key
    (tmp_path / "ext.onnx.data").unlink()
    missing = read_model_file(path)  # listed, not refused: `ftadapt inspect` names it …
    assert missing.missing_files == missing.data_files and missing.info.precision == "fp32"
    with pytest.raises(ArtifactError, match="keeps its weights in 'ext.onnx.data', which is missing beside it"):
        Segmenter(path, **CPU)  # … but a model without its weights does not run
    with pytest.raises(ArtifactError, match="missing beside it"):
        missing.sha256()


def test_onnx_reader_sees_io_metadata_and_header(model, tmp_path):
    info = read_model_file(model)
    (tmp_path / "renamed.onnx").write_bytes(model.read_bytes())
    assert read_model_file(tmp_path / "renamed.onnx").sha256() == info.sha256()  # the name is not in the key
    assert [(t.name, t.dtype, t.dims) for t in info.inputs] == [("image", "uint8", ("N", "H", "W", 3))]
    assert [(t.name, t.dtype) for t in info.outputs] == [("labels", "int32"), ("probs", "float32")]
    assert info.metadata["ftadapt.precision"] == '"fp32"' and info.data_files == ()
    assert info.info.precision == "fp32" and info.info.members[0].name == "toy" and info.info.outputs[-1] == "probs"
    assert (info.opset, info.ir_version, info.producer, info.nodes) == (17, 8, "ftadapt-tests", 6)
    assert info.size_bytes == model.stat().st_size
    bare = read_model_file(build_model(tmp_path / "bare.onnx", metadata={}))
    with pytest.raises(ArtifactError, match="carries no ftadapt metadata"):
        assert bare.info


def test_the_reader_is_a_leaf_that_needs_neither_numpy_nor_onnx():
    """The export (which ranks below the runtime) and `ftadapt inspect` read files with it: importing it must not
    pull in the Segmenter, numpy, onnx or a backend."""
    code = ("import sys; import ftadapt.runtime.onnx_file; print(sorted(m for m in ('numpy', 'onnx', 'onnxruntime', "
            "'ftadapt.runtime.segmenter') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_model_file_errors(tmp_path):
    from onnx import TensorProto

    with pytest.raises(UsageError, match="no ONNX model at"):
        Segmenter(tmp_path / "missing.onnx", **CPU)
    with pytest.raises(UsageError, match="is a folder"):
        Segmenter(tmp_path, **CPU)
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 40)
    with pytest.raises(ArtifactError, match="not a valid ONNX file"):
        Segmenter(tmp_path / "junk.onnx", **CPU)
    good = build_model(tmp_path / "good.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(good[: len(good) // 2])
    with pytest.raises(ArtifactError, match="not a valid ONNX file"):
        Segmenter(tmp_path / "cut.onnx", **CPU)
    with pytest.raises(ArtifactError, match="not written by `ftadapt export`"):
        Segmenter(build_model(tmp_path / "bare.onnx", metadata={}), **CPU)
    with pytest.raises(ArtifactError, match="one input 'image', uint8"):
        Segmenter(build_model(tmp_path / "f.onnx", input_dtype=TensorProto.FLOAT), **CPU)
    with pytest.raises(ArtifactError, match="one input 'image'"):
        Segmenter(build_model(tmp_path / "n.onnx", input_name="frame"), **CPU)
    with pytest.raises(ArtifactError, match="needs 'labels', int32"):
        Segmenter(build_model(tmp_path / "l.onnx", label_dtype=TensorProto.INT64), **CPU)


def test_argument_errors(model):
    with pytest.raises(UsageError, match="backend='trt'"):
        Segmenter(model, backend="trt")
    with pytest.raises(UsageError, match="device 'gpu0': expected auto, cpu, cuda or cuda:N"):
        Segmenter(model, device="gpu0")
    with pytest.raises(UsageError, match=r"TensorRTOptions\(stream=…, cuda_graph=…\) apply to the TensorRT backend "
                                         r"only"):
        Segmenter(model, tensorrt=TensorRTOptions(cuda_graph=True), **CPU)
    with pytest.raises(UsageError, match=r"max_frame=\(0, 3\): expected \(W, H\)"):
        Segmenter(model, max_frame=(0, 3), **CPU)
    with pytest.raises(UsageError, match=r"tensorrt=OnnxRuntimeOptions\(.*expected a TensorRTOptions"):
        Segmenter(model, tensorrt=OnnxRuntimeOptions(), **CPU)
    with pytest.raises(UsageError, match=r"TensorRTOptions\(workspace_mb=0\)"):
        TensorRTOptions(workspace_mb=0)


def test_devices_are_spelled_as_everywhere_and_checked(model, monkeypatch):
    """``device`` takes ftadapt.devices' spellings, auto by default. A CUDA device named explicitly where there is
    none is an error naming the fix; ``backend="auto"`` runs on the CPU instead and says why."""
    monkeypatch.setattr(devices, "cuda_device_count", lambda: (0, "no NVIDIA driver (libcuda not found)"))
    with Segmenter(model, backend="onnxruntime") as seg:  # device="auto"
        assert seg.device == "cpu" and seg.notes == ("ONNX Runtime CUDA skipped: no NVIDIA driver (libcuda not "
                                                     "found)",)
    for device in ("cuda", "cuda:0", 0, devices.Device("cuda", 1)):
        with pytest.raises(DeviceError, match=r"asked for, but this machine has no CUDA device \(no NVIDIA driver "
                                              r"\(libcuda not found\)\); use --device cpu"):
            Segmenter(model, backend="onnxruntime", device=device)
    with Segmenter(model, device="cuda:0") as seg:  # backend="auto": the CPU, and why
        assert seg.backend == "onnxruntime" and seg.device == "cpu" and len(seg.notes) == 2
    monkeypatch.setattr(devices, "cuda_device_count", lambda: (1, ""))
    with pytest.raises(DeviceError, match=r"device cuda:3 asked for, but only 1 CUDA device\(s\) are visible"):
        Segmenter(model, device=3)


def test_missing_onnxruntime_names_the_package(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailable, match="pip install onnxruntime-gpu"):
        Segmenter(model, **CPU)


@pytest.mark.skipif(devices.cuda_device_count()[0] > 0, reason="on a GPU machine CUDA may really be obtained")
def test_a_gpu_provider_that_does_not_load_is_an_error_unless_the_cpu_fallback_is_allowed(model, monkeypatch):
    """The driver reports a GPU (faked), but this ONNX Runtime cannot load its CUDA provider: an error where the GPU
    was named, a warning where the CPU was allowed (cpu_fallback, device auto or cpu)."""
    monkeypatch.setattr(devices, "cuda_device_count", lambda: (1, ""))
    cuda = OnnxRuntimeOptions(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailable, match=r"could not load its CUDAExecutionProvider for device cuda:0 and "
                                                 r"would run on the CPU.*onnxruntime-gpu\[cuda,cudnn\].*device='cpu'"):
        Segmenter(model, backend="onnxruntime", device="cuda:0", onnxruntime=cuda)
    with pytest.warns(RuntimeWarning, match="did not give the requested CUDAExecutionProvider") as caught:
        seg = Segmenter(model, backend="onnxruntime", device=0,
                        onnxruntime=OnnxRuntimeOptions(providers=cuda.providers, cpu_fallback=True))
    assert caught[0].filename == __file__
    with seg:
        assert seg.providers == ("CPUExecutionProvider",) and "CUDAExecutionProvider" in seg.notes[-1]
        frame = _frame()
        np.testing.assert_array_equal(seg(frame), expected_labels(frame))
    for device in ("cpu", "auto"):  # the CPU asked for, or allowed: CUDA was only listed
        with pytest.warns(RuntimeWarning):
            Segmenter(model, backend="onnxruntime", device=device, onnxruntime=cuda).close()


class FakeOrt:
    """An onnxruntime stand-in recording the order of calls; its CUDA provider "loads" only after preload_dlls(), and
    a CUDA session computes on the CPU (its IO binding puts every "cuda" buffer in host memory)."""

    def __init__(self, *, can_preload: bool = True) -> None:
        import onnxruntime

        self.calls: list[str] = []
        self.real, self.SessionOptions, self.__version__ = onnxruntime, onnxruntime.SessionOptions, "x"
        self.OrtValue = types.SimpleNamespace(
            ortvalue_from_numpy=lambda array, kind, index: onnxruntime.OrtValue.ortvalue_from_numpy(array, "cpu", 0))
        if can_preload:
            self.preload_dlls = lambda: self.calls.append("preload_dlls") or print("\x1b[33mWARNING: cuDNN 9 not "
                                                                                    "found\x1b[0m")

    def InferenceSession(self, path, sess_options=None, providers=()):
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        self.calls.append(f"session {names}")
        session = self.real.InferenceSession(path, sess_options=sess_options, providers=["CPUExecutionProvider"])
        loaded = "preload_dlls" in self.calls and "CUDAExecutionProvider" in names

        def io_binding():
            binding = session.io_binding()
            return types.SimpleNamespace(bind_ortvalue_input=binding.bind_ortvalue_input,
                                         bind_output=lambda name, kind, index: binding.bind_output(name, "cpu", 0),
                                         get_outputs=binding.get_outputs, real=binding)

        return types.SimpleNamespace(
            get_providers=lambda: (["CUDAExecutionProvider"] if loaded else []) + ["CPUExecutionProvider"],
            get_outputs=session.get_outputs, io_binding=io_binding,
            run_with_iobinding=lambda binding: session.run_with_iobinding(binding.real))


def test_gpu_libraries_are_preloaded_before_a_cuda_session_is_created(model, monkeypatch):
    """``ftadapt.runtime`` imports no torch, so nothing has put the nvidia-* wheels' CUDA libraries on the loader's
    path: onnxruntime.preload_dlls() must run before the session that asks for CUDA — and only then."""
    fake = FakeOrt()
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    monkeypatch.setattr(devices, "cuda_device_count", lambda: (1, ""))
    seg = Segmenter(model, backend="onnxruntime", device=0)
    assert fake.calls == ["preload_dlls", "session ['CUDAExecutionProvider', 'CPUExecutionProvider']"]
    assert seg.providers[0] == "CUDAExecutionProvider"
    assert seg.notes == ("onnxruntime.preload_dlls(): WARNING: cuDNN 9 not found",)  # what it printed, uncoloured
    seg.close()
    fake.calls.clear()
    Segmenter(model, backend="onnxruntime", device="cpu").close()
    assert fake.calls == ["session ['CPUExecutionProvider']"]  # no GPU provider asked for: nothing preloaded


def test_without_preload_dlls_a_cuda_provider_that_does_not_load_is_an_error(model, monkeypatch):
    fake = FakeOrt(can_preload=False)  # an ONNX Runtime older than 1.21
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    monkeypatch.setattr(devices, "cuda_device_count", lambda: (1, ""))
    with pytest.raises(BackendUnavailable, match="could not load its CUDAExecutionProvider"):
        Segmenter(model, backend="onnxruntime", device=0)
    assert fake.calls == ["session ['CUDAExecutionProvider', 'CPUExecutionProvider']"]
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # auto without TensorRT: ONNX Runtime, CPU allowed
    with pytest.warns(RuntimeWarning, match="did not give the requested CUDAExecutionProvider"):
        seg = Segmenter(model, device=0)
    with seg:
        assert seg.backend == "onnxruntime" and seg.providers == ("CPUExecutionProvider",)


def test_auto_without_gpu_uses_the_cpu(model):
    if devices.cuda_device_count()[0] > 0:
        pytest.skip("this machine has a GPU")
    with Segmenter(model) as seg:
        assert seg.backend == "onnxruntime" and seg.providers == ("CPUExecutionProvider",) and seg.device == "cpu"
        assert any(n.startswith("TensorRT skipped") for n in seg.notes)
        assert any(n.startswith("ONNX Runtime CUDA skipped") for n in seg.notes)
