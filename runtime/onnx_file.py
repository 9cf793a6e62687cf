"""Read what the runtime needs from an ONNX file without the ``onnx`` package: metadata, I/O types, data files.

The base install (numpy, click, pillow, tqdm) has no ``onnx``, and the TensorRT path never needs ONNX Runtime, yet the
runtime must read ``metadata_props`` (classes, palette, precision), check the ``image``/``labels`` contract and hash
the external weight files for the engine-cache key. ONNX is protobuf, so this module walks the wire format directly:
length-delimited fields it does not need (nodes, raw weights) are skipped with ``seek``, so a multi-GB model costs a
few thousand small reads. Field numbers are those of ``onnx.proto`` (ModelProto, GraphProto, TensorProto, …).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ftadapt.artifact import ArtifactError
from ftadapt.errors import UsageError

# TensorProto.DataType values the contract uses (onnx.proto); others are shown by number.
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 16: "bfloat16"}
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, element type ("uint8", "int32", … or "type<N>") and dims (int or a name)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """The parts of an ONNX file the runtime uses; ``data_files`` are the external-data files it references."""

    path: Path
    metadata: dict[str, str]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    data_files: tuple[Path, ...]

    def sha256(self) -> str:
        """One digest of the bytes of the .onnx file and every external-data file (in name order; names and
        locations are inside the .onnx bytes), for the engine-cache key. A renamed copy keeps its digest."""
        digest = hashlib.sha256()
        for path in (self.path, *self.data_files):
            digest.update(f"{path.stat().st_size}:".encode())
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()


class _Reader:
    """Protobuf fields of one message, read from a seekable file between two offsets."""

    def __init__(self, f: BinaryIO, source: str) -> None:
        self.f, self.source = f, source

    def bad(self, why: str) -> ArtifactError:
        return ArtifactError(f"{self.source} is not a valid ONNX file ({why}); re-export it with `ftadapt export`")

    def _varint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.f.read(1)
            if not byte or shift > 63:
                raise self.bad("truncated or corrupt protobuf")
            value |= (byte[0] & 0x7F) << shift
            shift += 7
            if byte[0] < 0x80:
                return value

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """Yield (field number, wire type, value, size): for varints value is the integer (size 0), for the other
        wire types the payload offset and byte size. Nested reads between yields are safe (positions are absolute).
        """
        pos = start
        while pos < end:
            self.f.seek(pos)
            key = self._varint()
            number, wire = key >> 3, key & 7
            if wire == _VARINT:
                value, size = self._varint(), 0
                pos = self.f.tell()
            else:
                if wire == _LEN:
                    size = self._varint()
                elif wire in (_I64, _I32):
                    size = 8 if wire == _I64 else 4
                else:
                    raise self.bad(f"protobuf wire type {wire} in field {number}")
                value = self.f.tell()
                pos = value + size
                if pos > end:
                    raise self.bad(f"field {number} runs past the end of its message")
            yield number, wire, value, size

    def text(self, offset: int, size: int) -> str:
        self.f.seek(offset)
        return self.f.read(size).decode("utf-8", errors="replace")

    def children(self, start: int, end: int, number: int) -> list[tuple[int, int]]:
        """(start, end) of every length-delimited field ``number`` of the message at [start, end)."""
        return [(v, v + s) for n, w, v, s in self.fields(start, end) if n == number and w == _LEN]

    def strings(self, start: int, end: int) -> dict[int, str]:
        """The length-delimited fields of a message as text, by field number (the last one wins)."""
        return {n: self.text(v, s) for n, w, v, s in list(self.fields(start, end)) if w == _LEN}

    def varints(self, start: int, end: int) -> dict[int, int]:
        return {n: v for n, w, v, _ in self.fields(start, end) if w == _VARINT}


def _tensor_spec(r: _Reader, start: int, end: int) -> TensorSpec:
    """A ValueInfoProto (name 1, type 2 → tensor_type 1 → elem_type 1, shape 2 → dim 1 → value 1 | param 2)."""
    name = r.strings(start, end).get(1, "")
    dtype, dims = "unknown", ()
    for t_start, t_end in r.children(start, end, 2)[:1]:
        for s, e in r.children(t_start, t_end, 1)[:1]:
            elem = r.varints(s, e).get(1, 0)
            dtype = ELEM_TYPES.get(elem, f"type<{elem}>")
            for sh_s, sh_e in r.children(s, e, 2)[:1]:
                dims = tuple(r.varints(ds, de).get(1, r.strings(ds, de).get(2, "?"))
                             for ds, de in r.children(sh_s, sh_e, 1))
    return TensorSpec(name, dtype, dims)


def _external_locations(r: _Reader, start: int, end: int) -> list[str]:
    """The ``location`` of every initializer of the graph stored as external data."""
    found = []
    for t_start, t_end in r.children(start, end, 5):  # GraphProto.initializer: TensorProto
        if r.varints(t_start, t_end).get(14) != _EXTERNAL:
            continue
        entries = [r.strings(s, e) for s, e in r.children(t_start, t_end, 13)]  # external_data entries
        found += [e.get(2, "") for e in entries if e.get(1) == "location"]
    return found


def input_readers(path: str | os.PathLike, name: str) -> list[tuple[str, str]]:
    """(op type, node name) of every node of the model's graph that takes the tensor ``name`` as an input.

    Reads the node list only (NodeProto: input 1, name 3, op_type 4), which TensorRT's UINT8 rule needs: a uint8
    network input must feed a Cast and nothing else. Call it once per engine build, not per Segmenter: a big graph
    has thousands of nodes.
    """
    path = Path(path)
    found = []
    with open(path, "rb") as f:
        r = _Reader(f, str(path))
        graphs = r.children(0, path.stat().st_size, 7)
        for g_start, g_end in graphs[:1]:
            for n_start, n_end in r.children(g_start, g_end, 1):
                fields = [(n, r.text(v, size)) for n, w, v, size in list(r.fields(n_start, n_end)) if w == _LEN
                          and n in (1, 3, 4)]
                if (1, name) in fields:
                    texts = dict(fields)
                    found.append((texts.get(4, "?"), texts.get(3, "")))
    return found


def read_model_file(path: str | os.PathLike) -> ModelFile:
    """Metadata, graph inputs/outputs and external-data files of the ONNX model at ``path``.

    Raises UsageError when the path is not a file, ArtifactError when it is not ONNX or a data file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no ONNX model at {path}" + (" (it is a folder; give the .onnx file)" if path.is_dir()
                                                       else "; give the .onnx file `ftadapt export` wrote"))
    with open(path, "rb") as f:
        r = _Reader(f, str(path))
        size = path.stat().st_size
        metadata = dict(tuple(r.strings(s, e).get(k, "") for k in (1, 2)) for s, e in r.children(0, size, 14))
        graphs = r.children(0, size, 7)
        if not graphs:
            raise r.bad("it has no graph")
        g_start, g_end = graphs[0]
        inputs = tuple(_tensor_spec(r, s, e) for s, e in r.children(g_start, g_end, 11))
        outputs = tuple(_tensor_spec(r, s, e) for s, e in r.children(g_start, g_end, 12))
        locations = sorted(set(_external_locations(r, g_start, g_end)))
    data_files = []
    for location in locations:
        data = (path.parent / location).resolve()
        if not data.is_file():
            raise ArtifactError(f"{path} keeps its weights in {location!r}, which is missing beside it; copy the "
                                "data file together with the .onnx file")
        data_files.append(data)
    return ModelFile(path=path.resolve(), metadata=metadata, inputs=inputs, outputs=outputs,
                     data_files=tuple(data_files))


__all__ = ["ModelFile", "TensorSpec", "input_readers", "read_model_file"]
