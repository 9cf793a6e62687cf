"""Pre-processing constants of the paper protocol (DESIGN.md §4), shared by training, export and the runtime.

Numpy-free on purpose: ``ftadapt.runtime`` imports it. Sizes are (W, H) as in the paper.
"""
from __future__ import annotations

# Per-channel mean subtracted after RGB→BGR, in B, G, R order. No division by 255 or std.
IMG_MEAN_BGR: tuple[float, float, float] = (104.00698793, 116.66876762, 122.67891434)

# Protocol resize targets, (W, H).
GTA5_SIZE: tuple[int, int] = (1280, 720)
CITYSCAPES_SIZE: tuple[int, int] = (1024, 512)
SYNTHIA_SIZE: tuple[int, int] = (1280, 760)
# Cityscapes label resolution the default evaluation compares against, (W, H).
CITYSCAPES_LABEL_SIZE: tuple[int, int] = (2048, 1024)

# CLAN training augmentation: (probability, scale) of the image-only random rescale, then a mirror with p = 0.5.
RANDOM_SCALES: tuple[tuple[float, float], ...] = ((0.3, 1.1), (0.3, 0.8))
MIRROR_P = 0.5
# MaxSquare's training augmentation: mirror with p = 0.5, then a Gaussian blur of radius U(0, 1) with this probability.
BLUR_P = 0.5
