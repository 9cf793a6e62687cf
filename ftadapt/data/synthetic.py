"""A small synthetic two-domain street-scene dataset in the exact GTA5 and Cityscapes folder layouts.

``write_synthetic`` lets every stage (training, export, runtime, benchmark, the demo) run on a machine with no
dataset: the real loaders read its output unchanged. Scenes are composed procedurally (``ftadapt.data.scenes``): a
street in perspective under a horizon — road, sidewalks on both sides, facades of building, wall, fence and
vegetation, terrain verges, poles with traffic lights and signs, cars, trucks, buses, the occasional tram, people and
riders on bicycles or motorcycles — with occlusion by depth and objects shrinking towards the vanishing point. All 19
classes occur in nearly every image (a tram in every 4th source / 5th target image), and labels also carry ids that
map to ignore, as real annotations do (ground 6, parking 9, rail track 10, bridge 15, polegroup 18, street furniture
as static 4 / dynamic 5 / unlabeled 0, the ego vehicle 1 and the out-of-roi frame 3 in the target).

The two domains differ the way GTA5 and Cityscapes do, so a model trained on the source alone loses accuracy on the
target, while the gap stays systematic (global colour/lighting/texture statistics) so adaptation can recover part of it:

=================  ==============================================  ==============================================
                   source, "rendered" (GTA5 layout)                target, "photographed" (Cityscapes layout)
=================  ==============================================  ==============================================
palette            saturated flat colours (saturation ×1.15):      muted (×0.8) and shifted per class: pale hazy
                   deep-blue sky, bright green vegetation,         sky, olive vegetation, greyer buildings and
                   orange-brown buildings, vivid vehicles          walls, duller vehicles; overall darker (mean
                                                                   grey ~94 vs ~110) with less contrast (std ~35
                                                                   vs ~55 grey levels)
lighting           sunny: lit / shaded facades ×1.12 / ×0.78,      overcast: facades ×1.04 / ×0.92; per image an
                   per-instance brightness ±10 %                   exposure ×0.7–1.1 and a jittered cool white
                                                                   balance; tone curve, vignette, haze towards
                                                                   grey with distance; instance brightness ±20 %
textures           crisp and regular: 0.6 m tiles with grout,      irregular: blotchy asphalt, 1.2×0.8 m slabs,
                   brick walls, picket fences, window grid every   concrete panels, wire-mesh fences, plaster
                   3.2 m, two-tone vegetation, mown terrain        with windows every 4.5 m, leafy vegetation,
                   stripes, white clouds                           patchy terrain, cloudy sky shading
optics / sensor    none: colour edges exactly on label edges       Gaussian blur σ 0.75 px, then luminance and
                                                                   chroma noise (σ ≈ 3 and 2 grey levels)
object statistics  wide roads (4–8 m each side), ~5 people,        narrower roads (3–6 m), ~6 parked cars, ~3
                   ~2.5 riders, more trucks and buses (half of     people, ~1.8 riders, fewer trucks and buses,
                   them double-deckers), few street trees          many street trees and poles, more parking
camera             16:9, focal 0.8 W (wide angle), 1.6–2.2 m       2:1, focal 1.05 W (objects look bigger),
                   above the road                                  1.2–1.5 m, ego-vehicle bonnet in view
=================  ==============================================  ==============================================

Measured with a 6-layer CNN (160×80 input, 400 Adam steps, default set, two seeds): 55 mIoU on held-out source
images but 23–24 on target val, against 48 when trained on the 32 target train images. Letting batch norm also see
target batches brings 27–29, adding a MaxSquare term (λ 0.1) 28–29. An ablation puts most of the drop on the camera
(saturation, exposure, haze, blur, noise), then the palette; textures and object statistics matter little to such a
small CNN.

Class appearance is consistent within a domain (colour + texture per class), so a tiny CNN learns it in a few
hundred steps. Each image has its own random stream ``(seed, domain, split, index)``, so output is deterministic
and the first N images do not depend on how many are written.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ftadapt.data import scene_objects as so
from ftadapt.data.scene_canvas import SceneStats
from ftadapt.data.scene_render import PHOTOGRAPHED, RENDERED, DomainStyle, render
from ftadapt.data.scenes import compose_scene
from ftadapt.errors import UsageError
from ftadapt.fsutil import atomic_path, check_target
from ftadapt.imageio import write_png
from ftadapt.labels import CITYSCAPES_ID_TO_TRAINID, PALETTE
from ftadapt.layout import mark_output
from ftadapt.version import __version__

# Defaults: small enough that a tiny model trains on the CPU in minutes, yet with the real aspect ratios
# (GTA5 ~16:9, Cityscapes 2:1) and enough pixels that poles, lights and signs are several pixels wide.
DEFAULT_N_SOURCE, DEFAULT_N_TARGET_TRAIN, DEFAULT_N_TARGET_VAL = 64, 32, 16
DEFAULT_SOURCE_SIZE: tuple[int, int] = (320, 180)
DEFAULT_TARGET_SIZE: tuple[int, int] = (256, 128)
MIN_SIZE: tuple[int, int] = (64, 32)
MAX_SIDE = 4096
TARGET_CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}
MARKER = "synthetic.json"  # written at the root: how the set was made

SOURCE_STATS = SceneStats(
    focal=0.8, horizon=(0.4, 0.5), camera_height=(1.6, 2.2), road_half=(4.0, 8.0), sidewalk=(2.5, 5.0),
    setback=(0.5, 4.0), facade={so.BUILDING: 0.5, so.WALL: 0.15, so.FENCE: 0.12, so.VEGETATION: 0.1, 255: 0.13},
    verge={so.TERRAIN: 0.5, so.GROUND: 0.3, so.SIDEWALK: 0.2}, moving_cars=2.0, parked_cars=2.0, trucks=0.8,
    buses=0.6, double_decker_p=0.5, persons=4.0, riders=1.5, motorcycle_p=0.5, parked_bikes=0.5, poles=2.0,
    trees=1.0, props=1.5, prop_labels=(so.STATIC, so.UNLABELED), train_every=4, train_p=0.1, bridge_p=0.15,
    parking_p=0.2, ego_hood=False, roi_border=0)

TARGET_STATS = SceneStats(
    focal=1.05, horizon=(0.38, 0.48), camera_height=(1.2, 1.5), road_half=(3.0, 6.0), sidewalk=(2.0, 4.0),
    setback=(0.5, 3.0), facade={so.BUILDING: 0.45, so.WALL: 0.12, so.FENCE: 0.12, so.VEGETATION: 0.21, 255: 0.1},
    verge={so.TERRAIN: 0.45, so.GROUND: 0.25, so.SIDEWALK: 0.3}, moving_cars=2.0, parked_cars=6.0, trucks=0.3,
    buses=0.25, double_decker_p=0.0, persons=2.0, riders=0.8, motorcycle_p=0.25, parked_bikes=0.8, poles=4.0,
    trees=4.0, props=1.5, prop_labels=(so.STATIC, so.DYNAMIC), train_every=5, train_p=0.05, bridge_p=0.1,
    parking_p=0.4, ego_hood=True, roi_border=2)

_DOMAINS: dict[str, tuple[int, SceneStats, DomainStyle]] = {
    "source": (0, SOURCE_STATS, RENDERED), "target": (1, TARGET_STATS, PHOTOGRAPHED)}
_SPLITS = {"train": 0, "val": 1}

# Colours of the ignored Cityscapes ids in the GTA5 label palette (the 19 classes use ftadapt.labels.PALETTE).
_IGNORED_COLOURS = {4: (111, 74, 0), 5: (111, 74, 0), 6: (81, 0, 81), 9: (250, 170, 160), 10: (230, 150, 140),
                    15: (150, 100, 100), 18: (153, 153, 153)}


@dataclass(frozen=True)
class SyntheticLayout:
    """Where ``write_synthetic`` put the data and how much of it there is. Sizes are (W, H)."""

    root: Path
    gta5_root: Path
    cityscapes_root: Path
    n_source: int
    n_target_train: int
    n_target_val: int
    source_size: tuple[int, int]
    target_size: tuple[int, int]
    seed: int


def label_id_palette() -> np.ndarray:
    """The 256×3 palette of the GTA5-layout label PNGs: index = Cityscapes label id, colour = its Cityscapes colour."""
    pal = np.zeros((256, 3), np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAINID.items():
        pal[label_id] = PALETTE[train_id]
    for label_id, rgb in _IGNORED_COLOURS.items():
        pal[label_id] = rgb
    return pal


def synthesize(domain: str, split: str, index: int, size: tuple[int, int], seed: int = 0,
               ) -> tuple[np.ndarray, np.ndarray]:
    """One image and its label ids. Shape: (H, W, 3) uint8 RGB and (H, W) uint8 Cityscapes label ids."""
    code, stats, style = _DOMAINS[domain]
    rng = np.random.default_rng([seed, code, _SPLITS[split], index])
    scene = compose_scene(rng, size, stats, index)
    return render(scene, style, rng), scene.annotation


def cityscapes_frame(split: str, index: int, count: int) -> tuple[str, str]:
    """(city, frame id) of target image ``index`` of ``count``: the first half in the split's first city."""
    cities = TARGET_CITIES[split]
    first = (count + 1) // 2
    city, seq = (cities[0], index) if index < first else (cities[1], index - first)
    return city, f"{city}_{seq:06d}_000019"


