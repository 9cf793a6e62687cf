"""Endless, resumable batches for the training loop.

Everything random is a pure function of ``(seed, global step)``: epoch ``e`` visits the frames in the order of
``torch.randperm`` under a generator seeded from ``(seed, e)``; batch ``t`` gets one rescale factor drawn from
``(seed, t)`` — shared by all its samples, so a batch of randomly rescaled images stacks — and sample ``j`` of it the
mirror seed ``(seed, t, j)``. The dataset receives the keys ``(index, sample_seed, scale)``. Starting at
``start_step`` therefore yields exactly the batches a fresh run yields from that step on, whatever ``num_workers``.

Data-parallel training (``ftadapt.training.distributed``): rank ``r`` of ``world_size`` processes takes the batches of
stream positions ``t·world_size + r`` at step ``t``. The ranks split one process's batch stream round-robin —
different batches on every rank, no repeats within an epoch across ranks — and a resume continues it.

Loader workers (``project_loader``, ``loader_batches``, ``EndlessBatches``) hand a project error back as it was raised —
torch would rebuild it around the worker's whole traceback — and are stopped explicitly when iteration ends, whatever
ends it: they ignore SIGINT and SIGTERM (``_seed_worker``), so a worker left to the interpreter's exit would never end.
"""
from __future__ import annotations

import contextlib
import random
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import default_collate as torch_collate

from ftadapt.data.transforms import draw_scale
from ftadapt.errors import FtadaptError, UsageError, portable

# Domain tags that keep the seed streams of permutations, batch scales and sample mirrors apart.
_PERMUTATION, _BATCH, _SAMPLE = 0, 1, 2


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from non-negative ints (numpy ``SeedSequence``: well mixed, stable across platforms)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class EndlessBatchSampler:
    """Yields the dataset keys of global steps ``start_step, start_step + 1, …`` forever.

    Args:
        n: number of frames.
        batch_size: samples per batch.
        seed: run seed.
        start_step: first global step to yield.
        drop_last: skip each epoch's last incomplete batch (otherwise it is yielded, smaller).
        rank, world_size: this process's share of the stream: step t yields the keys of position t·world_size + rank.
    """

    def __init__(self, n: int, *, batch_size: int, seed: int, start_step: int = 0, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise UsageError(f"rank {rank} is not within world_size {world_size}")
        if batch_size < 1:
            raise UsageError(f"batch_size must be ≥ 1, got {batch_size}")
        if n < (batch_size if drop_last else 1):
            raise UsageError(f"the dataset has {n} frames, fewer than one batch of {batch_size}; lower the batch size")
        if seed < 0 or start_step < 0:
            raise UsageError(f"seed and start_step must be ≥ 0, got {seed} and {start_step}")
        self.n, self.batch_size, self.seed, self.start_step = n, batch_size, seed, start_step
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = n // batch_size if drop_last else -(-n // batch_size)
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.int64)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, _PERMUTATION, epoch))
            self._epoch, self._order = epoch, torch.randperm(self.n, generator=generator)
        return self._order

    def keys(self, step: int) -> list[tuple[int, int, float]]:
        """The ``(index, sample_seed, scale)`` keys of stream position ``step`` (= the global step of a single
        process)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        indices = self._permutation(epoch)[position * self.batch_size:(position + 1) * self.batch_size].tolist()
        scale = draw_scale(np.random.default_rng(derive_seed(self.seed, _BATCH, step)))
        return [(index, derive_seed(self.seed, _SAMPLE, step, j), scale) for j, index in enumerate(indices)]

    def __iter__(self) -> Iterator[list[tuple[int, int, float]]]:
        step = self.start_step
        while True:
            yield self.keys(step * self.world_size + self.rank)
            step += 1


def collate_samples(samples: list[dict]) -> dict:
    """Stack samples into a batch: ``image`` (B, 3, H, W), ``label`` (B, H, W) when the samples have labels,
    ``name`` a list of str, ``orig_hw`` a list of (H, W) tuples (``default_collate`` would split them into two
    tensors)."""
    batch = {"image": torch.stack([s["image"] for s in samples])}
    labelled = ["label" in s for s in samples]
    if any(labelled):
        if not all(labelled):
            raise ValueError("cannot batch samples with and without labels")
        batch["label"] = torch.stack([s["label"] for s in samples])
    batch["name"] = [s["name"] for s in samples]
    batch["orig_hw"] = [tuple(s["orig_hw"]) for s in samples]
    return batch


def _seed_worker(worker_id: int) -> None:
    """Seed a worker's global RNGs from its torch seed (derived from the loader's generator, seeded by the run seed and
    start step), so library randomness repeats too; one intra-op thread per worker avoids oversubscribing the CPUs.
    The samples themselves never use these RNGs.

    Workers ignore SIGINT and SIGTERM: Ctrl-C, ``kill -- -PGID``, torchrun and batch schedulers signal the whole
    process group, and a worker that died with it would fail the main process's next batch before the training loop
    could finish its step and write a checkpoint. The workers still exit when the loader is closed or the main
    process dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(1)


class _Carried:
    """A project error raised in a loader worker, returned as a batch so that the main process re-raises it as it was.

    Torch's own route (``ExceptionWrapper.reraise``) builds a new exception of the same class from a message holding
    the worker's whole traceback, so the CLI's one-line ``error:`` became a traceback; and a class whose ``__init__``
    takes other arguments becomes a RuntimeError. The worker's traceback is kept as a note (shown only in a traceback).
    """

    def __init__(self, exc: FtadaptError) -> None:
        self.error = portable(exc)
        self.trace = "".join(traceback.format_exception(exc)).rstrip()

    def reraise(self) -> None:
        error = self.error
        error.add_note(f"raised in a data loader worker process:\n{self.trace}")
        raise error


