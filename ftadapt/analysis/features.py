"""Layer4 features of labelled images, reduced per class as they are read (the input of the paper's Figures 1 and 3).

For each image and model: the layer4 feature map (N×C×h×w, what the norm loss acts on), the image's trainId label
downsampled to the feature grid with nearest-neighbour sampling (one label per feature position, as CLAN downsamples
its labels; ignore positions are dropped), and then, per class, three reductions of which none grows with the number
of images beyond a bound:

- exact running moments (``alignment.ClassMoments``: count, Σf, Σ‖f‖², Σ‖f‖) for the mean norms and the domain gap;
- a uniform sample of at most ``points`` feature vectors per class (``Reservoir``), to embed and plot;
- a uniform sample of at most ``norms`` per-position norms over the whole grid (ignore positions included), for the
  norm histograms, beside the exact mean norm.

The sampling is seeded per domain and its random keys depend only on the images and labels, never on the model, so
every model is sampled at the same positions: the panels of a figure show the same pixels through different models.
The per-image sums are computed where the model runs (GPU or CPU); only class-sized results and the sampled vectors
travel to the host.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ftadapt.analysis.alignment import ClassMoments
from ftadapt.errors import DatasetError
from ftadapt.labels import NUM_CLASSES

DOMAINS = ("source", "target")
DEFAULT_POINTS, DEFAULT_NORMS = 150, 100_000


class Reservoir:
    """A uniform sample without replacement of at most ``capacity`` rows of a stream (bottom-k sampling: every
    offered row comes with a uniform random key; the rows with the smallest keys are kept)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys = np.empty(0)
        self.rows: np.ndarray | None = None

    def offer(self, keys: np.ndarray, take: Callable[[np.ndarray], np.ndarray]) -> None:
        """Offer rows by their keys; ``take(indices)`` returns the rows at those indices, and is called only for the
        ones that can still be kept (so a GPU gathers a few rows, not all)."""
        cand = np.arange(keys.size)
        if cand.size > self.capacity:
            cand = np.argpartition(keys, self.capacity)[: self.capacity]
        if self.keys.size == self.capacity:
            cand = cand[keys[cand] < self.keys.max()]
        if cand.size == 0:
            return
        rows = np.asarray(take(cand))
        merged_keys = np.concatenate([self.keys, keys[cand]])
        merged = rows if self.rows is None else np.concatenate([self.rows, rows])
        keep = np.argsort(merged_keys, kind="stable")[: self.capacity]
        self.keys, self.rows = merged_keys[keep], merged[keep]

    @property
    def size(self) -> int:
        return int(self.keys.size)


@dataclass
class DomainFeatures:
    """One model's features of one domain, reduced (module docstring). ``positions``/``norm_sum`` cover every
    feature position read, ignore positions included."""

    moments: ClassMoments
    points: dict[int, Reservoir]
    norms: Reservoir
    rng: np.random.Generator = field(repr=False)
    images: int = 0
    positions: int = 0
    norm_sum: float = 0.0

    @classmethod
    def empty(cls, channels: int, classes: Sequence[int], *, points: int, norms: int, seed: int,
              domain: str) -> DomainFeatures:
        rng = np.random.default_rng([seed, DOMAINS.index(domain)])
        return cls(ClassMoments(NUM_CLASSES, channels), {c: Reservoir(points) for c in classes}, Reservoir(norms), rng)

    @property
    def mean_norm(self) -> float:
        """Mean ‖f‖₂ over every position read (NaN before any)."""
        return self.norm_sum / self.positions if self.positions else float("nan")

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """The sampled vectors of every class and their trainIds. Shape: → (N, C) float32, (N,) int64."""
        kept = [(c, r.rows) for c, r in self.points.items() if r.rows is not None]
        if not kept:
            return np.empty((0, self.moments.total.shape[1]), np.float32), np.empty(0, np.int64)
        return (np.concatenate([rows for _, rows in kept]),
                np.concatenate([np.full(len(rows), c, np.int64) for c, rows in kept]))

    def norm_sample(self) -> np.ndarray:
        """The sampled per-position norms. Shape: → (n,) float32."""
        return np.empty(0, np.float32) if self.norms.rows is None else self.norms.rows

    def add(self, features: Tensor, label: Tensor) -> None:
        """Reduce one image. Shape: features C×h×w (the model's device), label h×w int64 trainIds (same device)."""
        flat = features.float().flatten(1)  # C×P
        ids = label.flatten()
        norms = flat.norm(dim=0)
        valid = ids < NUM_CLASSES
        v_ids, v_norms = ids[valid], norms[valid]
        total = flat.new_zeros(NUM_CLASSES, flat.shape[0]).index_add_(0, v_ids, flat[:, valid].T)
        self.moments.add_sums(torch.bincount(v_ids, minlength=NUM_CLASSES).cpu().numpy(), total.cpu().numpy(),
                              _by_class(v_ids, v_norms**2), _by_class(v_ids, v_norms))
        point_keys, norm_keys = self.rng.random(ids.numel()), self.rng.random(ids.numel())
        ids_host = ids.cpu().numpy()
        for c, reservoir in self.points.items():
            where = np.flatnonzero(ids_host == c)
            if where.size:
                reservoir.offer(point_keys[where], lambda i, w=where: _columns(flat, w[i]))
        self.norms.offer(norm_keys, lambda i: norms[torch.as_tensor(i, device=norms.device)].cpu().numpy())
        self.images += 1
        self.positions += int(ids.numel())
        self.norm_sum += float(norms.double().sum())


