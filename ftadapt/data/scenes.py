"""Procedural street scenes seen through a pinhole camera, drawn into a z-buffered canvas (numpy only).

The camera looks down a straight street: the ground is the plane ``Y = 0`` with the camera ``camera_height`` metres
above it, the horizon is a row and the street's vanishing point sits on it. A world point (X right, Y up, Z ahead)
projects to ``x = cx + f·X/Z``, ``y = horizon + f·(camera_height − Y)/Z``, so everything shrinks towards the horizon.
A scene is drawn from

- the sky (everything not covered), the ground (road with markings, an optional parking strip, sidewalks, then
  terrain / ground / paving verges and tram tracks, all decided per pixel from its ground position),
- vertical planes: a near and a far facade line on each side of the street, split along the street into segments
  of building, wall, fence, vegetation or gaps, and a facing block at the street's end,
- objects (``ftadapt.data.scene_objects``): cars, trucks, buses, a tram, people, riders on bicycles or motorcycles,
  poles with traffic lights and signs, trees, street furniture and bridges,

with a depth test per pixel, so nearer things occlude farther ones whatever the drawing order. Besides the label ids
the canvas keeps, per pixel, the instance, a part code, the facing of the surface, its depth and surface coordinates
(u, v) in metres: the renderer (``ftadapt.data.scene_render``) textures and shades from these, per domain.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftadapt.data import scene_objects as so
from ftadapt.data.scene_canvas import FACE_FRONT, FACE_GROUND, FACE_LEFT, FACE_RIGHT, Camera, Canvas, SceneStats
from ftadapt.data.scene_layout import GAP, Street, place_objects, street_layout


@dataclass
class Scene:
    """Everything drawn for one image. Shape: every array is (H, W)."""

    labels: np.ndarray       # uint8 Cityscapes label ids as drawn
    annotation: np.ndarray   # uint8 label ids as written (``labels`` plus annotation-only ids such as out of roi)
    inst: np.ndarray         # uint16 instance index, 0 = none
    part: np.ndarray         # uint8 part code (scene_objects.BODY …)
    facing: np.ndarray       # uint8 facing code (FACE_GROUND …)
    depth: np.ndarray        # float32 metres (sky: 1e6)
    u: np.ndarray            # float32 surface coordinates, metres (sky: screen fractions)
    v: np.ndarray
    n_instances: int


def _ground(cv: Canvas, cam: Camera, street: Street) -> None:
    """Road, markings, parking strips, sidewalks, verges and tram tracks on the ground plane below the horizon."""
    top = int(np.clip(np.ceil(cam.horizon + 0.5), 0, cv.h))
    ys = cv.ys[top:]
    z = np.minimum(cam.f * cam.hc / np.maximum(ys - cam.horizon, 1e-3), 1e4)
    x = (cv.xs - cam.cx) * z / cam.f
    xl, xr, swl, swr = street.xl, street.xr, street.swl, street.swr
    verge_l = street.verge_l[np.searchsorted(street.verge_z, z, side="right") - 1]
    verge_r = street.verge_r[np.searchsorted(street.verge_z, z, side="right") - 1]
    label = np.where(x < xl - swl, verge_l, verge_r)
    label = np.where((x >= xl - swl) & (x < xr + swr), np.uint8(so.SIDEWALK), label)
    label = np.where((x >= xl) & (x < xr), np.uint8(so.ROAD), label)
    for side, width in street.parking:
        edge = xl if side < 0 else xr
        label[(label == so.ROAD) & (np.abs(x - edge) < width)] = so.PARKING
    if street.tram is not None:  # its tracks run the length of the street
        label[np.abs(x - street.tram[0]) < 0.9] = so.RAIL_TRACK
    centre = (xl + xr) / 2
    paint = ((np.abs(x - centre) < 0.07) & (np.mod(z, 9.0) < 4.0)) | (np.abs(x - xl - 0.3) < 0.06) | (
        np.abs(x - xr + 0.3) < 0.06)
    part = np.where(paint & (label == so.ROAD), so.PAINT, so.BODY).astype(np.uint8)
    cv.paint(slice(top, None), slice(None), np.ones(label.shape, bool), np.broadcast_to(z, label.shape), label,
             part=part, facing=FACE_GROUND, u=x, v=np.broadcast_to(z, label.shape))


def _plane(cv: Canvas, cam: Camera, cols: slice, depth: np.ndarray, along: np.ndarray, segs: dict,
           facing: int) -> None:
    """A vertical facade line: for each column its depth and the coordinate along the line pick a segment
    (``segs``: sorted ``bounds`` and per-segment ``label``, ``height``, ``bump``, ``inst``) that stands from the ground
    to its height (vegetation with a bumpy top)."""
    idx = np.searchsorted(segs["bounds"], along, side="right") - 1
    n = len(segs["label"])
    valid = (idx >= 0) & (idx < n) & (depth > 0.5)
    idx = np.clip(idx, 0, n - 1)
    label = np.where(valid, segs["label"][idx], GAP)
    valid &= label != GAP
    height = segs["height"][idx] + segs["bump"][idx] * 0.5 * (np.sin(along * 1.3) + np.sin(along * 0.47 + 1.0))
    top = cam.horizon + cam.f * (cam.hc - height) / depth
    bottom = cam.horizon + cam.f * cam.hc / depth
    mask = (cv.ys >= top) & (cv.ys < bottom) & valid
    v = cam.hc - (cv.ys - cam.horizon) * depth / cam.f
    cv.paint(slice(None), cols, mask, depth.astype(np.float32), label.astype(np.uint8), inst=segs["inst"][idx],
             facing=facing, u=along, v=v)


def _draw(cv: Canvas, cam: Camera, x: float, z: float, prims: list[so.Prim]) -> None:
    """Draw an object standing at ground position (x, z), its primitives in order."""
    b = np.array([so.prim_bounds(q) for q in prims])
    x0 = int(max(np.floor(cam.cx + cam.f * (x + b[:, 0].min()) / z), 0))
    x1 = int(min(np.ceil(cam.cx + cam.f * (x + b[:, 1].max()) / z) + 1, cv.w))
    y0 = int(max(np.floor(cam.horizon + cam.f * (cam.hc - b[:, 3].max()) / z), 0))
    y1 = int(min(np.ceil(cam.horizon + cam.f * (cam.hc - b[:, 2].min()) / z) + 1, cv.h))
    if x0 >= x1 or y0 >= y1:
        return
    rows, cols = slice(y0, y1), slice(x0, x1)
    uu = (cv.xs[:, cols] - cam.cx) * z / cam.f - x
    vv = cam.hc - (cv.ys[rows] - cam.horizon) * z / cam.f
    inst = cv.new_instance()
    for q in prims:
        cv.paint(rows, cols, so.prim_mask(q, uu, vv), np.float32(z), q.label, inst=inst, part=q.part, u=uu, v=vv)


def compose_scene(rng: np.random.Generator, size: tuple[int, int], stats: SceneStats, index: int) -> Scene:
    """Compose one street scene of ``size`` (W, H). ``index`` (the image number) schedules rare objects so that a
    handful of consecutive images already holds all 19 classes."""
    w, h = size
    cv = Canvas(w, h)
    cam = Camera(f=stats.focal * w * rng.uniform(0.95, 1.05), cx=w * rng.uniform(0.42, 0.58),
                  horizon=h * rng.uniform(*stats.horizon), hc=rng.uniform(*stats.camera_height))
    street = street_layout(rng, cv, cam, stats, index)
    _ground(cv, cam, street)
    left, right = slice(0, int(np.floor(cam.cx))), slice(int(np.floor(cam.cx)), w)
    for x_plane, segs in street.planes:
        cols = left if x_plane < 0 else right
        dx = cv.xs[:, cols] - cam.cx
        depth = np.where(dx * x_plane > 0, cam.f * x_plane / np.where(dx == 0, 1e-6, dx), -1.0)
        depth = np.where(depth > street.z_end, -1.0, depth)
        _plane(cv, cam, cols, depth, depth, segs, FACE_LEFT if x_plane < 0 else FACE_RIGHT)
    end_x = (cv.xs - cam.cx) * street.z_end / cam.f
    _plane(cv, cam, slice(None), np.full_like(end_x, street.z_end), end_x, street.end, FACE_FRONT)
    for x, z, prims in place_objects(rng, cam, cv.w, street, stats, index):
        _draw(cv, cam, x, z, prims)
    if stats.ego_hood:
        hood = h * rng.uniform(0.06, 0.1) * (1.0 - 0.7 * ((cv.xs - w / 2) / (w / 2)) ** 2)
        cv.paint(slice(None), slice(None), cv.ys >= h - hood, np.float32(0.1), so.EGO_VEHICLE, facing=FACE_FRONT,
                 u=np.broadcast_to(cv.xs / w, (h, w)), v=np.broadcast_to(cv.ys / h, (h, w)))
    annotation = cv.label.copy()
    if stats.roi_border:
        b = stats.roi_border
        annotation[:b], annotation[-b:], annotation[:, :b], annotation[:, -b:] = (so.OUT_OF_ROI,) * 4
    return Scene(cv.label, annotation, cv.inst, cv.part, cv.facing, cv.depth, cv.u, cv.v, cv.n_inst)
