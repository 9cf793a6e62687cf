"""Street objects for the synthetic scenes: each is a flat cut-out ("billboard") made of primitives in metres.

An object stands on the ground at (X, Z) and faces the camera; its primitives are drawn in list order (later ones in
front) in local coordinates ``u`` (metres right of the object's centre) and ``v`` (metres above the ground). Every
primitive carries its Cityscapes label id and a part code (a material such as glass or tyre, coloured per domain by
the renderer), so the same geometry serves both domains. Numpy only.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

# Cityscapes label ids the composer draws (ftadapt.labels maps them to trainIds).
UNLABELED, EGO_VEHICLE, OUT_OF_ROI, STATIC, DYNAMIC, GROUND = 0, 1, 3, 4, 5, 6
ROAD, SIDEWALK, PARKING, RAIL_TRACK = 7, 8, 9, 10
BUILDING, WALL, FENCE, BRIDGE, POLE, POLEGROUP, LIGHT, SIGN = 11, 12, 13, 15, 17, 18, 19, 20
VEGETATION, TERRAIN, SKY, PERSON, RIDER = 21, 22, 23, 24, 25
CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = 26, 27, 28, 31, 32, 33

# Part codes: materials inside an object whose colour does not follow the class colour.
BODY, GLASS, TYRE, LAMP_RED, LAMP_GREEN, PAINT, SKIN, LEGS, BARK, WHITE, HELMET = range(11)


class Prim(NamedTuple):
    """One primitive: ``kind`` is rect (u0, u1, v0, v1), ellipse (cu, cv, ru, rv), ring (cu, cv, r_out, r_in),
    trap (v0, v1, u0 bottom, u1 bottom, u0 top, u1 top) or seg (u0, v0, u1, v1, thickness)."""

    kind: str
    p: tuple[float, ...]
    label: int
    part: int = BODY


def prim_bounds(prim: Prim) -> tuple[float, float, float, float]:
    """(u_min, u_max, v_min, v_max) of a primitive."""
    k, p = prim.kind, prim.p
    if k == "rect":
        return p[0], p[1], p[2], p[3]
    if k in ("ellipse", "ring"):
        ru, rv = (p[2], p[3]) if k == "ellipse" else (p[2], p[2])
        return p[0] - ru, p[0] + ru, p[1] - rv, p[1] + rv
    if k == "trap":
        return min(p[2], p[4]), max(p[3], p[5]), p[0], p[1]
    if k == "seg":
        r = p[4] / 2
        return min(p[0], p[2]) - r, max(p[0], p[2]) + r, min(p[1], p[3]) - r, max(p[1], p[3]) + r
    raise ValueError(f"unknown primitive {k!r}")


def prim_mask(prim: Prim, uu: np.ndarray, vv: np.ndarray) -> np.ndarray:
    """Which sample points lie inside the primitive. Shape: uu (1, w), vv (h, 1) → (h, w) bool."""
    k, p = prim.kind, prim.p
    if k == "rect":
        return (uu >= p[0]) & (uu < p[1]) & (vv >= p[2]) & (vv < p[3])
    if k == "ellipse":
        return ((uu - p[0]) / p[2]) ** 2 + ((vv - p[1]) / p[3]) ** 2 <= 1.0
    if k == "ring":
        d2 = (uu - p[0]) ** 2 + (vv - p[1]) ** 2
        return (d2 <= p[2] ** 2) & (d2 >= p[3] ** 2)
    if k == "trap":
        t = (vv - p[0]) / (p[1] - p[0])
        lo, hi = p[2] + (p[4] - p[2]) * t, p[3] + (p[5] - p[3]) * t
        return (vv >= p[0]) & (vv < p[1]) & (uu >= lo) & (uu < hi)
    if k == "seg":
        du, dv = p[2] - p[0], p[3] - p[1]
        t = np.clip(((uu - p[0]) * du + (vv - p[1]) * dv) / max(du * du + dv * dv, 1e-9), 0.0, 1.0)
        return (uu - p[0] - t * du) ** 2 + (vv - p[1] - t * dv) ** 2 <= (p[4] / 2) ** 2
    raise ValueError(f"unknown primitive {k!r}")


def _mirror(prims: list[Prim]) -> list[Prim]:
    """The primitives plus their mirror images about u = 0 (for left/right pairs such as wheels and lamps)."""
    out = list(prims)
    for q in prims:
        p = q.p
        if q.kind == "rect":
            out.append(q._replace(p=(-p[1], -p[0], p[2], p[3])))
        elif q.kind in ("ellipse", "ring"):
            out.append(q._replace(p=(-p[0], *p[1:])))
    return out


def car(rng: np.random.Generator, scale: float = 1.0) -> list[Prim]:
    """A car seen from behind or ahead: body, cabin with rear/front window, tyres and lamps (~1.8 × 1.5 m)."""
    w, h = rng.uniform(1.7, 1.95) * scale / 2, rng.uniform(1.35, 1.65) * scale
    lamp = WHITE if rng.random() < 0.4 else LAMP_RED  # seen from ahead (headlights) or behind (tail lights)
    prims = [Prim("rect", (-w, w, 0.22 * h, 0.6 * h), CAR),
             Prim("trap", (0.6 * h, h, -0.95 * w, 0.95 * w, -0.7 * w, 0.7 * w), CAR),
             Prim("trap", (0.64 * h, 0.95 * h, -0.85 * w, 0.85 * w, -0.64 * w, 0.64 * w), CAR, GLASS)]
    return _mirror([Prim("rect", (-0.92 * w, -0.62 * w, 0.0, 0.28 * h), CAR, TYRE)]) + prims + _mirror(
        [Prim("rect", (-0.95 * w, -0.7 * w, 0.42 * h, 0.54 * h), CAR, lamp)])


def truck(rng: np.random.Generator, scale: float = 1.0) -> list[Prim]:
    """A lorry from behind: a tall cargo box over a dark chassis and twin tyres (~2.5 × 3.6 m)."""
    w, h = rng.uniform(2.3, 2.6) * scale / 2, rng.uniform(3.0, 3.9) * scale
    prims = _mirror([Prim("rect", (-0.95 * w, -0.55 * w, 0.0, 0.22 * h), TRUCK, TYRE)])
    prims += [Prim("rect", (-0.9 * w, 0.9 * w, 0.15 * h, 0.3 * h), TRUCK, TYRE),
              Prim("rect", (-w, w, 0.28 * h, h), TRUCK),
              Prim("rect", (-0.02 * w, 0.02 * w, 0.32 * h, 0.95 * h), TRUCK, TYRE)]
    return prims + _mirror([Prim("rect", (-0.98 * w, -0.8 * w, 0.3 * h, 0.36 * h), TRUCK, LAMP_RED)])


def bus(rng: np.random.Generator, scale: float = 1.0, decks: int = 1) -> list[Prim]:
    """A bus from behind or ahead with one window band per deck (~2.5 × 3.2 m, 4.3 m with two decks)."""
    w, h = 1.27 * scale, (3.1 if decks == 1 else 4.3) * scale * rng.uniform(0.95, 1.05)
    prims = _mirror([Prim("rect", (-0.9 * w, -0.6 * w, 0.0, 0.12 * h), BUS, TYRE)])
    prims.append(Prim("rect", (-w, w, 0.1 * h, h), BUS))
    band = (h - 0.9 * scale) / decks
    for d in range(decks):
        v0 = 0.9 * scale + d * band
        prims.append(Prim("rect", (-0.9 * w, 0.9 * w, v0 + 0.25 * band, v0 + 0.85 * band), BUS, GLASS))
    return prims + _mirror([Prim("rect", (-0.97 * w, -0.8 * w, 0.2 * h, 0.27 * h), BUS, LAMP_RED)])


def tram_front(scale: float = 1.0) -> list[Prim]:
    """The end face of a tram or train (its long side is a plane drawn by the composer)."""
    w = 1.3 * scale
    return [Prim("rect", (-w, w, 0.0, 0.45), TRAIN, TYRE), Prim("rect", (-w, w, 0.4, 3.5 * scale), TRAIN),
            Prim("rect", (-0.85 * w, 0.85 * w, 1.7 * scale, 3.0 * scale), TRAIN, GLASS)]


def person(rng: np.random.Generator, scale: float = 1.0) -> list[Prim]:
    """A pedestrian: legs (walking or standing), torso, arms and head; ~0.5 × 1.75 m."""
    h = rng.uniform(1.55, 1.95) * scale
    hip, shoulder, stride = 0.48 * h, 0.8 * h, rng.uniform(0.0, 0.18) * h
    return [Prim("seg", (0.0, hip, -stride, 0.03 * h, 0.085 * h), PERSON, LEGS),
            Prim("seg", (0.0, hip, stride, 0.03 * h, 0.085 * h), PERSON, LEGS),
            Prim("rect", (-0.12 * h, 0.12 * h, hip - 0.02 * h, shoulder), PERSON),
            Prim("seg", (-0.13 * h, shoulder - 0.02 * h, -0.16 * h, hip + 0.02 * h, 0.055 * h), PERSON),
            Prim("seg", (0.13 * h, shoulder - 0.02 * h, 0.16 * h, hip + 0.02 * h, 0.055 * h), PERSON),
            Prim("ellipse", (0.0, 0.9 * h, 0.055 * h, 0.075 * h), PERSON, SKIN)]


def _flip(prims: list[Prim]) -> list[Prim]:
    """The primitives mirrored about u = 0 (an object facing the other way)."""
    out = []
    for q in prims:
        p = q.p
        if q.kind == "rect":
            p = (-p[1], -p[0], p[2], p[3])
        elif q.kind in ("ellipse", "ring"):
            p = (-p[0], *p[1:])
        elif q.kind == "trap":
            p = (p[0], p[1], -p[3], -p[2], -p[5], -p[4])
        else:
            p = (-p[0], p[1], -p[2], p[3], p[4])
        out.append(q._replace(p=p))
    return out


def two_wheeler(rng: np.random.Generator, motor: bool, ridden: bool, scale: float = 1.0) -> list[Prim]:
    """A bicycle or motorcycle seen from the side, with its rider (label rider) sitting on top when ``ridden``."""
    label = MOTORCYCLE if motor else BICYCLE
    r, half = 0.32 * scale if motor else 0.34 * scale, 0.72 * scale if motor else 0.55 * scale
    tyre = 0.1 * scale if motor else 0.045 * scale
    prims = [Prim("ring", (-half, r, r, r - tyre), label, TYRE), Prim("ring", (half, r, r, r - tyre), label, TYRE)]
    if motor:
        prims += [Prim("ellipse", (0.0, 1.6 * r, 0.65 * half, 0.55 * r), label),
                  Prim("seg", (0.6 * half, 2.2 * r, half, r, 0.09 * scale), label)]
    else:
        t = 0.04 * scale
        prims += [Prim("seg", (-half, r, 0.0, r, t), label), Prim("seg", (0.0, r, -0.25 * half, 2.3 * r, t), label),
                  Prim("seg", (-half, r, -0.25 * half, 2.3 * r, t), label),
                  Prim("seg", (0.0, r, 0.75 * half, 2.3 * r, t), label),
                  Prim("seg", (half, r, 0.75 * half, 2.6 * r, t), label)]
    if ridden:
        seat = (2.6 if motor else 2.4) * r
        h = rng.uniform(0.95, 1.1) * scale  # seated rider: seat to the top of the head
        hip, shoulder = (-0.2 * half, seat), ((0.15 if motor else 0.2) * half, seat + 0.62 * h)
        prims += [Prim("seg", (*hip, 0.0, 1.0 * r, 0.13 * scale), RIDER, LEGS),
                  Prim("seg", (*hip, *shoulder, 0.34 * scale), RIDER),
                  Prim("seg", (*shoulder, 0.75 * half, 2.7 * r, 0.09 * scale), RIDER),
                  Prim("ellipse", (shoulder[0], shoulder[1] + 0.22 * scale, 0.12 * scale, 0.14 * scale), RIDER,
                       HELMET if motor else SKIN)]
    return _flip(prims) if rng.random() < 0.5 else prims


def pole(rng: np.random.Generator, light: bool, sign: bool, toward: float, label: int = POLE) -> list[Prim]:
    """A pole (4–8 m) with an optional traffic light on an arm over ``toward`` (±1, the road side) and an optional
    sign at eye level; ``label`` POLEGROUP makes a pair of poles annotated as one polegroup."""
    h, r = rng.uniform(4.0, 7.5), rng.uniform(0.07, 0.12)
    prims = [Prim("rect", (-r, r, 0.0, h), label)]
    if label == POLEGROUP:
        prims.append(Prim("rect", (0.35 - r, 0.35 + r, 0.0, 0.8 * h), label))
    if light:
        arm = rng.uniform(0.0, 1.5) * toward
        cx, top = arm, h - 0.15
        prims += [Prim("seg", (0.0, h - 0.2, arm, h - 0.2, 0.09), label),
                  Prim("rect", (cx - 0.18, cx + 0.18, top - 0.95, top), LIGHT)]
        for i, part in enumerate((LAMP_RED, LAMP_RED, LAMP_GREEN)):
            prims.append(Prim("ellipse", (cx, top - 0.17 - 0.3 * i, 0.09, 0.09), LIGHT, part))
    if sign:
        s, v = rng.uniform(0.55, 0.8), rng.uniform(2.2, 3.0)
        shape = rng.integers(3)
        if shape == 0:
            prims += [Prim("ellipse", (0.0, v, s / 2, s / 2), SIGN, WHITE), Prim("ellipse", (0.0, v, s / 2.6, s / 2.6),
                                                                                  SIGN)]
        elif shape == 1:
            prims += [Prim("rect", (-s / 2, s / 2, v - s / 2, v + s / 2), SIGN, WHITE),
                      Prim("rect", (-s / 2.6, s / 2.6, v - s / 2.6, v + s / 2.6), SIGN)]
        else:
            prims += [Prim("trap", (v - s / 2, v + s / 2, -s / 2, s / 2, 0.0, 0.0), SIGN, WHITE),
                      Prim("trap", (v - s / 3, v + s / 4, -s / 3.2, s / 3.2, 0.0, 0.0), SIGN)]
    return prims


def tree(rng: np.random.Generator, scale: float = 1.0) -> list[Prim]:
    """A street tree: trunk and one or two crown blobs (all vegetation, as Cityscapes annotates trees)."""
    h = rng.uniform(2.0, 3.2) * scale
    rc = rng.uniform(1.3, 2.4) * scale
    prims = [Prim("rect", (-0.16 * scale, 0.16 * scale, 0.0, h + 0.5 * rc), VEGETATION, BARK),
             Prim("ellipse", (0.0, h + rc, rc, rc * rng.uniform(0.9, 1.3)), VEGETATION)]
    if rng.random() < 0.5:
        off = rng.uniform(-0.7, 0.7) * rc
        prims.append(Prim("ellipse", (off, h + 1.5 * rc, 0.7 * rc, 0.7 * rc), VEGETATION))
    return prims


def prop(rng: np.random.Generator, label: int) -> list[Prim]:
    """Street furniture (a bin, box or kiosk) annotated with an ignored id such as static or dynamic."""
    w, h = rng.uniform(0.5, 1.6) / 2, rng.uniform(0.7, 2.2)
    return [Prim("rect", (-w, w, 0.0, h), label), Prim("rect", (-0.8 * w, 0.8 * w, 0.7 * h, 0.9 * h), label, WHITE)]


def bridge(left: float, right: float, clearance: float) -> list[Prim]:
    """An overpass spanning the street: a deck from ``left`` to ``right`` (metres) on two piers."""
    return [Prim("rect", (left - 30.0, right + 30.0, clearance, clearance + 1.6), BRIDGE),
            Prim("rect", (left - 1.2, left, 0.0, clearance), BRIDGE),
            Prim("rect", (right, right + 1.2, 0.0, clearance), BRIDGE)]
