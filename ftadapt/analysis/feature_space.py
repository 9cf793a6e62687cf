"""``analyze_features``: what a model's adaptation did to its feature space, in numbers and pictures.

For each checkpoint: the layer4 features of N labelled images per domain (``features.extract``: per class, exact
moments plus a bounded seeded sample), then

- per class and model the mean feature norm per domain and the domain gap (``alignment``: centroid distance in
  units of the pooled within-domain spread; 0 = aligned), and per model the mean norm over all positions;
- ``features_pca.png`` / ``features_tsne.png``: the sampled points of source and target embedded together, one
  panel per model (the paper's Figures 1 and 3);
- ``feature_norms.png``: the per-position norm distributions per domain, one panel per model;
- ``features.json`` (every number shown, the histogram counts included) and ``embedding.csv`` (every plotted point:
  model, method, domain, class, x, y) in the output folder.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ftadapt.analysis import features as F
from ftadapt.analysis.alignment import domain_gap
from ftadapt.analysis.embedding import embed
from ftadapt.analysis.feature_figures import Embedded, NormHistogram, norm_figure, scatter_figure
from ftadapt.analysis.plotting import save_png
from ftadapt.devices import DeviceLike
from ftadapt.errors import UsageError
from ftadapt.fsutil import check_new_files, check_target, write_text_atomic
from ftadapt.labels import CLASS_NAMES, NUM_CLASSES

FIGURES = {"pca": "features_pca.png", "tsne": "features_tsne.png", "norms": "feature_norms.png"}
JSON_FILE, CSV_FILE = "features.json", "embedding.csv"
HISTOGRAM_BINS = 60
PAPER_IMAGES = 130  # the paper embeds 130 val images per dataset
GAP_DEFINITION = ("gap = |mu_S - mu_T| / sqrt((s2_S + s2_T) / 2): the distance between the source and target "
                  "centroids of a class's layer4 features in units of the pooled within-domain RMS spread "
                  "(s2 = mean squared distance to the domain's centroid); 0 = aligned, scale-invariant")


@dataclass(frozen=True)
class DomainSpec:
    """Where one domain's labelled images come from: a dataset kind and root (``gta5``/``synthia`` for the source,
    ``cityscapes`` with its ``split`` for the target) and the protocol size (W, H) they are read at (None: the
    dataset's own protocol size)."""

    kind: str
    root: Path
    split: str | None = None
    size: tuple[int, int] | None = None

    def open(self):
        """The labelled dataset, without augmentation."""
        from ftadapt.data.cityscapes import Cityscapes
        from ftadapt.training.datasets import SOURCES

        size = {"size": tuple(self.size)} if self.size else {}
        if self.kind == "cityscapes":
            return Cityscapes(self.root, split=self.split or "val", with_labels=True, **size)
        return SOURCES[self.kind](self.root, **size)

    def describe(self, images: int) -> dict[str, Any]:
        out = {"dataset": self.kind, "root": str(self.root), "images": images}
        if self.split:
            out["split"] = self.split
        return out | ({"size": list(self.size)} if self.size else {})


@dataclass(frozen=True)
class Model:
    """A checkpoint to analyse, as loaded: its display ``name``, folder, recorded method and step, the module."""

    name: str
    checkpoint: Path
    method: str | None
    step: int | None
    module: Any


def load_models(specs: Sequence[tuple[str | None, str | Path]], device: DeviceLike = "auto") -> list[Model]:
    """Load each (name or None, checkpoint or run folder) as ``ftadapt eval`` does; unnamed ones are named by their
    checkpoint, repeats get ``#2``, ``#3``."""
    from ftadapt.evaluation import predictors

    opened = predictors.unique_names([predictors.checkpoint(path, name=name, device=device) for name, path in specs])
    return [Model(p.name, Path(p.details["checkpoint"]), p.details["method"], p.details["step"], p.module)
            for p in opened]


def check_out(out: str | Path, methods: Sequence[str], *, inputs: Sequence[str | Path], overwrite: bool) -> Path:
    """The output folder under the output rule (``ftadapt.fsutil.check_target``, ``--out`` in messages): it may
    exist, but never be, hold or lie inside an input; the files an analysis with ``methods`` writes there (a figure per
    embedding, the norm figure, features.json, embedding.csv) replace earlier ones only with ``overwrite``. Returns
    where it lands; checked before any work."""
    if not set(methods) <= {"pca", "tsne"}:
        raise UsageError(f"embedding methods {list(methods)}: expected pca and/or tsne")
    out = check_target(out, overwrite=overwrite, inputs=inputs, what="--out", kind="merge")
    check_new_files([out / FIGURES[key] for key in ("norms", *methods)] + [out / JSON_FILE, out / CSV_FILE],
                    overwrite=overwrite, inputs=inputs, what="--out")
    return out


def analyze_features(models: Sequence[Model], source: DomainSpec, target: DomainSpec, *, out: str | Path,
                     classes: Sequence[int] | None = None, plot_classes: Sequence[int] | None = None,
                     images: int = PAPER_IMAGES, methods: Sequence[str] = ("pca", "tsne"),
                     points: int = F.DEFAULT_POINTS, seed: int = 0, workers: int = 0, threads: int | None = None,
                     progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Reduce, measure, embed and plot the features of ``models`` (module docstring) into the folder ``out``
    (``check_out``); return the JSON payload written there as ``features.json``.

    ``classes`` are measured (default: all 19); ``plot_classes`` (default: ``classes``) are sampled and plotted —
    a scatter stays readable with a few (the paper plotted three). ``threads`` caps the embeddings' threads
    (``embedding.embed``).
    """
    out = check_out(out, methods, inputs=[source.root, target.root, *(m.checkpoint for m in models)],
                    overwrite=overwrite)
    classes = tuple(range(NUM_CLASSES) if classes is None else classes)
    plot_classes = tuple(classes if plot_classes is None else plot_classes)
    if not set(plot_classes) <= set(classes):
        extra = ", ".join(CLASS_NAMES[c] for c in plot_classes if c not in classes)
        raise UsageError(f"plotted classes must be among the measured ones; not measured: {extra}")
    reduced: dict[str, list[F.DomainFeatures]] = {m.name: [] for m in models}
    counts = []
    for domain, spec in zip(F.DOMAINS, (source, target)):
        dataset = spec.open()
        indices = F.pick_images(len(dataset), images, seed)
        counts.append(len(indices))
        per_model = F.extract([m.module for m in models], dataset, indices, domain=domain, classes=plot_classes,
                              points=points, seed=seed, workers=workers, progress=progress)
        for m, r in zip(models, per_model):
            reduced[m.name].append(r)
    payload = {"models": [{"name": m.name, "checkpoint": str(m.checkpoint), "method": m.method, "step": m.step}
                          for m in models],
               "source": source.describe(counts[0]), "target": target.describe(counts[1]),
               "classes": [CLASS_NAMES[c] for c in classes], "plot_classes": [CLASS_NAMES[c] for c in plot_classes],
               "points_per_class": points, "seed": seed,
               "gap_definition": GAP_DEFINITION, "results": summarize(reduced, classes)}
    figures = {}
    figures["norms"], payload["norm_histogram"] = _norm_figure(reduced, payload)
    rows = []
    for method in methods:  # everything is computed before the first file is written
        figures[method], method_rows = _embedding_figure(reduced, payload, plot_classes, method, seed=seed,
                                                         threads=threads, progress=progress)
        rows += method_rows
    payload["figures"] = {k: FIGURES[k] for k in figures}
    payload["embedding_csv"] = CSV_FILE
    files = {FIGURES[key]: (lambda path, fig=fig: save_png(fig, path, overwrite=overwrite))
             for key, fig in figures.items()}
    files[CSV_FILE] = lambda path: write_text_atomic(path, _csv(rows), overwrite=overwrite)
    files[JSON_FILE] = lambda path: write_text_atomic(path, json.dumps(payload, indent=2) + "\n", overwrite=overwrite)
    _write_all(out, files)
    return payload


def _write_all(out: Path, files: dict[str, Callable[[Path], None]]) -> None:
    """Write each file of ``out`` (name → an atomic write to the path given); when one fails or a signal interrupts
    them, remove the files added so far, so that an interrupted analysis adds none of its files (earlier ones it
    replaced under ``overwrite`` stay replaced)."""
    added = []
    try:
        for name, write in files.items():
            path = out / name
            new = not path.exists()
            write(path)
            if new:
                added.append(path)
    except BaseException:
        for path in added:
            path.unlink(missing_ok=True)
        raise


def _number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def summarize(reduced: dict[str, list[F.DomainFeatures]], classes: Sequence[int]) -> dict[str, Any]:
    """Per model: the mean norm per domain over all positions, the mean of the classes' gaps, and per class the
    positions, sampled points, mean norms per domain and the gap (None where undefined)."""
    results = {}
    for name, (src, tgt) in reduced.items():
        per_class = {}
        for c in classes:
            per_class[CLASS_NAMES[c]] = {
                "positions": {"source": int(src.moments.count[c]), "target": int(tgt.moments.count[c])},
                "sampled": {"source": _sampled(src, c), "target": _sampled(tgt, c)},
                "mean_norm": {"source": _number(src.moments.mean_norm(c)),
                              "target": _number(tgt.moments.mean_norm(c))},
                "gap": _number(domain_gap(src.moments, tgt.moments, c))}
        gaps = [v["gap"] for v in per_class.values() if v["gap"] is not None]
        results[name] = {"mean_norm": {"source": _number(src.mean_norm), "target": _number(tgt.mean_norm)},
                         "mean_gap": _number(float(np.mean(gaps))) if gaps else None,
                         "positions": {"source": src.positions, "target": tgt.positions}, "classes": per_class}
    return results


def _sampled(reduced: F.DomainFeatures, c: int) -> int:
    return reduced.points[c].size if c in reduced.points else 0


def _embedding_figure(reduced: dict[str, list[F.DomainFeatures]], payload: dict, classes: Sequence[int],
                      method: str, *, seed: int, threads: int | None, progress: bool) -> tuple[Any, list[tuple]]:
    """Embed each model's sampled points (both domains together); return the scatter figure and the CSV rows."""
    from tqdm import tqdm

    panels, rows = {}, []
    for name, domains in tqdm(reduced.items(), desc=method, unit="model", disable=not progress):
        samples = [d.sample() for d in domains]
        points = np.concatenate([s[0] for s in samples])
        domain = np.concatenate([np.full(len(s[1]), i) for i, s in enumerate(samples)])
        class_of = np.concatenate([s[1] for s in samples])
        xy = embed(points, method, seed=seed, threads=threads)
        gap = payload["results"][name]["mean_gap"]
        panels[name] = Embedded(xy, domain, class_of, "" if gap is None else f"mean gap {gap:.2f}")
        rows += [(name, method, F.DOMAINS[d], CLASS_NAMES[c], float(x), float(y))
                 for (x, y), d, c in zip(xy.tolist(), domain.tolist(), class_of.tolist())]
    title = (f"layer4 features, {'PCA' if method == 'pca' else 't-SNE'}: x {_domain_label(payload['source'])}, "
             f". {_domain_label(payload['target'])}")
    return scatter_figure(panels, classes, title=title), rows


def _domain_label(described: dict) -> str:
    split = f" {described['split']}" if described.get("split") else ""
    return f"{described['dataset']}{split} ({described['images']} images)"


def norm_edges(samples: Sequence[np.ndarray]) -> np.ndarray:
    """Log-spaced histogram edges over the positive norms of all ``samples``: from the smallest positive norm (but at
    most four decades under the largest) to the largest. Shape: → (HISTOGRAM_BINS + 1,)."""
    positive = np.concatenate([s[s > 0] for s in samples] or [np.empty(0)])
    high = float(positive.max()) if positive.size else 1.0
    low = max(float(positive.min()), high * 1e-4) if positive.size else high * 1e-4
    return np.geomspace(min(low, high / 10), high, HISTOGRAM_BINS + 1)


def _norm_figure(reduced: dict[str, list[F.DomainFeatures]], payload: dict) -> tuple[Any, dict[str, Any]]:
    """Histograms of the sampled per-position norms on bins shared by every model: the figure and the numbers."""
    samples = {name: [d.norm_sample() for d in domains] for name, domains in reduced.items()}
    edges = norm_edges([s for pair in samples.values() for s in pair])
    panels, counts = {}, {}
    for name, pair in samples.items():
        hist = tuple(np.histogram(s, edges)[0] for s in pair)
        below = tuple(int((s < edges[0]).sum()) for s in pair)
        panels[name] = NormHistogram(hist, below, tuple(d.mean_norm for d in reduced[name]))
        counts[name] = {domain: {"counts": h.tolist(), "below_first_edge": b}
                        for domain, h, b in zip(F.DOMAINS, hist, below)}
    title = (f"per-position L2 norms of the layer4 features: {_domain_label(payload['source'])} vs "
             f"{_domain_label(payload['target'])}")
    numbers = {"bin_edges": edges.tolist(), "counts": counts,
               "note": f"log-spaced bins; counts of a uniform sample of at most {F.DEFAULT_NORMS} positions per "
                       "domain (below_first_edge: sampled norms under the first edge, e.g. all-zero vectors); the "
                       "mean norms are over every position"}
    return norm_figure(panels, edges, title=title), numbers


def _csv(rows: list[tuple]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["model", "method", "domain", "class", "x", "y"])
    writer.writerows(rows)
    return text.getvalue()


def format_feature_table(payload: dict[str, Any]) -> str:
    """The numbers for people: per class, for each model, the mean norm per domain and the gap; then all positions."""
    names = [m["name"] for m in payload["models"]]
    width = max(len(n) for n in [*payload["classes"], "all positions"])
    cols = [max(len(n), 22) for n in names]
    head = f"{'':<{width}}" + "".join(f"  {n:^{w}}" for n, w in zip(names, cols))
    sub = f"{'class':<{width}}" + "".join(f"  {'|f| S':>7}{'|f| T':>8}{'gap':>{w - 15}}" for w in cols)

    def cells(norms: dict, gap: float | None, w: int) -> str:
        text = ["-" if v is None else f"{v:.2f}" for v in (norms["source"], norms["target"], gap)]
        return f"  {text[0]:>7}{text[1]:>8}{text[2]:>{w - 15}}"

    lines = [head, sub, "-" * len(sub)]
    for cname in payload["classes"]:
        per = [payload["results"][n]["classes"][cname] for n in names]
        lines.append(f"{cname:<{width}}" + "".join(cells(v["mean_norm"], v["gap"], w) for v, w in zip(per, cols)))
    lines.append("-" * len(sub))
    per = [payload["results"][n] for n in names]
    lines.append(f"{'all positions':<{width}}" + "".join(cells(r["mean_norm"], r["mean_gap"], w)
                                                         for r, w in zip(per, cols)))
    lines.append(f"|f| = mean L2 norm of a layer4 feature vector (S source, T target); {GAP_DEFINITION}; the last "
                 "row's gap is the mean over the classes")
    return "\n".join(lines)


__all__ = ["analyze_features", "check_out", "load_models", "summarize", "format_feature_table", "DomainSpec", "Model",
           "FIGURES", "JSON_FILE", "CSV_FILE", "PAPER_IMAGES"]
