"""Turn a composed ``Scene`` into an RGB image in one of two looks: "rendered" (GTA5-like) or "photographed"
(Cityscapes-like). See ``ftadapt.data.synthetic`` for what differs between the two and why. Numpy + Pillow.

Per pixel: the domain's class colour (times a per-instance tint), a class texture computed from the surface
coordinates (u, v) in metres and from screen-space noise, an accent colour where the texture says so (windows, grout,
mortar, clouds …), part colours (glass, tyres, lamps, skin …) and lighting by surface facing; then the domain's
camera: saturation, and for the photographed look haze, white balance, exposure, tone curve, vignetting, blur and
sensor noise.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

from ftadapt.data import scene_objects as so
from ftadapt.data.scene_canvas import FACE_SKY
from ftadapt.data.scenes import Scene

RGB = tuple[int, int, int]


class Texel(NamedTuple):
    """The masked pixels of one class: surface coordinates, depth and three screen noises in [0, 1)."""

    u: np.ndarray
    v: np.ndarray
    z: np.ndarray
    low: np.ndarray   # smooth, ~1/8 of the image height per blob
    mid: np.ndarray   # smooth, a few pixels per blob
    fine: np.ndarray  # per pixel


# A texture returns a brightness factor and, optionally, where the class's accent colour replaces its base colour.
Texture = Callable[[Texel], tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class DomainStyle:
    """Colours, textures, lighting and camera of one domain."""

    base: dict[int, RGB]                  # label id -> colour
    accent: dict[int, RGB]                # label id -> second colour used where its texture says
    parts: dict[int, RGB]                 # part code -> colour
    textures: dict[int, Texture]          # label id -> texture (others are flat)
    light: tuple[float, ...]              # brightness per facing code (ground, left, right, front, sky)
    tint: tuple[float, float]             # per-instance brightness spread, per-channel spread
    saturation: float
    photo: bool                           # add haze, white balance, exposure, vignetting, blur and sensor noise


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def cell_noise(u: np.ndarray, v: np.ndarray, salt: int) -> np.ndarray:
    """A fixed random value in [0, 1) per integer cell (floor(u), floor(v)): tiles, bricks, panels."""
    h = (np.floor(u).astype(np.int64) * 73856093) ^ (np.floor(v).astype(np.int64) * 19349663) ^ salt
    h = h.astype(np.uint64) * np.uint64(2654435761)
    h ^= h >> np.uint64(29)
    return ((h & np.uint64(0xFFFF)).astype(np.float32)) / 65536.0


def _between(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (x >= lo) & (x < hi)


def _value_noise(rng: np.random.Generator, width: int, height: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid upsampled bicubically. Shape: (H, W) float32."""
    gw, gh = int(np.ceil(width / cell)) + 2, int(np.ceil(height / cell)) + 2
    grid = Image.fromarray(rng.random((gh, gw), dtype=np.float32), mode="F")
    big = np.asarray(grid.resize((int(gw * cell), int(gh * cell)), Image.BICUBIC))
    return np.clip(big[:height, :width], 0.0, 1.0)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, 3) image, edges replicated."""
    r = max(1, int(np.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (r, r)
        p = np.pad(img, pad, mode="edge")
        n = img.shape[axis]
        img = sum(k[i] * np.take(p, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))
    return img


def _lut(table: dict[int, RGB], size: int) -> np.ndarray:
    lut = np.full((size, 3), 0.5, np.float32)
    for key, rgb in table.items():
        lut[key] = np.asarray(rgb, np.float32) / 255.0
    return lut


def render(scene: Scene, style: DomainStyle, rng: np.random.Generator) -> np.ndarray:
    """Colour a composed scene in ``style``. Shape: (H, W, 3) uint8 RGB."""
    h, w = scene.labels.shape
    base, accent, parts = _lut(style.base, 256), _lut(style.accent, 256), _lut(style.parts, 16)
    bright = rng.uniform(1 - style.tint[0], 1 + style.tint[0], scene.n_instances + 1).astype(np.float32)
    chroma = 1 + rng.uniform(-style.tint[1], style.tint[1], (scene.n_instances + 1, 3)).astype(np.float32)
    bright[0], chroma[0] = 1.0, 1.0
    noise = (_value_noise(rng, w, h, h / 8), _value_noise(rng, w, h, 3.0), rng.random((h, w), dtype=np.float32))
    img = base[scene.labels] * chroma[scene.inst]
    for label, texture in style.textures.items():
        m = scene.labels == label
        if not m.any():
            continue
        shade, alt = texture(Texel(scene.u[m], scene.v[m], scene.depth[m], *(n[m] for n in noise)))
        col = img[m]
        if alt is not None:
            col[alt] = accent[label] * chroma[scene.inst[m][alt]]
        img[m] = col * np.asarray(shade, np.float32)[..., None]
    has_part = scene.part > 0
    img[has_part] = parts[scene.part[has_part]]
    img *= (bright[scene.inst] * np.asarray(style.light, np.float32)[scene.facing])[..., None]
    if style.photo:
        img = _photograph(img, scene, rng)
    luma = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img = luma[..., None] + style.saturation * (img - luma[..., None])
    if style.photo:
        img += rng.normal(0.0, 0.012, (h, w, 1)).astype(np.float32) + rng.normal(0.0, 0.008, (h, w, 3)).astype(
            np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _photograph(img: np.ndarray, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The camera of the photographed look: distance haze, white balance, exposure, tone curve, vignette, blur."""
    h, w = scene.labels.shape
    haze = 1.0 - np.exp(-scene.depth / rng.uniform(250.0, 500.0))
    haze[scene.facing == FACE_SKY] = 0.0
    img = img * (1.0 - haze[..., None]) + np.array([0.8, 0.82, 0.84], np.float32) * haze[..., None]
    balance = np.array([0.95, 1.0, 1.04], np.float32) * (1.0 + rng.normal(0.0, 0.03, 3)).astype(np.float32)
    img = np.clip(img * balance * rng.uniform(0.7, 1.1), 0.0, None) ** np.float32(0.9)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (h / 2)) ** 2
    img = img * (1.0 - 0.15 * r2)[..., None]
    return _blur(img.astype(np.float32), 0.75)


