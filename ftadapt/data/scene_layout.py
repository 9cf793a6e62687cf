"""Where things go in a synthetic street: the street's cross-section, its facade lines, and the objects on it.

Random draws follow the domain's ``SceneStats``; a few placements are forced (kept in view, at 8–30 m) so that
nearly every image shows road, sidewalk, building, wall, fence, vegetation, terrain, sky, a pole with a traffic
light and a sign, a person, a car, a rider and a truck or bus, and a tram appears every ``train_every``-th image.
Numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ftadapt.data import scene_objects as so
from ftadapt.data.scene_canvas import Camera, Canvas, SceneStats

GAP = 255  # label of a facade segment with nothing in it
_FORCED_FACADE = (so.WALL, so.FENCE, so.VEGETATION)


@dataclass
class Street:
    """The cross-section and surroundings of one street, in metres (x right of the camera, z ahead)."""

    xl: float                          # left road edge (negative)
    xr: float                          # right road edge
    swl: float                         # sidewalk widths
    swr: float
    z_end: float                       # depth of the block closing the street
    planes: list[tuple[float, dict]]   # (x of a facade line, its segments), see ``segment_arrays``
    end: dict                          # segments of the closing block, along x
    verge_z: np.ndarray                # start depths of the verge segments beyond the sidewalks
    verge_l: np.ndarray                # their labels on the left / right
    verge_r: np.ndarray
    parking: list[tuple[int, float]] = field(default_factory=list)   # (side -1/+1, width) of parking strips
    tram: tuple[float, float, float] | None = None                    # (x centre, z front, z back)

    @property
    def outer(self) -> tuple[float, float]:
        """Outer edges of the left and right sidewalks."""
        return self.xl - self.swl, self.xr + self.swr


def _draw_segments(rng: np.random.Generator, start: float, stop: float, weights: dict[int, float],
                   lengths: tuple[float, float]) -> tuple[list[float], list[int]]:
    """Consecutive segments from ``start`` past ``stop``: their start coordinates and labels drawn by ``weights``."""
    bounds = [start]
    while bounds[-1] < stop:
        bounds.append(bounds[-1] + rng.uniform(*lengths))
    return bounds[:-1], _draw_labels(rng, weights, len(bounds) - 1)


def _draw_labels(rng: np.random.Generator, weights: dict[int, float], n: int) -> list[int]:
    labels, probs = list(weights), np.array(list(weights.values()), float)
    return [labels[k] for k in rng.choice(len(labels), size=n, p=probs / probs.sum())]


def segment_arrays(rng: np.random.Generator, cv: Canvas, bounds: list[float], labels: list[int]) -> dict:
    """Facade segments as arrays for ``scenes._plane``: start ``bounds``, ``label``, ``height`` (metres, drawn per
    label), ``bump`` (canopy roughness of vegetation) and one instance each."""
    heights = {so.BUILDING: (7.0, 28.0), so.WALL: (1.0, 2.6), so.FENCE: (1.0, 2.0), so.VEGETATION: (2.5, 12.0),
               so.STATIC: (2.0, 3.5), GAP: (0.0, 0.0)}
    lab = np.array(labels, np.uint8)
    return {"bounds": np.array(bounds, np.float32), "label": lab,
            "height": np.array([rng.uniform(*heights[int(k)]) for k in lab], np.float32),
            "bump": np.where(lab == so.VEGETATION, rng.uniform(0.8, 2.5, len(lab)), 0.0).astype(np.float32),
            "inst": np.array([cv.new_instance() for _ in lab], np.uint16)}


def _force(rng: np.random.Generator, lines: list[tuple[list[float], list[int]]], windows: list[tuple[float, float]],
           needed: tuple[int, ...], replaceable: tuple[int, ...]) -> None:
    """Make each ``needed`` label appear in a segment that overlaps its line's visible ``window`` (in place)."""
    spots = [(i, j) for i, ((bounds, _), (z0, z1)) in enumerate(zip(lines, windows)) for j, b in enumerate(bounds)
             if b < z1 and (bounds[j + 1] if j + 1 < len(bounds) else np.inf) > z0]
    for label in needed:
        if any(lines[i][1][j] == label for i, j in spots):
            continue
        free = [(i, j) for i, j in spots if lines[i][1][j] in replaceable]
        if free:
            i, j = free[rng.integers(len(free))]
            lines[i][1][j] = label


