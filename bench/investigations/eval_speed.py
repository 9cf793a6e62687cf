"""Benchmark of ``ftadapt eval --pred-dir``: seconds for N Cityscapes-size (2048×1024) prediction/GT pairs.

    python -m ftadapt.commands.investigate eval-speed [--n 500] [--workers 2] [--repeat 3] [--json OUT]

The pairs are generated once into a cache folder (not timed): ground truth = label-id maps of random polygons over a
sky/road layout, saved like Cityscapes' PNGs; predictions = the trainIds shifted by a few pixels with some regions
relabelled, saved with ftadapt's PNG writer. Polygons make the PNGs compress like real label maps (tens of KB),
which decides the decode cost. Then it times ``evaluate_pred_dir`` (what the CLI calls: file matching, decoding,
mapping, counting) and, for comparison, a naive single-threaded loop in the style of AdaptSegNet's ``compute_iou.py``
(PIL open, np.array, a Python loop over the id→trainId pairs, bincount of 19·gt+pred on a mask), and checks that
both give the same confusion matrix. Prints JSON.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ftadapt.bench.report import host_info
from ftadapt.evaluation.folder import evaluate_pred_dir, index_predictions
from ftadapt.evaluation.frames import default_workers, index_ground_truth
from ftadapt.fsutil import atomic_path
from ftadapt.imageio import write_png
from ftadapt.labels import CITYSCAPES_ID_TO_TRAINID, CITYSCAPES_LUT, NUM_CLASSES
from ftadapt.layout import mark_output

SIZE = (2048, 1024)  # W, H of Cityscapes frames
_CACHE_VERSION = 1
_IDS = np.array([*sorted(CITYSCAPES_ID_TO_TRAINID), 0, 1, 4, 5, 6, 255])  # evaluated ids plus some ignored ones
_TARGET_S_FOR_500 = 8.0


def _polygons(draw: ImageDraw.ImageDraw, rng: np.random.Generator, values: np.ndarray, count: int) -> None:
    w, h = SIZE
    for _ in range(count):
        cx, cy, radius = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 300)
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 9)))
        radii = radius * rng.uniform(0.4, 1.0, angles.size)
        points = list(zip((cx + radii * np.cos(angles)).tolist(), (cy + radii * np.sin(angles)).tolist()))
        draw.polygon(points, fill=int(rng.choice(values)))


def _make_pair(index: int, seed: int, gt_root: Path, pred_root: Path) -> None:
    rng = np.random.default_rng([seed, index])
    gt = Image.new("L", SIZE, 23)  # sky
    draw = ImageDraw.Draw(gt)
    draw.rectangle([0, SIZE[1] // 2 + int(rng.integers(-80, 80)), SIZE[0], SIZE[1]], fill=7)  # road
    _polygons(draw, rng, _IDS, int(rng.integers(40, 120)))
    frame = f"frankfurt_{index // 1000:06d}_{index % 1000:06d}"
    (gt_root / "frankfurt").mkdir(parents=True, exist_ok=True)
    gt.save(gt_root / "frankfurt" / f"{frame}_gtFine_labelIds.png")  # Pillow's default compression, as Cityscapes

    train = CITYSCAPES_LUT[np.asarray(gt)]
    pred = Image.fromarray(np.where(train == 255, 0, train).astype(np.uint8))
    pred = pred.transform(SIZE, Image.AFFINE, (1, 0, int(rng.integers(-6, 7)), 0, 1, int(rng.integers(-6, 7))),
                          fill=0)
    _polygons(ImageDraw.Draw(pred), rng, np.arange(NUM_CLASSES), int(rng.integers(10, 40)))
    write_png(pred_root / f"{frame}_leftImg8bit.png", np.asarray(pred))


def prepare(cache: Path, n: int, seed: int, workers: int) -> Path:
    """Generate (once) n pairs under ``cache``; returns the folder holding ``gt/`` and ``pred/``."""
    from tqdm import tqdm

    folder = cache / f"n{n}-seed{seed}-v{_CACHE_VERSION}"
    if (folder / "done").is_file():
        return folder
    with atomic_path(folder, overwrite=True) as tmp:  # a cache: an unfinished folder is regenerated
        (tmp / "pred").mkdir(parents=True)
        with ThreadPoolExecutor(workers) as pool:
            jobs = [pool.submit(_make_pair, i, seed, tmp / "gt", tmp / "pred") for i in range(n)]
            for job in tqdm(jobs, desc="generate", unit="pair"):
                job.result()
        (tmp / "done").write_text("ok\n")
        mark_output(tmp, "the eval-speed investigation (a cache)")
    return folder


def naive_confusion(pairs: list[tuple[Path, Path]]) -> np.ndarray:
    """The reference-style loop: one pair at a time, mapping ids with one masked assignment per table entry."""
    table = [(i, CITYSCAPES_ID_TO_TRAINID.get(i, 255)) for i in range(34)] + [(255, 255)]
    hist = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for pred_path, gt_path in pairs:
        pred = np.array(Image.open(pred_path))
        label = np.array(Image.open(gt_path))
        mapped = label.copy()
        for src, dst in table:
            mapped[label == src] = dst
        keep = (mapped >= 0) & (mapped < NUM_CLASSES)
        hist += np.bincount(NUM_CLASSES * mapped[keep].astype(int) + pred[keep],
                            minlength=NUM_CLASSES ** 2).reshape(NUM_CLASSES, NUM_CLASSES)
    return hist


def _rate(n: int, seconds: float) -> dict:
    return {"n": n, "seconds": seconds, "pairs_per_s": n / seconds, "seconds_for_500": 500 * seconds / n}


def measure_eval_speed(*, n: int = 500, workers: int = 2, repeat: int = 3, naive_n: int | None = None, seed: int = 0,
                       cache: str | os.PathLike | None = None) -> dict:
    """Time the prediction-folder evaluation on ``n`` Cityscapes-size pairs (best of ``repeat``) and the naive loop on
    ``naive_n`` of them (default all; 0 skips it); the pairs are generated once into ``cache``."""
    if cache is None:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ftadapt" / "eval_speed"
    folder = prepare(Path(cache), n, seed, default_workers())
    pred_dir, gt_dir = folder / "pred", folder / "gt"

    load_before = os.getloadavg()[0]
    runs, cpu_seconds, result = [], [], None
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = evaluate_pred_dir(pred_dir, gt_dir, workers=workers, progress=False)
        runs.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    report = {"benchmark": "eval_speed", "size": list(SIZE), "workers": workers, "cores": default_workers(),
              "machine": host_info(),
              # other processes on the machine inflate wall times: the 1-minute load average tells how busy it was
              "loadavg_1min": {"before": load_before, "after": os.getloadavg()[0]},
              "ftadapt": {**_rate(n, min(runs)), "runs": runs, "cpu_seconds": cpu_seconds},
              "target_s_for_500": _TARGET_S_FOR_500, "meets_target": 500 * min(runs) / n <= _TARGET_S_FOR_500,
              "miou": 100 * result.miou}
    naive_n = n if naive_n is None else min(naive_n, n)
    if naive_n:
        report.update(_naive(pred_dir, gt_dir, naive_n, agrees_with=result.confusion.matrix if naive_n == n else None))
        report["speedup"] = report["naive"]["seconds_for_500"] / report["ftadapt"]["seconds_for_500"]
    return report


def _naive(pred_dir: Path, gt_dir: Path, naive_n: int, *, agrees_with: np.ndarray | None) -> dict:
    """The naive loop on the first ``naive_n`` pairs and, given the full matrix, whether it agrees with it."""
    gts, preds = index_ground_truth(gt_dir), index_predictions(pred_dir)
    pairs = [(preds[f], gts[f]) for f in sorted(gts.keys() & preds.keys())][:naive_n]
    start, cpu_start = time.perf_counter(), time.process_time()
    hist = naive_confusion(pairs)
    out = {"naive": {**_rate(naive_n, time.perf_counter() - start), "cpu_seconds": time.process_time() - cpu_start}}
    if agrees_with is not None:  # generated predictions never hold 255, so the naive 19×19 histogram is the whole count
        out["naive_agrees"] = bool(np.array_equal(hist, agrees_with))
    return out
