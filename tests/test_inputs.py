"""Careless inputs get one clear line, never a wrong result or a crash: images of more than 8 bits per sample are
scaled (not clipped), ensemble weights near the float limit, meta.json fields of the wrong type, a figure suffix that
is not PNG, sizes that cannot fit in memory, negative seeds, an unsafe pickle (no torch warning before the refusal)
and a resume after the newest checkpoint was deleted."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from cli_runs import exit_code
from datatrees import write_png16
from onnx_models import build_model
from PIL import Image
from test_ensemble import make_member
from train_runs import run

from ftadapt import machine
from ftadapt.checkpoint import load_checkpoint
from ftadapt.config import SEED_MAX, build_config
from ftadapt.ensemble import Ensemble, load_ensemble
from ftadapt.errors import CheckpointError, DatasetError, UsageError
from ftadapt.imageio import read_rgb, read_rgb_pil
from ftadapt.run_folder import resolve_checkpoint
from ftadapt.runtime.frames import check_frame
from ftadapt.safe_load import torch_load_bytes


def _run(capsys, argv) -> tuple[int, str]:
    """Exit code and stderr of ``ftadapt ARGV`` run in-process."""
    code = exit_code(argv)
    return code, capsys.readouterr().err


def _one_line(err: str) -> str:
    """The error a command printed: exactly one line, no traceback."""
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# 1. Images of more than 8 bits per sample -----------------------------------------------------------------------

def _scaled(samples: np.ndarray) -> np.ndarray:
    """round(v · 255 / 65535), computed in floats, as the expected 8-bit value of 16-bit samples."""
    return np.rint(samples.astype(np.float64) * 255 / 65535).astype(np.uint8)


def _samples16(shape, seed=0) -> np.ndarray:
    values = np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)
    values.flat[:4] = [0, 128, 32896, 65535]  # 0, 0.498 → 0, 128.0 → 128, 255
    return values


# The seven Adam7 passes: first column and row, column and row step.
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _write_png16_plain(path, samples: np.ndarray, *, interlace: bool = False) -> None:
    """A 16-bit PNG of (H, W, C) samples — C 2 (gray+alpha, which ``write_png16`` does not write), 3 or 4 —
    optionally Adam7-interlaced, rows unfiltered (independent of the reader under test)."""
    h, w, c = samples.shape
    raw = b""
    for x0, y0, dx, dy in ADAM7 if interlace else ((0, 0, 1, 1),):
        part = samples[y0::dy, x0::dx]
        rows = part.astype(">u2").reshape(part.shape[0], -1).view(np.uint8)
        raw += b"".join(b"\x00" + row.tobytes() for row in rows) if part.size else b""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {2: 4, 3: 2, 4: 6}[c], 0, 0, int(interlace))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_16_bit_pngs_are_scaled_to_8_bits_not_clipped(tmp_path):
    gray = _samples16((5, 7))
    rgb = np.stack([gray, _samples16((5, 7), 1), _samples16((5, 7), 2)], axis=-1)
    write_png16(tmp_path / "gray.png", gray)
    write_png16(tmp_path / "rgb.png", rgb)
    write_png16(tmp_path / "rgba.png", np.concatenate([rgb, _samples16((5, 7, 1), 3)], axis=-1))
    _write_png16_plain(tmp_path / "la.png", np.stack([gray, _samples16((5, 7), 4)], axis=-1))
    _write_png16_plain(tmp_path / "adam7.png", rgb, interlace=True)
    assert Image.open(tmp_path / "adam7.png").info.get("interlace") == 1
    expected = {"gray.png": np.repeat(_scaled(gray)[..., None], 3, axis=-1), "rgb.png": _scaled(rgb),
                "rgba.png": _scaled(rgb), "la.png": np.repeat(_scaled(gray)[..., None], 3, axis=-1),
                "adam7.png": _scaled(rgb)}
    for name, want in expected.items():
        got = read_rgb(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (5, 7, 3), name
        np.testing.assert_array_equal(got, want, err_msg=name)
        np.testing.assert_array_equal(np.asarray(read_rgb_pil(tmp_path / name)), want, err_msg=name)
    # the report's case: a 16-bit gray image of mid-tones is not 99.6 % white
    write_png16(tmp_path / "mid.png", np.full((4, 4), 30000, np.uint16))
    assert (read_rgb(tmp_path / "mid.png") == 117).all()  # 30000 · 255 / 65535 = 116.7


def test_16_bit_integer_and_float_modes_are_scaled_or_refused(tmp_path):
    samples = _samples16((3, 4))
    (tmp_path / "p.pgm").write_bytes(b"P5\n4 3\n65535\n" + samples.astype(">u2").tobytes())  # Pillow mode "I"
    assert Image.open(tmp_path / "p.pgm").mode == "I"
    Image.fromarray(samples).save(tmp_path / "i16.tif")  # mode "I;16"
    assert Image.open(tmp_path / "i16.tif").mode == "I;16"
    for name in ("p.pgm", "i16.tif"):
        np.testing.assert_array_equal(read_rgb(tmp_path / name), np.repeat(_scaled(samples)[..., None], 3, -1))
    floats = np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)
    Image.fromarray(floats).save(tmp_path / "f.tif")  # mode "F", samples in 0–1
    assert read_rgb(tmp_path / "f.tif")[0, :, 0].tolist() == [0, 64, 128, 255]
    Image.fromarray(floats * 300).save(tmp_path / "f300.tif")
    with pytest.raises(DatasetError, match=r"f300\.tif: floating-point samples from 0\.0 to 300\.0, outside 0–1.*"
                                           r"convert it to an 8-bit RGB image"):
        read_rgb(tmp_path / "f300.tif")
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "i32.tif")  # mode "I", beyond 16 bits
    with pytest.raises(DatasetError, match=r"i32\.tif: 32-bit integer samples from 0 to 70000, outside 0–65535"):
        read_rgb(tmp_path / "i32.tif")


def test_predict_scales_a_16_bit_gray_png(tmp_path, capsys):
    gray = _samples16((6, 10))
    write_png16(tmp_path / "in" / "frame.png", gray)
    model = build_model(tmp_path / "toy.onnx")
    code, err = _run(capsys, ["predict", "--model", model, tmp_path / "in", "--out", tmp_path / "out", "--backend",
                              "onnxruntime", "--device", "cpu", "--alpha", "0"])
    assert code == 0, err
    shown = np.asarray(Image.open(tmp_path / "out" / "frame_color.png"))  # alpha 0: the frame the model saw
    np.testing.assert_array_equal(shown, np.repeat(_scaled(gray)[..., None], 3, axis=-1))


def test_the_runtime_says_how_to_scale_a_16_bit_frame():
    with pytest.raises(UsageError, match=r"dtype uint16.*\* 255 \+ 32767\) // 65535"):
        check_frame(np.zeros((4, 4, 3), np.uint16))


# 2. Ensemble weights -------------------------------------------------------------------------------------------

def test_huge_ensemble_weights_are_normalised_without_overflow(tmp_path):
    a, b = make_member(tmp_path / "a", 0), make_member(tmp_path / "b", 1)
    huge = load_ensemble([f"{a}:1e308", f"{b}:1e308"])
    plain = load_ensemble([f"{a}:1", f"{b}:1"])
    assert huge.weights.tolist() == [0.5, 0.5] and [m.weight for m in huge.infos] == [0.5, 0.5]
    x = torch.randn(1, 3, 32, 48) * 50
    with torch.no_grad():
        torch.testing.assert_close(huge.fused(x), plain.fused(x), rtol=0, atol=0)
    assert Ensemble(list(plain.members), [1e308, 3e307]).weights.tolist() == pytest.approx([1 / 1.3, 0.3 / 1.3])


@pytest.mark.parametrize("weight", ["inf", "nan", "0", "-1"])
def test_ensemble_weights_must_be_finite_and_positive(tmp_path, capsys, weight):
    a = make_member(tmp_path / "a", 0)
    code, err = _run(capsys, ["export", "--ensemble", f"{a}:1", "--ensemble", f"{a}:{weight}", "--out",
                              tmp_path / "e.onnx"])
    assert code == 2 and "must be a positive number (finite, above 0)" in _one_line(err)
    assert not (tmp_path / "e.onnx").exists()


def test_a_weight_that_would_count_zero_is_refused(tmp_path):
    a, b = make_member(tmp_path / "a", 0), make_member(tmp_path / "b", 1)
    with pytest.raises(UsageError, match=r"weight 1e-300 is negligible beside the largest, 1e\+308"):
        load_ensemble([f"{a}:1e308", f"{b}:1e-300"])


# 3. meta.json field types --------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, words", [("step", "x", r'"x" \(a string\) but must be a whole number ≥ 0'),
                                                 ("method", 5, r"5 \(a whole number\) but must be a string or null"),
                                                 ("step", -3, r"-3 \(a whole number\) but must be a whole number"),
                                                 ("metrics", [1], r"\[1\] \(an array\) but must be an object"),
                                                 ("sha256", None, r"null but must be a string")])
def test_meta_fields_of_the_wrong_type_are_refused(tmp_path, field, value, words):
    path = make_member(tmp_path / "m", 0)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, field: value}))
    with pytest.raises(CheckpointError, match=rf"meta\.json: field '{field}' holds {words}.*correct it"):
        load_checkpoint(path)


def test_a_meta_field_of_the_wrong_type_stops_a_command_with_one_line(tmp_path, capsys):
    path = make_member(tmp_path / "m", 0)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "metrics": {"miou": "45"}}))
    with pytest.raises(CheckpointError, match=r"field 'metrics\.miou' holds \"45\" \(a string\) but must be a number"):
        load_ensemble([str(path)])
    code, err = _run(capsys, ["export", str(path), "--out", tmp_path / "m.onnx"])
    assert code == 1 and f"{path / 'meta.json'}: field 'metrics.miou'" in _one_line(err)
    assert not (tmp_path / "m.onnx").exists()


# 4. The figure's suffix names its format -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_member(tmp_path_factory.mktemp("tiny") / "tiny", 0, method="norm-only")


@pytest.mark.parametrize("name, magic, fmt", [("v.jpg", b"\xff\xd8\xff", "JPEG"), ("v.TIFF", b"II*\x00", "TIFF"),
                                              ("v.png", b"\x89PNG", "PNG")])
def test_visualize_writes_the_format_its_suffix_names(synthetic, tiny, tmp_path, capsys, name, magic, fmt):
    out = tmp_path / name
    code, err = _run(capsys, ["visualize", "--checkpoint", tiny, "--data", f"cityscapes:{synthetic.cityscapes_root}",
                              "--frames", "1", "--size", "64x32", "--device", "cpu", "--tile-width", "128",
                              "--out", out])
    assert code == 0, err
    assert out.read_bytes().startswith(magic) and Image.open(out).format == fmt


@pytest.mark.parametrize("name", ["v.gif", "v.webp", "v"])
def test_visualize_refuses_other_suffixes_before_any_work(tiny, tmp_path, capsys, name):
    code, err = _run(capsys, ["visualize", "--checkpoint", tiny, "--data", f"cityscapes:{tmp_path / 'nowhere'}",
                              "--out", tmp_path / name])
    assert code == 2 and ".png, .jpg, .jpeg, .tif, .tiff, .pdf, .svg" in _one_line(err)
    assert not (tmp_path / name).exists()


# 5. Sizes that cannot fit in memory ----------------------------------------------------------------------------

GIB = 2**30


@pytest.fixture
def eight_gib(monkeypatch):
    """A machine with 8 GiB available, whatever this one has."""
    monkeypatch.setattr(machine, "available_memory", lambda: 8 * GIB)


def test_the_memory_a_size_needs_is_counted_from_the_size():
    # per pixel: 3 input floats + 19 class scores (+ the model's widest map), 4 bytes each
    assert machine.memory_needed({"--size": (1024, 512)}) == 1024 * 512 * 22 * 4
    assert machine.memory_needed({"a": (10, 10), "b": (5, 2)}, batch=2, feature_floats=32) == 2 * 110 * 54 * 4
    available = machine.available_memory()
    assert available is None or available > 0


def test_a_size_within_memory_passes_and_one_beyond_names_both_amounts(eight_gib):
    machine.check_memory({"--size": (2048, 1024), "--other": None})
    with pytest.raises(UsageError, match=r"^--size 100000x100000 needs at least 819\.6 GiB of memory \(float32 input "
                                         r"and 19 class scores per pixel\) but this machine has 8\.0 GiB available; "
                                         r"give a smaller size"):
        machine.check_memory({"--size": (100000, 100000)})


def test_memory_is_not_checked_where_the_machine_does_not_say(monkeypatch):
    monkeypatch.setattr(machine, "available_memory", lambda: None)
    machine.check_memory({"--size": (100000, 100000)})


HUGE = "100000x100000"


@pytest.mark.parametrize("argv, option", [
    (["eval", "--checkpoint", "{tiny}", "--data", "cityscapes:{tmp}/nowhere", "--size", HUGE], "--size"),
    (["visualize", "--checkpoint", "{tiny}", "--data", "cityscapes:{tmp}/nowhere", "--size", HUGE, "--out",
      "{tmp}/v.png"], "--size"),
    (["predict", "--model", "{tmp}/none.onnx", "{tmp}/in.png", "--out", "{tmp}/out", "--max-frame", HUGE],
     "--max-frame"),
    (["export", "{tmp}/none", "--out", "{tmp}/e.onnx", "--working-size", HUGE], "--working-size"),
    (["data", "synth", "--out", "{tmp}/syn", "--source-size", HUGE], "--source-size"),
    (["analyze", "features", "--checkpoint", "{tiny}", "--source", "gta5:{tmp}/g", "--target", "cityscapes:{tmp}/c",
      "--target-size", HUGE, "--out", "{tmp}/f"], "--target-size"),
    (["bench", "latency", "--random", "tiny", "--frame-size", HUGE], "--frame-size"),
])
def test_commands_refuse_a_size_beyond_memory_before_any_work(tiny, tmp_path, capsys, eight_gib, argv, option):
    argv = [a.format(tiny=tiny, tmp=tmp_path) for a in argv]
    code, err = _run(capsys, argv)
    assert code == 2 and f"{option} {HUGE}" in _one_line(err) and "at least 819.6 GiB" in err
    assert "but this machine has 8.0 GiB available" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_train_refuses_sizes_beyond_memory_before_the_data_and_the_run_folder(tmp_path, capsys, eight_gib):
    out = tmp_path / "run"
    code, err = _run(capsys, ["train", "clan-norm", "--model", "tiny", "--source", f"gta5:{tmp_path}/nowhere",
                              "--target", f"cityscapes:{tmp_path}/nowhere", "--out", out,
                              "--set", f"data.source_size={HUGE}", "--set", "data.batch_size=2", "--set",
                              "data.num_workers=0"])
    assert code == 2 and not out.exists()
    assert f"data.source_size {HUGE} and data.target_size 1024x512 need at least" in _one_line(err)
    assert "batch 2" in err and "model features" in err


# 6. Seeds ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["data", "synth", "--out", "{tmp}/syn", "--seed", "-1"],
                                  ["analyze", "features", "--checkpoint", "{tmp}/c", "--source", "gta5:{tmp}/g",
                                   "--target", "cityscapes:{tmp}/t", "--out", "{tmp}/f", "--seed", "-1"],
                                  ["demo", "--out", "{tmp}/demo", "--seed", "-1"],
                                  ["data", "synth", "--out", "{tmp}/syn", "--seed", str(2**32)]])
def test_seed_options_refuse_values_outside_32_bits_up_front(tmp_path, capsys, argv):
    code, err = _run(capsys, [a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and "Invalid value for '--seed'" in err and f"0<=x<={SEED_MAX}" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no demo.json, no dataset


def test_the_config_seed_is_checked_when_the_config_is_resolved(tmp_path, capsys):
    assert build_config({"seed": str(SEED_MAX)}).seed == SEED_MAX and build_config({"seed": "0"}).seed == 0
    for bad in ("-1", str(2**32)):
        with pytest.raises(UsageError, match=rf"^config seed={bad} is invalid: expected a whole number from 0 to "
                                             rf"{SEED_MAX}"):
            build_config({"seed": bad})
    code, err = _run(capsys, ["train", "source-only", "--model", "tiny", "--source", f"gta5:{tmp_path}/nowhere",
                              "--out", tmp_path / "run", "--set", "seed=-1"])  # no dataset there: not looked at
    assert code == 2 and "config seed=-1 is invalid" in _one_line(err) and "start_step" not in err
    assert not (tmp_path / "run").exists()


# 7. An unsafe pickle: the refusal alone ------------------------------------------------------------------------

class _Unsafe:
    def __reduce__(self):
        return os.system, ("true",)


def test_an_unsafe_checkpoint_is_refused_without_torchs_pickle_warning(tmp_path, capsys, recwarn):
    data = pickle.dumps({"state_dict": _Unsafe()}, protocol=4)  # torch warns about protocol 4 before refusing
    with pytest.raises(CheckpointError, match=r"evil\.pth is unsafe: refused to unpickle it"):
        torch_load_bytes(data, name="evil.pth")
    (tmp_path / "evil.pth").write_bytes(data)
    code, err = _run(capsys, ["convert", "--from", "clan", tmp_path / "evil.pth", "--out", tmp_path / "c"])
    assert code == 1 and _one_line(err).startswith("error: ") and "is unsafe" in err
    assert [str(w.message) for w in recwarn] == []


# 8. Resume after the newest checkpoint was deleted -------------------------------------------------------------

def test_resume_after_the_newest_checkpoint_was_deleted_continues_from_the_newest_complete_one(synthetic, tmp_path,
                                                                                              capsys):
    out = tmp_path / "run"
    run(synthetic, out, "source-only", steps=4, checkpoint_every=1, stop_at=3)
    shutil.rmtree(out / "checkpoints" / "step_000003")  # the user deletes the newest; checkpoints/last dangles
    capsys.readouterr()
    result = run(synthetic, out, "source-only", resume=True, stop_at=2)  # the newest left is already the stop
    assert result.step == 2
    note = capsys.readouterr().err
    assert (f"the newest checkpoint of {out}, checkpoints/step_000003, was deleted; continuing from the newest "
            "complete one, step_000002 (step 2), which checkpoints/last now points to") in note
    assert os.readlink(out / "checkpoints" / "last") == "step_000002"
    assert run(synthetic, out, "source-only", resume=True, stop_at=0).step == 4  # and on to the end
    assert os.readlink(out / "checkpoints" / "last") == "step_000004"


def test_resume_after_every_checkpoint_was_deleted_says_so(synthetic, tmp_path, capsys):
    out = tmp_path / "run"
    run(synthetic, out, "source-only", steps=1)
    shutil.rmtree(out / "checkpoints" / "step_000001")
    with pytest.raises(CheckpointError, match=r"the newest checkpoint of .*run, checkpoints/step_000001 \(which "
                                              r"checkpoints/last points to\), was deleted and no other checkpoint "
                                              r"remains, so the run cannot be continued"):
        run(synthetic, out, "source-only", resume=True)
    with pytest.raises(CheckpointError, match=r"no checkpoint left: its newest, checkpoints/step_000001 .* was "
                                              r"deleted"):
        resolve_checkpoint(out)
    code, err = _run(capsys, ["train", "source-only", "--source", f"gta5:{synthetic.gta5_root}", "--out", out,
                              "--resume"])
    assert code == 1 and "was deleted and no other checkpoint remains" in _one_line(err)
    assert "stopped before its first checkpoint" not in err