def street_layout(rng: np.random.Generator, cv: Canvas, cam: Camera, stats: SceneStats, index: int) -> Street:
    """The street of one image: road edges, sidewalks, verges, parking strips, facade lines, tram and end block."""
    xl, xr = -rng.uniform(*stats.road_half), rng.uniform(*stats.road_half)
    tram = index % stats.train_every == stats.train_every // 2 or rng.random() < stats.train_p
    tram_side = 1 if xr >= -xl else -1
    if tram:  # the tram needs an outer lane wide enough to show its long side
        xl, xr = (xl, max(xr, 4.2)) if tram_side > 0 else (min(xl, -4.2), xr)
    swl, swr = rng.uniform(*stats.sidewalk, 2)
    outer = (xl - swl, xr + swr)
    near_x = (outer[0] - rng.uniform(*stats.setback), outer[1] + rng.uniform(*stats.setback))
    z_end = rng.uniform(60.0, 140.0)

    def window(x: float, side: int) -> tuple[float, float]:
        """Depths at which a line at ``x`` is in view and not too far: from where it enters the image, 30 m on."""
        z0 = cam.f * abs(x) / max(cam.cx if side < 0 else cv.w - cam.cx, 1.0)
        return z0 + 2.0, z0 + 30.0

    near = [_draw_segments(rng, 1.0, z_end, stats.facade, (6.0, 22.0)) for _ in range(2)]
    _force(rng, near, [window(near_x[0], -1), window(near_x[1], 1)], _FORCED_FACADE, (so.BUILDING, GAP))
    verge_z, verge_l = _draw_segments(rng, 0.0, z_end, stats.verge, (8.0, 30.0))
    verge_r = _draw_labels(rng, stats.verge, len(verge_z))
    _force(rng, [(verge_z, verge_l), (verge_z, verge_r)], [window(outer[0], -1), window(outer[1], 1)],
           (so.TERRAIN,), tuple(stats.verge))
    planes = [(near_x[k], segment_arrays(rng, cv, *near[k])) for k in range(2)]
    far_weights = {so.BUILDING: 0.6, so.VEGETATION: 0.3, GAP: 0.1}
    for k, sign in enumerate((-1, 1)):
        planes.append((near_x[k] + sign * rng.uniform(6.0, 20.0),
                       segment_arrays(rng, cv, *_draw_segments(rng, 1.0, z_end, far_weights, (10.0, 30.0)))))
    end = segment_arrays(rng, cv, *_draw_segments(rng, -400.0, 400.0, {so.BUILDING: 0.7, so.VEGETATION: 0.3},
                                                   (8.0, 25.0)))
    street = Street(xl, xr, swl, swr, z_end, planes, end, np.array(verge_z, np.float32),
                    np.array(verge_l, np.uint8), np.array(verge_r, np.uint8),
                    parking=[(s, 2.2) for s in (-1, 1) if rng.random() < stats.parking_p])
    if tram:
        centre = (xr - 1.6) if tram_side > 0 else (xl + 1.6)
        z0 = rng.uniform(12.0, 30.0)
        z1 = min(z0 + rng.uniform(25.0, 50.0), z_end - 1.0)
        segs = {"bounds": np.array([z0, z1], np.float32), "label": np.array([so.TRAIN, GAP], np.uint8),
                "height": np.array([3.5, 0.0], np.float32), "bump": np.zeros(2, np.float32),
                "inst": np.array([cv.new_instance(), 0], np.uint16)}
        planes.append((centre - 1.3 * tram_side, segs))
        street.tram = (centre, z0, z1)
    return street


