"""``ftadapt data synth`` and ``ftadapt data check``: the built-in synthetic dataset and the dataset doctor."""
from __future__ import annotations

import time
from pathlib import Path

import click

from ftadapt.commands.common import DATASET_KINDS, SIZE, check_json, echo, emit, json_option, overwrite_option
from ftadapt.config import SEED_MAX


@click.group()
def data() -> None:
    """Synthetic data and the dataset doctor."""


@data.command("synth")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write (absent or empty): OUT/gta5 (GTA5 layout) and OUT/cityscapes (Cityscapes layout).")
@click.option("--n-source", type=click.IntRange(1), default=64, show_default=True, help="Source (GTA5-layout) images.")
@click.option("--n-train", type=click.IntRange(1), default=32, show_default=True, help="Target train images.")
@click.option("--n-val", type=click.IntRange(1), default=16, show_default=True, help="Target val images.")
@click.option("--source-size", type=SIZE, default="320x180", show_default=True, help="Source image size W×H.")
@click.option("--target-size", type=SIZE, default="256x128", show_default=True, help="Target image size W×H.")
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=0, show_default=True,
              help="Same seed, same dataset.")
@click.option("--overwrite", is_flag=True,
              help="Replace a synthetic dataset written to OUT before (never another folder), and the JSON file.")
@json_option("the summary")
def synth(out_dir: Path, n_source: int, n_train: int, n_val: int, source_size: tuple[int, int],
          target_size: tuple[int, int], seed: int, overwrite: bool, json_out: str | None) -> None:
    """Write the synthetic two-domain street-scene dataset (rendered source → photographed target)."""
    from ftadapt.data.synthetic import write_synthetic
    from ftadapt.machine import check_memory

    check_memory({"--source-size": source_size, "--target-size": target_size})
    check_json(json_out, overwrite, beside=[("--out", out_dir)])
    start = time.perf_counter()
    layout = write_synthetic(out_dir, n_source=n_source, n_target_train=n_train, n_target_val=n_val,
                             source_size=source_size, target_size=target_size, seed=seed, overwrite=overwrite,
                             progress=True)
    seconds = time.perf_counter() - start
    rows = [("source", "train", layout.n_source, layout.source_size, layout.gta5_root),
            ("target", "train", layout.n_target_train, layout.target_size, layout.cityscapes_root),
            ("target", "val", layout.n_target_val, layout.target_size, layout.cityscapes_root)]
    echo(f"{'domain':<8}{'split':<7}{'images':>7}  {'size':<9} root", json_out)
    for domain, split, n, (w, h), root in rows:
        echo(f"{domain:<8}{split:<7}{n:>7}  {f'{w}x{h}':<9} {root}", json_out)
    echo(f"wrote {sum(r[2] for r in rows)} images with labels in {seconds:.1f} s (seed {seed})", json_out)
    emit({"root": str(layout.root), "gta5_root": str(layout.gta5_root),
          "cityscapes_root": str(layout.cityscapes_root), "seed": seed, "seconds": round(seconds, 3),
          "splits": [{"domain": d, "split": s, "images": n, "size": list(size), "root": str(r)}
                     for d, s, n, size, r in rows]}, json_out, overwrite=overwrite)


@data.command("check")
@click.option("--dataset", "kind", type=click.Choice(DATASET_KINDS), required=True, help="Which layout ROOT holds.")
@click.option("--root", type=click.Path(path_type=Path), required=True,
              help="Dataset root: GTA5 images/+labels/, Cityscapes leftImg8bit/+gtFine/, SYNTHIA RGB/+GT/LABELS/.")
@click.option("--split", "splits", type=click.Choice(["train", "val"]), multiple=True,
              help="Cityscapes split to check (repeatable); default: train and val.")
@click.option("--list-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Check only the images this list file names (one split).")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Decoding threads.")
@click.option("--max-problems", type=click.IntRange(0), default=20, show_default=True,
              help="How many problems to list per split (all are counted).")
@json_option("the report")
@overwrite_option()
def check(kind: str, root: Path, splits: tuple[str, ...], list_file: Path | None, workers: int, max_problems: int,
          json_out: str | None, overwrite: bool) -> None:
    """Check a GTA5 / Cityscapes / SYNTHIA folder (the dataset doctor).

    Counts image/label pairs, finds missing, corrupt and size-mismatched files and label values outside the known
    ids, and prints the trainId pixel histogram. Exits 1 when the dataset is not usable."""
    from ftadapt.data.check import check_dataset, format_report
    from ftadapt.errors import DatasetError

    check_json(json_out, overwrite, [root, *([list_file] if list_file else [])])
    report = check_dataset(kind, root, splits=list(splits) or None, list_file=list_file, workers=workers,
                           max_problems=max_problems)
    echo(format_report(report), json_out)
    emit(report.to_dict(), json_out, overwrite=overwrite)
    if not report.usable:
        errors = sum(s.n_errors for s in report.splits)
        raise DatasetError(f"{kind} at {root} is not usable: {errors} errors (listed above); fix them and rerun "
                           "`ftadapt data check`")
