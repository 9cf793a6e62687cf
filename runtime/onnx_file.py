"""The one reader of an exported file: metadata, I/O types and external-data files, without ``onnx`` or numpy.

The base install (numpy, click, pillow, tqdm) has no ``onnx``, and the TensorRT path never needs ONNX Runtime, yet the
runtime must read ``metadata_props`` (classes, palette, precision), check the ``image``/``labels`` contract and hash
the external weight files for the engine-cache key; ``ftadapt inspect``, the benchmarks and the export read the same
facts here. ONNX is protobuf, so this module walks the wire format directly: length-delimited fields it does not need
(node bodies, raw weights) are skipped with ``seek``, so a multi-GB model costs a few thousand small reads. Field
numbers are those of ``onnx.proto`` (ModelProto, GraphProto, TensorProto, …).

It imports only the artifact schema and the project errors, so the export (which ranks below the runtime) may use it.

It is also the one gate on external data (:func:`external_data_path`): every tensor whose bytes live in another file
must name a file inside the model's folder. ONNX Runtime, the TensorRT parser, ``onnx`` and the engine-cache hash all
open those files by the ``location`` the .onnx file itself states, so a downloaded model could otherwise make them
read (or hash) any file on the machine; everything in ftadapt that opens a model reads it through
:func:`read_model_file` first and opens only the path it returns.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
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
    files the model references, present or not (``missing_files``; ``require_data_files`` before running it), each
    checked by :func:`external_data_path` to lie inside the model's folder;
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
        """One digest of the bytes of the .onnx file and every external-data file (in path order; names and
        locations are inside the .onnx bytes), for the engine-cache key. A renamed copy keeps its digest. The data
        files are those :func:`read_model_file` checked: nothing outside the model's folder is read."""
        self.require_data_files()
        digest = hashlib.sha256()
        for path in (self.path, *self.data_files):
            digest.update(f"{path.stat().st_size}:".encode())
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()


def not_onnx(path: str | os.PathLike, why: str) -> ArtifactError:
    """The error for a file that is not a valid ONNX model, ``why`` saying what is wrong with its bytes (this reader's
    or ``onnx``'s finding: both see damaged, truncated and foreign files)."""
    return ArtifactError(f"{path} is not a valid ONNX file ({why}): it is damaged, truncated or another kind of file; "
                         "copy it again or re-export it with `ftadapt export`")


class _Reader:
    """Protobuf fields of one message, read from a seekable file between two offsets."""

    def __init__(self, f: BinaryIO, source: str) -> None:
        self.f, self.source = f, source

    def bad(self, why: str) -> ArtifactError:
        return not_onnx(self.source, why)

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


# Where TensorProtos hide in a model, as (message kind → {field number: kind of the child message}) over onnx.proto:
# graphs hold initializers, sparse initializers and nodes; node attributes hold tensors and subgraphs (If, Loop, Scan
# bodies); sparse tensors hold two tensors; functions and training-info graphs hold nodes and graphs of their own.
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training_info", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse_tensor"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse_tensor", 23: "sparse_tensor"},
    "sparse_tensor": {1: "tensor", 2: "tensor"},
    "function": {7: "node"},
    "training_info": {1: "graph", 2: "graph"},
}


def _external_tensors(r: _Reader, size: int) -> list[tuple[str, list[str]]]:
    """(name, ``location`` values) of every TensorProto stored as external data anywhere in the model at [0, size):
    initializers, sparse initializers, node-attribute tensors (Constant values), the same inside subgraphs, functions
    and training graphs — every tensor a runtime may load from a file, not only the main graph's initializers.

    A tensor counts as external when its ``data_location`` (14) is EXTERNAL, as ONNX, ONNX Runtime and TensorRT
    decide; its ``external_data`` (13) entries are key (1) / value (2) pairs. Only the small messages are visited:
    raw weights are skipped by offset.
    """
    found, stack = [], [("model", 0, size)]
    while stack:
        kind, start, end = stack.pop()
        if kind == "tensor":
            fields = list(r.fields(start, end))
            if any(n == 14 and w == _VARINT and v == _EXTERNAL for n, w, v, _ in fields):
                entries = [r.strings(v, v + s) for n, w, v, s in fields if n == 13 and w == _LEN]
                name = next((r.text(v, s) for n, w, v, s in fields if n == 8 and w == _LEN), "")
                found.append((name, [e.get(2, "") for e in entries if e.get(1) == "location"]))
            continue
        children = _CHILDREN[kind]
        inner = [(children[n], v, v + s) for n, w, v, s in r.fields(start, end) if w == _LEN and n in children]
        stack += reversed(inner)  # popped in file order, so an error names the first offending tensor
    return found