def _check_args(root: Path, counts: dict[str, int], sizes: dict[str, tuple[int, int]], overwrite: bool) -> None:
    for name, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise UsageError(f"{name} must be a positive integer, got {n!r}")
    for name, size in sizes.items():
        ok = isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, (int, np.integer)) for s in size)
        if not ok or not (MIN_SIZE[0] <= size[0] <= MAX_SIDE and MIN_SIZE[1] <= size[1] <= MAX_SIDE):
            raise UsageError(f"{name} must be (W, H) with {MIN_SIZE[0]} <= W <= {MAX_SIDE} and {MIN_SIZE[1]} <= H <= "
                             f"{MAX_SIDE}, got {size!r}")
    check_target(root, overwrite=overwrite, what="--out", kind="folder")


def write_synthetic(root: str | os.PathLike, *, n_source: int = DEFAULT_N_SOURCE,
                    n_target_train: int = DEFAULT_N_TARGET_TRAIN, n_target_val: int = DEFAULT_N_TARGET_VAL,
                    source_size: tuple[int, int] = DEFAULT_SOURCE_SIZE,
                    target_size: tuple[int, int] = DEFAULT_TARGET_SIZE, seed: int = 0, overwrite: bool = False,
                    progress: bool = False) -> SyntheticLayout:
    """Write the synthetic source (``root/gta5``, GTA5 layout) and target (``root/cityscapes``, Cityscapes layout).

    The set is built in a temporary folder beside ``root`` and renamed onto it at the end, so ``root`` holds either
    the complete set or what it held before. An existing non-empty ``root`` is refused unless ``overwrite`` is set
    and it holds an earlier set (ftadapt's mark, ``ftadapt.layout.OUTPUT_MARK``).

    Args:
        root: output folder (absent or empty, or an earlier synthetic set with ``overwrite``).
        n_source, n_target_train, n_target_val: image counts of the source and the target train / val splits.
        source_size, target_size: (W, H) of the source and target images.
        seed: the same seed gives byte-identical labels and identical images.
        progress: show a tqdm progress bar.
    """
    from tqdm import tqdm

    root = Path(root).expanduser()
    counts = {"n_source": n_source, "n_target_train": n_target_train, "n_target_val": n_target_val}
    sizes = {"source_size": source_size, "target_size": target_size}
    _check_args(root, counts, sizes, overwrite)
    source_size, target_size = tuple(int(s) for s in source_size), tuple(int(s) for s in target_size)
    layout = SyntheticLayout(root, root / "gta5", root / "cityscapes", int(n_source), int(n_target_train),
                             int(n_target_val), source_size, target_size, int(seed))
    palette = label_id_palette()
    jobs = [("source", "train", i, source_size) for i in range(layout.n_source)]
    jobs += [("target", split, i, target_size) for split, n in (("train", layout.n_target_train),
                                                                 ("val", layout.n_target_val)) for i in range(n)]
    with atomic_path(root, overwrite=overwrite) as tmp:
        tmp.mkdir()
        for domain, split, i, size in tqdm(jobs, desc="synthetic", unit="img", disable=not progress):
            image, label = synthesize(domain, split, i, size, layout.seed)
            if domain == "source":
                write_png(tmp / "gta5" / "images" / f"{i + 1:05d}.png", image)
                write_png(tmp / "gta5" / "labels" / f"{i + 1:05d}.png", label, palette=palette)
            else:
                city, frame = cityscapes_frame(split, i, counts[f"n_target_{split}"])
                write_png(tmp / "cityscapes" / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", image)
                write_png(tmp / "cityscapes" / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png", label)
        meta = {k: v for k, v in asdict(layout).items() if not isinstance(v, Path)}
        mark_output(tmp, "ftadapt data synth")
        (tmp / MARKER).write_text(json.dumps({"generator": "ftadapt.data.synthetic", "ftadapt_version": __version__,
                                              **meta}, indent=2) + "\n")
    return layout
