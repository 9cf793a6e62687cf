"""Import officially released weights (``reference/methods.md`` §1.5–1.7) into checkpoint folders, and load
initialisation weights for training.

Layouts: the DeepLab init file (``Scale.``-prefixed, its ImageNet+COCO ``layer5`` is dropped), AdaptSegNet (plain
state_dict, reduced ASPP, multi heads — or the single-head oracle), CLAN and Feature-To-Adapt (plain state_dict, full
ASPP, two heads on layer4) and MaxSquare (``{"state_dict": …}`` with ``module.``-prefixed keys, reduced ASPP, multi
heads). Files are read with ``torch.load(weights_only=True)`` and converted weights must fit the model exactly.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from ftadapt.checkpoint import expected_state, fill_num_batches_tracked, key_diff, load_checkpoint, save_checkpoint
from ftadapt.errors import CheckpointError
from ftadapt.fsutil import check_target
from ftadapt.models.deeplab import DeepLabV2, ModelConfig, is_head_key
from ftadapt.run_folder import CHECKPOINTS, LAST, is_run_folder, latest_checkpoint
from ftadapt.safe_load import sha256_bytes, torch_load_bytes


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one family of released files stores its weights."""

    title: str
    container: str | None  # key of the dict that holds the state_dict, None for a bare state_dict
    prefix: str  # removed from every key
    aspp: str
    heads: tuple[str, ...]  # head layouts this family ships; the first is the default
    backbone_only: bool = False  # heads are dropped (initialisation weights)


LAYOUTS: dict[str, Layout] = {
    "deeplab-init": Layout("DeepLab initialisation (ImageNet + MS-COCO)", None, "Scale.", "full", ("clan",), True),
    "adaptsegnet": Layout("AdaptSegNet", None, "", "reduced", ("multi", "single")),
    "clan": Layout("CLAN", None, "", "full", ("clan",)),
    "maxsquare": Layout("MaxSquare", "state_dict", "module.", "reduced", ("multi",)),
    "feature-to-adapt": Layout("Feature-To-Adapt", None, "", "full", ("clan",)),
}


def _weights_file(path: str | Path) -> Path:
    """``path`` if it is a file, else a CheckpointError saying what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; expected an official .pth file (a checkpoint folder needs no "
                              "conversion)")
    if not path.is_file():
        raise CheckpointError(f"no such weights file: {path}")
    return path


def read_weights(path: str | Path) -> tuple[Any, str]:
    """Load a released ``.pth`` safely; returns (object, sha256 of the file)."""
    data = _weights_file(path).read_bytes()
    return torch_load_bytes(data, name=str(path)), sha256_bytes(data)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _describe(obj: Any) -> str:
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}"
    if _is_state_dict(obj):
        return "a plain state_dict"
    other = [str(k) for k, v in obj.items() if not isinstance(v, Tensor)]
    return f"a dict with non-tensor entries ({', '.join(other[:5])})" if other else "an empty dict"


def _infer_heads(state: Mapping[str, Tensor]) -> str | None:
    """Head layout from the ASPP weights: layer5 reading half of layer6's channels is multi, the same is clan."""
    l5, l6 = state.get("layer5.conv2d_list.0.weight"), state.get("layer6.conv2d_list.0.weight")
    if l5 is None or l5.ndim != 4:
        return None
    if l6 is None:
        return "single"
    if l6.ndim == 4 and l6.shape[1] == l5.shape[1]:
        return "clan"
    if l6.ndim == 4 and l6.shape[1] == 2 * l5.shape[1]:
        return "multi"
    return None