def place_objects(rng: np.random.Generator, cam: Camera, width: int, street: Street, stats: SceneStats,
                  index: int) -> list[tuple[float, float, list[so.Prim]]]:
    """Objects as (x, z, primitives): vehicles, riders and crossing people on the road; people, poles, trees, props
    and parked bicycles on the sidewalks; an optional bridge; the tram's front face."""
    xl, xr, (ol, orr) = street.xl, street.xr, street.outer
    out: list[tuple[float, float, list[so.Prim]]] = []
    on_road: list[tuple[float, float, float]] = []  # (x, z, half width) of road users, to keep them apart

    reach_l, reach_r = 0.85 * cam.cx / cam.f, 0.85 * (width - cam.cx) / cam.f  # view half-widths per metre ahead

    def spot(lo: float, hi: float, zmin: float, zmax: float, forced: bool) -> tuple[float, float] | None:
        """A ground position with x in [lo, hi]; a ``forced`` one lies well inside the view."""
        if lo >= hi:
            return None
        if forced:  # the view widens with depth: start where part of [lo, hi] is inside it
            need = lo / reach_r if lo > 0 else (-hi / reach_l if hi < 0 else 0.0)
            zmin = max(zmin, need + 0.5)
            zmax = max(zmax, zmin + 5.0)
        z = zmin + (zmax - zmin) * rng.random() ** 1.5  # more objects near than far
        if forced:
            lo, hi = max(lo, -reach_l * z), min(hi, reach_r * z)
        return rng.uniform(lo, hi), z

    def road_user(prims: list[so.Prim], half: float, lo: float, hi: float, zmin: float, zmax: float,
                  forced: bool = False) -> None:
        for _ in range(6):
            p = spot(lo + half, hi - half, zmin, zmax, forced)
            if p is None:
                return
            if all(abs(p[0] - x) > half + h2 or abs(p[1] - z) > 7.0 for x, z, h2 in on_road):
                on_road.append((p[0], p[1], half))
                out.append((p[0], p[1], prims))
                return

    def sidewalk(prims: list[so.Prim], zmin: float = 4.0, zmax: float = 50.0, forced: bool = False,
                 band: tuple[float, float] = (0.3, 0.3)) -> None:
        left = rng.random() < 0.5
        lo, hi = (ol + band[0], xl - band[1]) if left else (xr + band[1], orr - band[0])
        p = spot(lo, hi, zmin, zmax, forced)
        if p is not None:
            out.append((p[0], p[1], prims))

    far = max(street.z_end - 5.0, 20.0)
    for k in range(1 + rng.poisson(stats.moving_cars)):
        road_user(so.car(rng), 1.0, xl, xr, 8.0 if k == 0 else 6.0, 30.0 if k == 0 else far, forced=k == 0)
    for side in (-1, 1):
        z = rng.uniform(5.0, 15.0)
        for _ in range(rng.poisson(stats.parked_cars / 2)):
            x = (xl + 1.15) if side < 0 else (xr - 1.15)
            road_user(so.car(rng), 1.0, x - 1.15, x + 1.15, z, z + 0.1)
            z += rng.uniform(5.0, 8.0)
    heavy = [index % 2 == 0] + [rng.random() < stats.trucks / (stats.trucks + stats.buses)
                                for _ in range(rng.poisson(stats.trucks + stats.buses))]
    for k, is_truck in enumerate(heavy):
        prims = so.truck(rng) if is_truck else so.bus(rng, decks=2 if rng.random() < stats.double_decker_p else 1)
        road_user(prims, 1.3, xl, xr, 10.0 if k == 0 else 8.0, 30.0 if k == 0 else far, forced=k == 0)
    for k in range(1 + rng.poisson(stats.riders)):
        motor = (index % 2 == 1) if k == 0 else rng.random() < stats.motorcycle_p
        prims = so.two_wheeler(rng, motor, ridden=True)
        if rng.random() < 0.7 or k == 0:
            road_user(prims, 0.9, xl, xr, 8.0, 30.0 if k == 0 else 45.0, forced=k == 0)
        else:
            sidewalk(prims)
    for _ in range(rng.poisson(stats.parked_bikes)):
        sidewalk(so.two_wheeler(rng, rng.random() < 0.3, ridden=False), band=(0.2, 0.6))
    for k in range(1 + rng.poisson(stats.persons)):
        if k > 0 and rng.random() < 0.12:
            road_user(so.person(rng), 0.3, xl, xr, 6.0, 35.0)
        else:
            sidewalk(so.person(rng), 5.0 if k == 0 else 4.0, 25.0 if k == 0 else 50.0, forced=k == 0)
    for k in range(1 + rng.poisson(stats.poles)):
        light, sign = (True, True) if k == 0 else (rng.random() < 0.4, rng.random() < 0.5)
        label = so.POLEGROUP if k > 0 and rng.random() < 0.15 else so.POLE
        left = rng.random() < 0.5
        x, toward = (xl - 0.35, 1.0) if left else (xr + 0.35, -1.0)
        p = spot(x, x + 1e-3, 10.0 if k == 0 else 6.0, 25.0 if k == 0 else 60.0, forced=k == 0)
        if p is not None:
            out.append((x, p[1], so.pole(rng, light, sign, toward, label)))
    for _ in range(rng.poisson(stats.trees)):
        sidewalk(so.tree(rng), 6.0, 70.0, band=(0.8, 0.5))
    for _ in range(rng.poisson(stats.props)):
        sidewalk(so.prop(rng, stats.prop_labels[rng.integers(len(stats.prop_labels))]), 5.0, 50.0)
    if rng.random() < stats.bridge_p:
        out.append((0.0, rng.uniform(35.0, min(70.0, street.z_end - 2.0)),
                    so.bridge(ol - 1.0, orr + 1.0, rng.uniform(5.0, 7.0))))
    if street.tram is not None:
        centre, z0, z1 = street.tram
        out = [o for o in out if not (abs(o[0] - centre) < 2.2 and z0 - 2.0 < o[1] < z1 + 2.0)]
        out.append((centre, z0, so.tram_front()))
    return out