class _CarryErrors(Dataset):
    """``dataset`` whose items are a :class:`_Carried` instead of a raised project error (in a worker process)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.dataset[key]
        except FtadaptError as exc:
            return _Carried(exc)


class _CollateCarrying:
    """``collate`` that passes a sample's :class:`_Carried` on as the batch, and carries its own project errors."""

    def __init__(self, collate: Callable[[list], Any]) -> None:
        self.collate = collate

    def __call__(self, samples: list) -> Any:
        carried = next((s for s in samples if isinstance(s, _Carried)), None)
        if carried is not None:
            return carried
        try:
            return self.collate(samples)
        except FtadaptError as exc:
            return _Carried(exc)


def unwrap_batch(batch: Any) -> Any:
    """``batch`` as a loader of :func:`project_loader` delivered it; the project error a worker carried is raised."""
    if isinstance(batch, _Carried):
        batch.reraise()
    return batch


def stop_workers(iterator: Iterator | None) -> None:
    """Stop the worker processes of a DataLoader iterator now and wait for them (a no-op without workers).

    Dropping a reference is not enough: a loader with persistent workers keeps its iterator, and while an exception
    propagates its traceback keeps the loader alive; at interpreter exit ``multiprocessing`` would then SIGTERM the
    workers — which ignore it (``_seed_worker``) — and wait for them forever. Torch's shutdown tells each worker to
    exit and joins it."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def project_loader(dataset: Dataset, *, num_workers: int, collate_fn: Callable[[list], Any] | None = None,
                   **options: Any) -> DataLoader:
    """A DataLoader over ``dataset`` whose ``num_workers`` worker processes ignore SIGINT and SIGTERM
    (``_seed_worker``) and hand project errors back intact; iterate it with :func:`loader_batches`, which raises
    those errors and stops the workers. ``options`` go to ``DataLoader``; with 0 workers it is a plain DataLoader."""
    collate = collate_fn or torch_collate
    if num_workers > 0:
        dataset, collate = _CarryErrors(dataset), _CollateCarrying(collate)
    return DataLoader(dataset, num_workers=num_workers, collate_fn=collate,
                      worker_init_fn=_seed_worker if num_workers > 0 else None, **options)


@contextlib.contextmanager
def loader_batches(loader: Iterable) -> Iterator[Iterator]:
    """Iterate ``loader`` (from :func:`project_loader`): yields an iterator of its batches that raises a worker's
    project error as it was raised, and stops the workers when the block ends, however it ends."""
    iterator = iter(loader)
    try:
        yield (unwrap_batch(batch) for batch in iterator)
    finally:
        stop_workers(iterator)


class EndlessBatches:
    """An endless iterator of collated batches; ``step`` is the global step of the batch ``next()`` returns next.

    Workers are persistent and started on the first ``next()``; ``close()`` (or leaving a ``with`` block) stops them.
    A project error raised in a worker (a corrupt image) is raised by ``next()`` as it was raised there.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, num_workers: int, seed: int, start_step: int = 0,
                 pin_memory: bool | None = None, drop_last: bool = True, rank: int = 0, world_size: int = 1) -> None:
        self.sampler = EndlessBatchSampler(len(dataset), batch_size=batch_size, seed=seed, start_step=start_step,
                                           drop_last=drop_last, rank=rank, world_size=world_size)
        self.step = start_step
        self.loader = project_loader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=num_workers,
            collate_fn=collate_samples,
            pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(derive_seed(seed, start_step * world_size + rank)),
        )
        self._iterator: Iterator[dict] | None = None

    def __iter__(self) -> EndlessBatches:
        return self

    def __next__(self) -> dict:
        if self._iterator is None:
            self._iterator = iter(self.loader)
        batch = unwrap_batch(next(self._iterator))
        self.step += 1
        return batch

    def close(self) -> None:
        """Stop the worker processes now (``stop_workers``). Dropping references is not enough: with persistent
        workers the DataLoader keeps its iterator itself, and an exception's traceback keeps this object alive."""
        iterator, self._iterator = self._iterator, None
        stop_workers(iterator)
        self.loader._iterator = None  # the stopped iterator must not be reused by a later iter(self.loader)

    def __enter__(self) -> EndlessBatches:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def endless_batches(dataset: Dataset, *, batch_size: int, num_workers: int, seed: int, start_step: int = 0,
                    pin_memory: bool | None = None, drop_last: bool = True, rank: int = 0,
                    world_size: int = 1) -> EndlessBatches:
    """Batches of ``dataset`` forever, reproducible from ``(seed, step)`` and resumable at ``start_step``; with
    ``world_size`` > 1, this ``rank``'s share of them (see the module docstring).

    ``pin_memory`` defaults to True when CUDA is available. Batches are dicts as made by ``collate_samples``.
    Give the source and target loaders different seeds (e.g. ``derive_seed(run_seed, 0)`` and ``(run_seed, 1)``):
    with one seed both domains would draw the same scale and mirror at every step.
    """
    return EndlessBatches(dataset, batch_size=batch_size, num_workers=num_workers, seed=seed, start_step=start_step,
                          pin_memory=pin_memory, drop_last=drop_last, rank=rank, world_size=world_size)
