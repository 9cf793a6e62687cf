"""The drawing surface of a synthetic street scene: the pinhole :class:`Camera`, the z-buffered :class:`Canvas` with its
per-pixel buffers, the facing codes the renderer lights by, and :class:`SceneStats`, the geometry and object statistics
of one domain. The layout (``scene_layout``) and the composition (``scenes``) both draw on them. Numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftadapt.data import scene_objects as so

# Facing codes: how a surface is oriented, for the renderer's lighting.
FACE_GROUND, FACE_LEFT, FACE_RIGHT, FACE_FRONT, FACE_SKY = range(5)
_SKY_DEPTH = 1e6


@dataclass(frozen=True)
class SceneStats:
    """Geometry ranges and object statistics of one domain (counts: Poisson means per image, on top of the
    placements ``scene_layout`` forces into view)."""

    focal: float                            # focal length / image width
    horizon: tuple[float, float]            # horizon row / image height
    camera_height: tuple[float, float]      # metres
    road_half: tuple[float, float]          # metres from the camera to each road edge
    sidewalk: tuple[float, float]           # sidewalk width, metres
    setback: tuple[float, float]            # verge between sidewalk and the near facades, metres
    facade: dict[int, float]                # near-facade segment label -> weight (GAP: none)
    verge: dict[int, float]                 # label of the ground beyond the sidewalk -> weight
    moving_cars: float
    parked_cars: float
    trucks: float
    buses: float
    double_decker_p: float
    persons: float
    riders: float
    motorcycle_p: float
    parked_bikes: float
    poles: float
    trees: float
    props: float
    prop_labels: tuple[int, ...]            # ignored ids given to street furniture
    train_every: int                        # every n-th image has a tram, others with ``train_p``
    train_p: float
    bridge_p: float
    parking_p: float
    ego_hood: bool                          # ego-vehicle bonnet at the bottom edge (Cityscapes)
    roi_border: int                         # out-of-roi frame width in pixels in the annotation (Cityscapes)


class Canvas:
    """Per-pixel buffers with a depth test; ``paint`` writes a region where the new surface is nearer."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.ys = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
        self.xs = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
        self.label = np.full((height, width), so.SKY, np.uint8)
        self.inst = np.zeros((height, width), np.uint16)
        self.part = np.zeros((height, width), np.uint8)
        self.facing = np.full((height, width), FACE_SKY, np.uint8)
        self.depth = np.full((height, width), _SKY_DEPTH, np.float32)
        self.u = np.broadcast_to(self.xs / width, (height, width)).astype(np.float32)
        self.v = np.broadcast_to(self.ys / height, (height, width)).astype(np.float32)
        self.n_inst = 0

    def new_instance(self) -> int:
        self.n_inst += 1
        return self.n_inst

    def paint(self, rows: slice, cols: slice, mask: np.ndarray, depth, label, *, inst=0, part=0, facing=FACE_FRONT,
              u=0.0, v=0.0) -> None:
        m = mask & (depth <= self.depth[rows, cols])
        if not m.any():
            return
        for buf, val in ((self.depth, depth), (self.label, label), (self.inst, inst), (self.part, part),
                         (self.facing, facing), (self.u, u), (self.v, v)):
            region = buf[rows, cols]
            region[m] = np.broadcast_to(val, m.shape)[m] if isinstance(val, np.ndarray) else val


@dataclass(frozen=True)
class Camera:
    """Pinhole camera looking down the street: focal length and vanishing-point column in pixels, horizon row,
    height above the road in metres."""

    f: float
    cx: float
    horizon: float
    hc: float
