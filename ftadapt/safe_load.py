"""Safe loading of torch files (DESIGN.md §4: checkpoints from the internet are pickles): ``torch.load`` with
``weights_only=True`` behind project errors that tell an unsafe file from a damaged one, the check that an object
will load that way, and the sha256 that checkpoint folders record.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
import warnings
import zipfile
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

from ftadapt.errors import CheckpointError


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of ``data`` (what meta.json records of each weight file)."""
    return hashlib.sha256(data).hexdigest()


# torch.load's warnings about the pickle of a file (regular expressions matched at the start of the message).
_TORCH_PICKLE_WARNINGS = (r".*pickle protocol", r".*weights_only", r".*unpickl")


def torch_load_bytes(data: bytes, *, name: str, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of file contents, with project errors for unsafe or corrupt files.

    A refusal is told apart from damage by the file's structure, not by torch's wording (which changes between
    versions): torch refused (``UnpicklingError``) and a pickle of the file that reads cleanly imports something
    besides torch's own rebuild functions and containers — unsafe; anything else is damage."""
    if data[:4] != b"PK\x03\x04" and name.lower().endswith(".onnx"):
        raise CheckpointError(f"{name} is an ONNX graph (what `ftadapt export` writes), not torch weights: pass the "
                              "checkpoint folder or official .pth it was made from")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle itself (a protocol its weights_only unpickler was not written for, the
            # weights_only default) before it refuses or loads: this function says what matters in one line.
            for message in _TORCH_PICKLE_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=UserWarning)
                warnings.filterwarnings("ignore", message=message, category=FutureWarning)
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        foreign = [g for g in pickle_globals(data) if g.split(".")[0] not in ("torch", "collections", "builtins")]
        if foreign:
            raise CheckpointError(
                f"{name} is unsafe: refused to unpickle it, because it imports Python objects besides tensors "
                f"({', '.join(list(dict.fromkeys(foreign))[:3])}) and unpickling it could run arbitrary code. If you "
                "trust the file, load it yourself and re-save only its state_dict with torch.save.") from None
        raise CheckpointError(f"{name} is not a readable torch file: it is corrupt or truncated (torch refused its "
                              "pickle, which does not parse)") from None
    except Exception as exc:  # RuntimeError (zip), EOFError, … depending on the damage
        raise CheckpointError(f"{name} is not a readable torch file: it is corrupt, truncated or was not written by "
                              f"torch.save ({type(exc).__name__})") from None


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def _pickle_streams(data: bytes) -> list[io.BytesIO]:
    """The streams holding a torch file's pickles: ``*/data.pkl`` of the zip format, else the file itself (the legacy
    format: pickles one after another, then raw storage bytes)."""
    buffer = io.BytesIO(data)
    if not zipfile.is_zipfile(buffer):
        return [io.BytesIO(data)]
    try:
        with zipfile.ZipFile(buffer) as archive:
            return [io.BytesIO(archive.read(n)) for n in archive.namelist() if n.endswith("/data.pkl")]
    except (zipfile.BadZipFile, OSError, KeyError):
        return []


def pickle_globals(data: bytes) -> list[str]:
    """The ``module.name`` globals imported by every pickle of a torch file that reads cleanly, in order, taken from
    the opcodes without unpickling anything (reading stops at the first pickle that does not parse)."""
    found: list[str] = []
    for stream in _pickle_streams(data):
        while stream.tell() < len(stream.getbuffer()):
            strings: list[str] = []
            imported: list[str] = []
            try:
                for op, arg, _pos in pickletools.genops(stream):
                    if op.name == "GLOBAL":
                        imported.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL":
                        imported.append(".".join(strings[-2:]) or "?")
                    elif op.name in _STRING_OPS:
                        strings.append(str(arg))
            except (ValueError, EOFError, UnicodeDecodeError):
                break
            found += imported
    return found


def check_weights_only(obj: Any, where: str) -> None:
    """Raise TypeError when ``obj`` holds something ``torch.load(weights_only=True)`` would refuse."""
    if obj is None or isinstance(obj, (Tensor, bool, int, float, str)):
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} of type {type(key).__name__} is not weights_only-loadable")
            check_weights_only(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            check_weights_only(value, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(obj).__module__}.{type(obj).__qualname__} is not weights_only-loadable; "
                    "store tensors, numbers, strings, lists, tuples or dicts (e.g. a numpy array as a tensor)")


__all__ = ["sha256_bytes", "torch_load_bytes", "pickle_globals", "check_weights_only"]
