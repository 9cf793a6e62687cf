"""The PyTorch module an exported file was made from, rebuilt from its members' checkpoints (``bench accuracy``).

An export records, for every member, its name, normalised weight, head rule and the sha256 of its weights (the
checkpoint's ``meta.json`` ``sha256``), and for the whole graph the fusion mode, the working size and the precision
(``ftadapt.artifact``). Given checkpoint folders in any order — checkpoint folders, run folders (every checkpoint they
hold is a candidate, not only the newest) or folders of runs — each member is matched by that sha256, and the graph is
built again by ``build_graph`` with the recorded weights, head rules, fusion and working size: the very module the
export traced, which ``load_model`` checks byte for byte against the recorded sha256 when it loads the weights.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ftadapt.artifact import ArtifactInfo
from ftadapt.checkpoint import MODEL_FILE, load_model, read_meta
from ftadapt.ensemble import Ensemble, MemberInfo
from ftadapt.errors import CheckpointError
from ftadapt.export.onnx_graph import SegmentationGraph, build_graph
from ftadapt.run_folder import checkpoint_folders, checkpoint_name, is_run_folder


def _checkpoint_folders(folder: Path, depth: int = 1) -> Iterator[Path]:
    """Checkpoint folders at or below ``folder``: itself, a run's ``checkpoints/*``, or (``depth`` levels) those of
    its sub-folders."""
    if (folder / MODEL_FILE).is_file():
        yield folder
        return
    if is_run_folder(folder):
        yield from (p for p in checkpoint_folders(folder) if (p / MODEL_FILE).is_file())
        return
    if depth > 0 and folder.is_dir():
        for child in sorted(folder.iterdir()):
            if child.is_dir() and not child.is_symlink():
                yield from _checkpoint_folders(child, depth - 1)


def index_checkpoints(folders: Iterable[str | os.PathLike]) -> dict[str, Path]:
    """sha256 of the weights → checkpoint folder, for every checkpoint in or under ``folders`` (weights not read).

    Raises CheckpointError for a path that does not exist or holds no checkpoint at all.
    """
    found: dict[str, Path] = {}
    for given in folders:
        folder = Path(given)
        if not folder.is_dir():
            raise CheckpointError(f"--checkpoints {folder}: no such folder; pass the checkpoint or run folders the "
                                  "model was exported from")
        candidates = list(_checkpoint_folders(folder))
        if not candidates:
            raise CheckpointError(f"--checkpoints {folder} holds no checkpoint folder (model.pt + meta.json), run "
                                  "folder or folder of runs")
        for path in candidates:
            sha = read_meta(path).get("sha256")
            if isinstance(sha, str):
                found.setdefault(sha, path)
    return found


def match_members(info: ArtifactInfo, folders: Iterable[str | os.PathLike], *,
                  source: str = "the model") -> list[Path]:
    """The checkpoint folder of each of ``info``'s members, in member order, matched by sha256.

    Raises CheckpointError naming every member that no given checkpoint matches (and what was given).
    """
    found = index_checkpoints(folders)
    unmatched = [m for m in info.members if m.sha256 not in found]
    if unmatched:
        members = ", ".join(f"{m.name!r} (sha256 {m.sha256[:12]}…)" for m in unmatched)
        given = ", ".join(f"{checkpoint_name(p)} ({sha[:12]}…)" for sha, p in found.items())
        raise CheckpointError(f"{source}: member {members} matches none of the checkpoints given ({given}); pass the "
                              "checkpoint folder each member was exported from with --checkpoints (`ftadapt inspect "
                              "MODEL` lists the members and their sha256)")
    return [found[m.sha256] for m in info.members]


def rebuild_graph(info: ArtifactInfo, folders: Iterable[str | os.PathLike], *, precision: str | None = None,
                  device: str = "cpu", source: str = "the model") -> SegmentationGraph:
    """``SegmentationGraph`` of the exported file ``info`` describes, from the matching checkpoints in ``folders``,
    at ``precision`` (default: the file's; "fp32" gives the FP32 module of an FP16 file)."""
    paths = match_members(info, folders, source=source)
    models = [load_model(path, device=device) for path in paths]
    infos = [MemberInfo(name=m.name, path=p, method=m.method, head_rule=m.head_rule, weight=m.weight,
                        sha256=m.sha256, miou=m.miou, miou_source=m.miou_source) for m, p in zip(info.members, paths)]
    ensemble = Ensemble(models, [m.weight for m in info.members], rules=[m.head_rule for m in info.members],
                        infos=infos, fusion=info.ensemble["fusion"], flip=info.ensemble["flip"]).eval()
    return build_graph(ensemble, precision=precision or info.precision, working_size=info.working_size)


__all__ = ["index_checkpoints", "match_members", "rebuild_graph"]