def _by_class(ids: Tensor, values: Tensor) -> np.ndarray:
    return values.new_zeros(NUM_CLASSES).index_add_(0, ids, values).double().cpu().numpy()


def _columns(flat: Tensor, index: np.ndarray) -> np.ndarray:
    """Shape: C×P, (k,) → (k, C) float32 on the host."""
    return flat[:, torch.as_tensor(index, device=flat.device)].T.cpu().numpy()


def label_on_grid(label: Tensor, grid_hw: tuple[int, int]) -> Tensor:
    """The trainId label at the feature grid: nearest-neighbour sampling (255 = ignore stays ignore).

    Shape: H×W integer → h×w int64 with (h, w) = ``grid_hw``.
    """
    return F.interpolate(label[None, None].float(), size=grid_hw, mode="nearest")[0, 0].long()


def pick_images(available: int, wanted: int, seed: int) -> list[int]:
    """``wanted`` of ``available`` image indices, a seeded uniform choice, in increasing order (all when fewer)."""
    if wanted >= available:
        return list(range(available))
    return sorted(np.random.default_rng(seed).choice(available, wanted, replace=False).tolist())


@torch.inference_mode()
def extract(models: Sequence[nn.Module], dataset, indices: Sequence[int], *, domain: str, classes: Sequence[int],
            points: int = DEFAULT_POINTS, norms: int = DEFAULT_NORMS, seed: int = 0, workers: int = 0,
            progress: bool = True) -> list[DomainFeatures]:
    """Read images ``indices`` of ``dataset`` (a labelled ``ftadapt.data`` dataset, no augmentation) once and reduce
    each model's layer4 features of them; one ``DomainFeatures`` per model, in order. Models run in eval mode on
    their own device; ``workers`` decode images in background processes (a corrupt image is one clean project error
    from them too, and they stop however the reading ends: ``ftadapt.data.loader.loader_batches``)."""
    from torch.utils.data import Subset
    from tqdm import tqdm

    from ftadapt.data.loader import loader_batches, project_loader

    if not dataset.has_labels:
        raise DatasetError(f"{dataset!r} has no labels; the feature analysis needs labelled images")
    for model in models:
        model.eval()
    out = [DomainFeatures.empty(m.config.feature_channels, classes, points=points, norms=norms, seed=seed,
                                domain=domain) for m in models]
    loader = project_loader(Subset(dataset, list(indices)), batch_size=1, num_workers=workers)
    with loader_batches(loader) as batches:
        for batch in tqdm(batches, total=len(loader), desc=f"features ({domain})", unit="img", disable=not progress):
            for model, reduced in zip(models, out):
                device = next(model.parameters()).device
                features = model(batch["image"].to(device)).features[0]
                reduced.add(features, label_on_grid(batch["label"][0].to(device), tuple(features.shape[-2:])))
    return out


__all__ = ["DomainFeatures", "Reservoir", "extract", "label_on_grid", "pick_images", "DOMAINS", "DEFAULT_POINTS",
           "DEFAULT_NORMS"]