def guess_layout(obj: Any) -> str | None:
    """The ``--from`` kind a loaded file looks like, or None (used to suggest the right option)."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        inner = obj["state_dict"]
        return "maxsquare" if inner and all(str(k).startswith("module.") for k in inner) else None
    if not _is_state_dict(obj):
        return None
    if all(str(k).startswith("Scale.") for k in obj):
        return "deeplab-init"
    return {"multi": "adaptsegnet", "single": "adaptsegnet", "clan": "clan"}.get(_infer_heads(obj))


def _suggestion(obj: Any, kind: str) -> str:
    guess = guess_layout(obj)
    if guess is None or LAYOUTS[guess] == LAYOUTS[kind]:
        return ""
    alt = " (or --from feature-to-adapt, same layout)" if guess == "clan" else ""
    return f"\nthe file looks like {LAYOUTS[guess].title} weights: use --from {guess}{alt}"


def _official_state(obj: Any, kind: str, source: str) -> dict[str, Tensor]:
    """Unwrap the container, drop the key prefix (every key must carry it) and, for initialisation weights, the
    heads."""
    layout = LAYOUTS[kind]
    if layout.container is not None:
        if not (isinstance(obj, Mapping) and isinstance(obj.get(layout.container), Mapping)):
            raise CheckpointError(f"{source} is {_describe(obj)}, but --from {kind} expects {layout.title}'s training "
                                  f"checkpoint, a dict with a {layout.container!r} entry" + _suggestion(obj, kind))
        obj = obj[layout.container]
    if not _is_state_dict(obj):
        raise CheckpointError(f"{source} is {_describe(obj)}, but --from {kind} expects a plain state_dict "
                              "(parameter names → tensors)" + _suggestion(obj, kind))
    bare = [k for k in obj if not k.startswith(layout.prefix)]
    if bare:
        raise CheckpointError(f"{source} does not match --from {kind}: {len(bare)} of {len(obj)} keys lack the "
                              f"{layout.prefix!r} prefix of {layout.title} files (e.g. {bare[0]})"
                              + _suggestion(obj, kind))
    state = {k[len(layout.prefix):]: v for k, v in obj.items()}
    return {k: v for k, v in state.items() if not (layout.backbone_only and is_head_key(k))}


def _infer_config(state: Mapping[str, Tensor], layout: Layout, aspp: str | None) -> ModelConfig:
    """The model config the weights describe, within what the layout allows; falls back to ResNet-101 defaults when
    the keys are too foreign to tell (the key comparison then reports the difference)."""
    config = ModelConfig(aspp=aspp or layout.aspp, heads=layout.heads[0])
    try:
        blocks = tuple(1 + max(int(k.split(".")[1]) for k in state if k.startswith(f"layer{i}.")) for i in range(1, 5))
        config = config.replace(blocks=blocks, width=int(state["conv1.weight"].shape[0]))
    except (KeyError, ValueError, IndexError):
        return config
    if layout.backbone_only:
        return config
    heads = _infer_heads(state)
    if heads in layout.heads:
        config = config.replace(heads=heads, num_classes=int(state["layer5.conv2d_list.0.weight"].shape[0]))
    return config


def convert_state(obj: Any, kind: str, *, aspp: str | None = None,
                  source: str = "checkpoint") -> tuple[ModelConfig, dict[str, Tensor]]:
    """Official weights ``obj`` of family ``kind`` → (model config, state_dict with ftadapt's keys).

    ``aspp`` overrides the family's ASPP forward ("full"/"reduced"), e.g. to run MaxSquare weights the way
    Feature-To-Adapt's evaluation did. Raises CheckpointError listing the key differences and suggesting a ``--from``.
    """
    if kind not in LAYOUTS:
        raise CheckpointError(f"unknown --from {kind!r}; expected one of {', '.join(LAYOUTS)}")
    layout = LAYOUTS[kind]
    state = _official_state(obj, kind, source)
    config = _infer_config(state, layout, aspp)
    expected = expected_state(config, backbone_only=layout.backbone_only)
    diff = key_diff(expected, state)
    if diff:
        raise CheckpointError(f"{source} does not match --from {kind} ({layout.title}):\n{diff.describe()}"
                              + _suggestion(obj, kind))
    return config, fill_num_batches_tracked(expected, state)


def convert_checkpoint(src: str | Path, kind: str, out: str | Path, *, aspp: str | None = None,
                       overwrite: bool = False) -> dict[str, Any]:
    """Convert the released file ``src`` of family ``kind`` into a checkpoint folder ``out``; returns a summary.

    ``out`` follows the output rule (``ftadapt.fsutil.check_target``), checked before ``src`` is read: an existing
    checkpoint folder is replaced only with ``overwrite``; a link (a run's ``last``), a folder inside a run's
    ``checkpoints/`` or one holding ``src`` never.
    """
    src = _weights_file(src)
    check_target(out, overwrite=overwrite, inputs=[src], what="--out", kind="folder")
    obj, sha = read_weights(src)
    config, state = convert_state(obj, kind, aspp=aspp, source=str(src))
    backbone_only = LAYOUTS[kind].backbone_only
    provenance = {"from": kind, "source": src.name, "source_sha256": sha, "aspp": config.aspp}
    meta = {"method": kind, "step": None, "metrics": {}, "head_rule": None if backbone_only else config.head_rule,
            "provenance": provenance}
    save_checkpoint(out, model_state=state, model_config=config, meta=meta, overwrite=overwrite)
    params = sum(v.numel() for k, v in state.items()
                 if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    return {"out": str(out), **provenance, "contents": "backbone" if backbone_only else "full",
            "heads": None if backbone_only else config.heads, "head_rule": meta["head_rule"], "depth": config.depth,
            "num_classes": config.num_classes, "keys": len(state), "parameters": params}


def load_init_weights(model: DeepLabV2, source: str | Path) -> dict[str, Any]:
    """Initialise ``model`` from a checkpoint folder or an official ``.pth`` (any layout, e.g. the raw DeepLab init).

    The backbone (conv1 … layer4, BN running statistics included) must fit exactly. The heads are loaded only when the
    source has all of them with the model's shapes; otherwise (the DeepLab init, or another head layout) they keep
    their fresh initialisation. Returns a report: source, layout, backbone key count, "heads": "loaded"/"initialised",
    and, when the source's own heads did not fit, a "note" naming the re-initialised head layers and why.
    """
    source = Path(source)
    if is_run_folder(source):
        newest = latest_checkpoint(source)
        where = f"its newest is {newest}" if newest else "it has none yet"
        raise CheckpointError(f"--init {source} is a run folder; pass one of its checkpoint folders ({where}; "
                              f"{source / CHECKPOINTS / LAST} follows the newest)")
    if source.is_dir():
        state, layout = load_checkpoint(source).state_dict, "checkpoint folder"
    else:
        obj, _ = read_weights(source)
        layout = guess_layout(obj)
        if layout is None:
            raise CheckpointError(f"{source} is {_describe(obj)} in no known layout ({', '.join(LAYOUTS)}); pass a "
                                  "checkpoint folder or an official release file")
        state = _official_state(obj, layout, str(source))
    expected = model.state_dict()
    backbone = {k: v for k, v in state.items() if not is_head_key(k)}
    diff = key_diff({k: v for k, v in expected.items() if not is_head_key(k)}, backbone)
    if diff:
        raise CheckpointError(f"{source}: the backbone does not fit model {model.config}:\n{diff.describe()}")
    heads = {k: v for k, v in state.items() if is_head_key(k)}
    head_diff = key_diff({k: v for k, v in expected.items() if is_head_key(k)}, heads)
    heads_fit = bool(heads) and not head_diff
    model.load_state_dict({**expected, **backbone, **(heads if heads_fit else {})}, strict=True)
    report = {"source": str(source), "layout": layout, "backbone_keys": len(backbone),
              "heads": "loaded" if heads_fit else "initialised"}
    if heads and not heads_fit:
        fresh = [k for k in expected if is_head_key(k)]
        layers = sorted({k.split(".")[0] for k in fresh})
        report["note"] = (f"--init {source}: its heads do not fit this model's {model.config.heads} heads "
                          f"({'; '.join(head_diff.describe(limit=2).splitlines())}), so {' and '.join(layers)} "
                          f"({len(fresh)} tensors) start from a fresh initialisation instead")
    return report