def external_data_path(model_path: Path, tensor: str, locations: list[str]) -> Path:
    """The file that holds the external data of ``tensor`` of the model at ``model_path`` (already resolved), given
    the ``location`` entries the tensor states; ArtifactError naming the tensor, the location and the fix unless it is
    exactly one relative location that resolves — after ``..`` and symbolic links — to a file inside the model's
    folder.

    This is the one check of external-data paths (see the module docstring): an absolute location, ``..`` out of the
    folder or a link that leaves it would make ONNX Runtime, TensorRT or the engine-cache hash read a file the model
    has no business with (``../../../../etc/passwd``). The file itself need not exist yet (``missing_files``).
    """
    folder = model_path.parent
    where = f"{model_path}: tensor {tensor!r}"
    fix = (f"re-export the model with `ftadapt export`, which writes its data file beside the .onnx file, or put "
           f"the data file itself (not a link to it) into {folder} and set the tensor's location to its bare file name")
    if len(locations) != 1:
        stated = "no location" if not locations else f"{len(locations)} locations {locations}"
        raise ArtifactError(f"{where} is stored as external data but states {stated}; {fix}")
    location = locations[0]
    if not location.strip() or "\x00" in location:
        raise ArtifactError(f"{where} is stored as external data at the empty or invalid location {location!r}; {fix}")
    if PurePosixPath(location).is_absolute() or PureWindowsPath(location).anchor:
        raise ArtifactError(f"{where} keeps its data at the absolute path {location!r}; ftadapt reads external data "
                            f"only from files inside the model's folder; {fix}")
    try:
        target = (folder / location).resolve()
    except (OSError, RuntimeError) as exc:  # a link loop (RuntimeError before Python 3.13)
        raise ArtifactError(f"{where} keeps its data at {location!r}, which cannot be resolved ({exc}); "
                            f"{fix}") from None
    if target == folder or not target.is_relative_to(folder):
        lexical = Path(os.path.normpath(folder / location))
        how = " through a symbolic link" if lexical != folder and lexical.is_relative_to(folder) else ""
        raise ArtifactError(f"{where} keeps its data at {location!r}, which resolves{how} to {target}, outside the "
                            f"model's folder {folder}; ftadapt reads external data only from files inside that folder; "
                            f"{fix}")
    return target


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

    Raises UsageError when the path is not a file and ArtifactError when it is not ONNX (empty, damaged, truncated or
    another kind of file) or when an external-data location leaves the model's folder (:func:`external_data_path`):
    then no data file has been opened. Missing external-data files are listed, not refused
    (``ModelFile.require_data_files``), so that ``ftadapt inspect`` can name them.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no ONNX model at {path}" + (" (it is a folder; give the .onnx file)" if path.is_dir()
                                                       else "; give the .onnx file `ftadapt export` wrote"))
    size = path.stat().st_size
    if size == 0:
        raise ArtifactError(f"{path} is empty (0 bytes): not an ONNX file; copy it again or re-export it with "
                            "`ftadapt export`")
    with open(path, "rb") as f:
        r = _Reader(f, str(path))
        top = _by_field(r, 0, size)
        if not top.get(7):
            raise r.bad("it has no graph")
        metadata = dict(tuple(r.strings(s, e).get(k, "") for k in (1, 2)) for s, e in top.get(14, []))
        header = r.varints(0, size)  # ir_version 1
        producer = " ".join(r.text(s, e - s) for number in (2, 3) for s, e in top.get(number, [])[-1:])
        graph = _by_field(r, *top[7][0])
        inputs = tuple(_tensor_spec(r, s, e) for s, e in graph.get(11, []))
        outputs = tuple(_tensor_spec(r, s, e) for s, e in graph.get(12, []))
        opset = _opset(r, top.get(8, []))
        if header.get(1) is None or opset is None:  # every ONNX model states both; a cut file or other bytes may not
            raise r.bad("it states no IR version or no ONNX opset: truncated, or another kind of file")
        external = _external_tensors(r, size)
    resolved = path.resolve()  # what the runtimes open, so data paths are checked against the folder they will use
    data_files = sorted({external_data_path(resolved, name, locations) for name, locations in external})
    return ModelFile(path=resolved, metadata=metadata, inputs=inputs, outputs=outputs, data_files=tuple(data_files),
                     opset=opset, ir_version=header.get(1), producer=producer, nodes=len(graph.get(1, [])))


__all__ = ["ModelFile", "TensorSpec", "external_data_path", "input_readers", "not_onnx", "read_model_file"]