# --- textures of the rendered look: crisp, regular, high contrast -------------------------------------------
def _tiles(t: Texel):
    return 0.93 + 0.14 * cell_noise(t.u / 0.6, t.v / 0.6, 11), (_frac(t.u / 0.6) < 0.08) | (_frac(t.v / 0.6) < 0.08)


def _bricks(t: Texel):
    row = np.floor(t.v / 0.15)
    uo = t.u / 0.4 + 0.5 * (row % 2)
    return 0.9 + 0.2 * cell_noise(uo, row, 12), (_frac(uo) < 0.07) | (_frac(t.v / 0.15) < 0.14)


RENDERED = DomainStyle(
    base={0: (140, 120, 160), 1: (20, 20, 25), 4: (150, 90, 40), 5: (200, 120, 40), 6: (125, 105, 85),
          7: (92, 86, 100), 8: (185, 165, 150), 9: (120, 100, 120), 10: (95, 80, 70), 11: (165, 112, 80),
          12: (205, 185, 120), 13: (150, 95, 45), 15: (160, 160, 150), 17: (125, 130, 140), 18: (125, 130, 140),
          19: (45, 45, 40), 20: (30, 90, 210), 21: (55, 150, 40), 22: (150, 185, 65), 23: (80, 155, 240),
          24: (200, 55, 55), 25: (240, 150, 20), 26: (35, 65, 185), 27: (225, 225, 215), 28: (210, 40, 30),
          31: (40, 170, 160), 32: (55, 50, 70), 33: (180, 30, 100)},
    accent={8: (110, 100, 95), 11: (70, 110, 170), 12: (150, 140, 120), 13: (60, 40, 25), 23: (245, 245, 250),
            31: (40, 60, 90)},
    parts={so.GLASS: (40, 70, 110), so.TYRE: (25, 25, 25), so.LAMP_RED: (230, 30, 30), so.LAMP_GREEN: (60, 230, 90),
           so.PAINT: (240, 240, 235), so.SKIN: (230, 180, 140), so.LEGS: (40, 50, 110), so.BARK: (100, 70, 40),
           so.WHITE: (245, 245, 245), so.HELMET: (230, 230, 40)},
    textures={
        so.ROAD: lambda t: (1.0 + 0.05 * (t.fine - 0.5), None),
        so.SIDEWALK: _tiles,
        so.BUILDING: lambda t: (np.float32(1.0), _between(_frac(t.u / 3.2), 0.3, 0.72)
                                & _between(_frac(t.v / 3.0), 0.35, 0.8) & (t.v > 3.0)),
        so.WALL: _bricks,
        so.FENCE: lambda t: (np.float32(1.0), (_frac(t.u / 0.25) < 0.3) & (_frac(t.v / 0.9) > 0.12)),
        so.POLE: lambda t: (1.12 - 0.3 * np.clip(np.abs(t.u) / 0.12, 0.0, 1.0), None),
        so.VEGETATION: lambda t: (np.where(t.mid > 0.5, 1.15, 0.8), None),
        so.TERRAIN: lambda t: (np.where(_frac(t.v / 3.0) < 0.5, 1.1, 0.9), None),
        so.SKY: lambda t: (0.8 + 0.5 * t.v, t.low > 0.7),
        so.TRAIN: lambda t: (np.float32(1.0), _between(t.v, 1.3, 2.5) & (_frac(t.u / 2.2) < 0.7)),
    },
    light=(1.0, 1.12, 0.78, 0.95, 1.0), tint=(0.1, 0.05), saturation=1.15, photo=False)


