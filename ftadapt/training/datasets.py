"""The datasets of a run, from the config's ``data.source`` / ``data.target`` (``KIND:ROOT``): the labelled source
(GTA5 or SYNTHIA; for the oracle, source-only on Cityscapes train with its labels), the unlabelled Cityscapes train
target, Cityscapes val for periodic evaluation, and the endless batch streams the loop draws from.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torch.utils.data import Dataset

from ftadapt.config import TrainConfig, parse_dataset_spec
from ftadapt.data.check import require_usable
from ftadapt.data.cityscapes import Cityscapes
from ftadapt.data.gta5 import GTA5
from ftadapt.data.loader import endless_batches
from ftadapt.data.synthia import SYNTHIA
from ftadapt.errors import UsageError
from ftadapt.evaluation.frames import LabelledSplit
from ftadapt.training.distributed import DistEnv

# The labelled sources: each called as (root, size=, augment=, list_file=). Cityscapes is a source only for the oracle
# (the paper's "Oracle" row: source-only on Cityscapes train with its labels); adaptation needs a synthetic source.
SOURCES = {"gta5": GTA5, "synthia": SYNTHIA, "cityscapes": partial(Cityscapes, split="train", with_labels=True)}
SYNTHETIC_SOURCES = ("gta5", "synthia")
VALID_SOURCES = "gta5, synthia, or cityscapes (source-only)"
DatasetSpec = tuple[str, Path]  # ("gta5", root), as ``ftadapt.config.parse_dataset_spec`` returns


@dataclass
class Datasets:
    """The training sets of a run; ``target`` only for methods that read it, ``val`` only with ``eval_every``."""

    source: Dataset
    target: Dataset | None
    val: LabelledSplit | None


def dataset_specs(cfg: TrainConfig, *, needs_target: bool) -> tuple[DatasetSpec, DatasetSpec | None]:
    """``cfg.data.source`` and ``cfg.data.target`` as (kind, root), or a UsageError naming the option to fix: the
    source must be gta5 or synthia (cityscapes only for source-only: the oracle), the target cityscapes, and present
    when the method or ``eval_every`` needs it."""
    if not cfg.data.source:
        raise UsageError("no labelled source (config key data.source): give --source gta5:ROOT, synthia:ROOT, or "
                         "cityscapes:ROOT (source-only)")
    kind, root = parse_dataset_spec(cfg.data.source)
    if kind not in SOURCES:
        raise UsageError(f"--source {kind}:{root}: the labelled source must be {VALID_SOURCES}")
    if kind not in SYNTHETIC_SOURCES and needs_target:
        raise UsageError(f"--source {kind}:{root} with method {cfg.method}: adaptation needs a synthetic source (gta5 "
                         f"or synthia); a {kind} source is the oracle (source-only)")
    target = parse_dataset_spec(cfg.data.target) if cfg.data.target else None
    if target is None and (needs_target or cfg.eval_every):
        why = f"method {cfg.method}" if needs_target else "eval_every"
        raise UsageError(f"{why} needs the target: --target cityscapes:ROOT")
    if target is not None and target[0] != "cityscapes":
        raise UsageError(f"--target {target[0]}:{target[1]}: the unlabelled target must be cityscapes:ROOT")
    return (kind, root), target


def open_datasets(cfg: TrainConfig, *, needs_target: bool, doctor: bool, progress: bool) -> Datasets:
    """The training sets (and target val for ``eval_every``); with ``doctor`` each root must pass the dataset doctor."""
    (kind, root), target = dataset_specs(cfg, needs_target=needs_target)
    if doctor:
        skip = " (or skip this check with --set check_data=false)"
        # Cityscapes as the source: its train split, whose labels are then read (missing ones the dataset refuses)
        require_usable(kind, root, ["train"] if kind == "cityscapes" else None, progress=progress, skip_hint=skip)
        if target is not None and (needs_target or cfg.eval_every):
            splits = ["train"] * needs_target + [cfg.eval.split] * (cfg.eval_every > 0)
            require_usable("cityscapes", target[1], splits, progress=progress, skip_hint=skip)
    src = SOURCES[kind](root, size=cfg.data.source_size, augment=cfg.data.augment,
                        list_file=cfg.data.source_list or None)
    tgt = val = None
    if needs_target:
        tgt = Cityscapes(target[1], split="train", size=cfg.data.target_size, augment=cfg.data.augment,
                         list_file=cfg.data.target_list or None, with_labels=False)
    if cfg.eval_every:
        val = LabelledSplit.from_root(target[1], cfg.eval.split)
    return Datasets(src, tgt, val)


@contextlib.contextmanager
def training_batches(cfg: TrainConfig, data: Datasets, *, start_step: int,
                     dist_env: DistEnv) -> Iterator[tuple[Iterator[dict], Iterator[dict] | None]]:
    """The source and target batch streams (target None without a target set) from ``start_step`` on, this rank's
    share of them; the loader workers stop when the block ends."""
    with contextlib.ExitStack() as stack:
        streams = [stack.enter_context(endless_batches(ds, batch_size=cfg.data.batch_size,
                                                       num_workers=cfg.data.num_workers, seed=cfg.seed + k,
                                                       start_step=start_step, rank=dist_env.rank,
                                                       world_size=dist_env.world_size)) if ds is not None else None
                   for k, ds in enumerate((data.source, data.target))]
        yield streams[0], streams[1]


__all__ = ["Datasets", "DatasetSpec", "SOURCES", "dataset_specs", "open_datasets", "training_batches"]
