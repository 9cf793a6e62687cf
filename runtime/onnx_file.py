"""The one reader of an exported file: metadata, I/O types and external-data files, without ``onnx`` or numpy.

The base install (numpy, click, pillow, tqdm) has no ``onnx``, and the TensorRT path never needs ONNX Runtime, yet the
runtime must read ``metadata_props`` (classes, palette, precision), check the ``image``/``labels`` contract and hash
the external weight files for the engine-cache key; ``ftadapt inspect``, the benchmarks and the export read the same
facts here. ONNX is protobuf, so this module walks the wire format directly: length-delimited fields it does not need
(node bodies, raw weights) are skipped with ``seek``, so a multi-GB model costs a few thousand small reads. Field
numbers are those of ``onnx.proto`` (ModelProto, GraphProto, TensorProto, …).

It imports only the artifact schema and the project errors, so the export (which ranks below the runtime) may use it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ftadapt.artifact import ArtifactError, ArtifactInfo
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
    """What an ONNX file holds, as far as ftadapt reads it.

    ``metadata`` is every ``metadata_props`` entry (``info`` parses ftadapt's); ``data_files`` are the external-data
    files the graph references, present or not (``missing_files``; ``require_data_files`` before running it);
    ``opset`` is the default-domain opset, ``nodes`` the number of nodes of the main graph.
    """

    path: Path
    metadata: dict[str, str]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    data_files: tuple[Path, ...]
    opset: int | None = None
    ir_version: int | None = None
    producer: str = ""
    nodes: int = 0

    @functools.cached_property
    def info(self) -> ArtifactInfo:
        """The validated ftadapt metadata; ArtifactError naming the file when it is absent or damaged."""
        return ArtifactInfo.from_props(self.metadata, source=str(self.path))

    @property
    def missing_files(self) -> tuple[Path, ...]:
        """The external-data files that are not beside the .onnx file (checked now, not when it was read)."""
        return tuple(p for p in self.data_files if not p.is_file())

    @property
    def size_bytes(self) -> int:
        """The .onnx file and the data files that are there."""
        return self.path.stat().st_size + sum(p.stat().st_size for p in self.data_files if p.is_file())

    def require_data_files(self) -> None:
        """ArtifactError naming the first missing external-data file: the model cannot run without its weights."""
        missing = self.missing_files
        if missing:
            raise ArtifactError(f"{self.path} keeps its weights in {missing[0].name!r}, which is missing beside it; "
                                "copy the data file together with the .onnx file")

    def sha256(self) -> str:
        """One digest of the bytes of the .onnx file and every external-data file (in name order; names and
        locations are inside the .onnx bytes), for the engine-cache key. A renamed copy keeps its digest."""
        self.require_data_files()
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


def _external_locations(r: _Reader, initializers: list[tuple[int, int]]) -> list[str]:
    """The ``location`` of every initializer (TensorProto) stored as external data."""
    found = []
    for t_start, t_end in initializers:
        if r.varints(t_start, t_end).get(14) != _EXTERNAL:  # data_location
            continue
        entries = [r.strings(s, e) for s, e in r.children(t_start, t_end, 13)]  # external_data entries
        found += [e.get(2, "") for e in entries if e.get(1) == "location"]
    return found


def _by_field(r: _Reader, start: int, end: int) -> dict[int, list[tuple[int, int]]]:
    """(start, end) of the length-delimited fields of the message at [start, end), by field number, in one pass."""
    found: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for number, wire, value, size in r.fields(start, end):
        if wire == _LEN:
            found[number].append((value, value + size))
    return found


def _opset(r: _Reader, opsets: list[tuple[int, int]]) -> int | None:
    """The version of the default ONNX domain among OperatorSetIdProtos (domain 1, version 2)."""
    for start, end in opsets:
        if r.strings(start, end).get(1, "") in ("", "ai.onnx"):
            return r.varints(start, end).get(2)
    return None


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
    """Metadata, graph inputs/outputs, external-data files and header facts of the ONNX model at ``path``.

    Raises UsageError when the path is not a file and ArtifactError when it is not ONNX. Missing external-data files
    are listed, not refused (``ModelFile.require_data_files``), so that ``ftadapt inspect`` can name them.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no ONNX model at {path}" + (" (it is a folder; give the .onnx file)" if path.is_dir()
                                                       else "; give the .onnx file `ftadapt export` wrote"))
    with open(path, "rb") as f:
        r = _Reader(f, str(path))
        size = path.stat().st_size
        top = _by_field(r, 0, size)
        if not top.get(7):
            raise r.bad("it has no graph")
        metadata = dict(tuple(r.strings(s, e).get(k, "") for k in (1, 2)) for s, e in top.get(14, []))
        header = r.varints(0, size)  # ir_version 1
        producer = " ".join(r.text(s, e - s) for number in (2, 3) for s, e in top.get(number, [])[-1:])
        graph = _by_field(r, *top[7][0])
        inputs = tuple(_tensor_spec(r, s, e) for s, e in graph.get(11, []))
        outputs = tuple(_tensor_spec(r, s, e) for s, e in graph.get(12, []))
        locations = sorted(set(_external_locations(r, graph.get(5, []))))
        opset = _opset(r, top.get(8, []))
    return ModelFile(path=path.resolve(), metadata=metadata, inputs=inputs, outputs=outputs,
                     data_files=tuple((path.parent / location).resolve() for location in locations), opset=opset,
                     ir_version=header.get(1), producer=producer, nodes=len(graph.get(1, [])))


__all__ = ["ModelFile", "TensorSpec", "input_readers", "read_model_file"]