# --- textures of the photographed look: irregular, noisy, other patterns and sizes --------------------------------
def _grain(t: Texel, amount: float) -> np.ndarray:
    return amount * (t.fine - 0.5)


PHOTOGRAPHED = DomainStyle(
    base={0: (110, 110, 110), 1: (35, 38, 40), 4: (120, 100, 80), 5: (140, 120, 90), 6: (120, 112, 100),
          7: (100, 96, 106), 8: (180, 165, 155), 9: (130, 120, 125), 10: (100, 95, 90), 11: (160, 120, 95),
          12: (195, 180, 130), 13: (145, 100, 60), 15: (140, 140, 135), 17: (120, 125, 135), 18: (120, 125, 135),
          19: (50, 50, 45), 20: (45, 95, 200), 21: (70, 140, 50), 22: (145, 175, 80), 23: (140, 175, 225),
          24: (185, 65, 70), 25: (225, 145, 45), 26: (50, 75, 170), 27: (215, 215, 210), 28: (195, 55, 45),
          31: (55, 160, 150), 32: (62, 58, 75), 33: (170, 45, 105)},
    accent={8: (125, 118, 112), 11: (95, 105, 115), 12: (120, 115, 105), 13: (170, 170, 165), 22: (130, 110, 85),
            31: (50, 60, 70)},
    parts={so.GLASS: (50, 60, 70), so.TYRE: (30, 30, 32), so.LAMP_RED: (170, 50, 45), so.LAMP_GREEN: (120, 200, 140),
           so.PAINT: (200, 200, 195), so.SKIN: (190, 150, 125), so.LEGS: (45, 45, 55), so.BARK: (80, 70, 55),
           so.WHITE: (215, 215, 210), so.HELMET: (70, 70, 75)},
    textures={
        so.ROAD: lambda t: (0.85 + 0.3 * t.low + _grain(t, 0.12), None),
        so.SIDEWALK: lambda t: (0.88 + 0.2 * cell_noise(t.u / 1.2, t.v / 0.8, 21) + _grain(t, 0.1),
                                (_frac(t.u / 1.2) < 0.03) | (_frac(t.v / 0.8) < 0.04)),
        so.BUILDING: lambda t: (0.85 + 0.25 * t.mid + _grain(t, 0.06), _between(_frac(t.u / 4.5), 0.35, 0.62)
                                & _between(_frac(t.v / 3.4), 0.4, 0.75) & (t.v > 2.5)),
        so.WALL: lambda t: (0.85 + 0.2 * cell_noise(t.u / 2.5, t.v / 1.25, 22) + 0.1 * t.mid,
                            (_frac(t.u / 2.5) < 0.02) | (_frac(t.v / 1.25) < 0.03)),
        so.FENCE: lambda t: (1.0 + _grain(t, 0.1),
                             (_frac((t.u + t.v) / 0.25) < 0.18) | (_frac((t.u - t.v) / 0.25) < 0.18)),
        so.POLE: lambda t: (1.0 + _grain(t, 0.08), None),
        so.VEGETATION: lambda t: (0.55 + 0.55 * t.mid + _grain(t, 0.35), None),
        so.TERRAIN: lambda t: (0.8 + 0.35 * t.mid + _grain(t, 0.2), t.low > 0.62),
        so.SKY: lambda t: (0.92 + 0.12 * t.v + 0.12 * (t.low - 0.5), None),
        so.CAR: lambda t: (0.9 + 0.1 * t.mid + _grain(t, 0.05), None),
        so.TRAIN: lambda t: (1.0 + _grain(t, 0.05), _between(t.v, 1.0, 2.8) & (_frac(t.u / 3.0) < 0.75)),
    },
    light=(1.0, 1.04, 0.92, 0.98, 1.0), tint=(0.2, 0.08), saturation=0.8, photo=True)
