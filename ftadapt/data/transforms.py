"""Joint image/label transforms of the paper protocol (DESIGN.md §4), shared by every dataset.

Images stay ``PIL.Image`` RGB until the last step, because PIL's BICUBIC resize is the reference resize (labels use
PIL's NEAREST). Labels are uint8 trainId arrays. Augmentation randomness comes only from an explicit seed
(``draw_augment``), never from a global RNG, so a resumed run sees exactly the samples a fresh run would.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

from ftadapt.imageio import resize_image, resize_label
from ftadapt.protocol import BLUR_P, IMG_MEAN_BGR, MIRROR_P, RANDOM_SCALES

_MEAN_BGR = torch.tensor(IMG_MEAN_BGR, dtype=torch.float32).view(3, 1, 1)


@dataclass(frozen=True)
class Augment:
    """The augmentation of one sample: image-only rescale factor, horizontal mirror (image and label) and an
    image-only Gaussian blur of that radius (0: none)."""

    scale: float = 1.0
    mirror: bool = False
    blur: float = 0.0


NO_AUGMENT = Augment()


def draw_scale(rng: np.random.Generator) -> float:
    """Draw CLAN's image rescale factor: ×1.1 with p 0.3, ×0.8 with p 0.3, else ×1.0 (``protocol.RANDOM_SCALES``)."""
    u = rng.random()
    cumulative = 0.0
    for p, scale in RANDOM_SCALES:
        cumulative += p
        if u < cumulative:
            return scale
    return 1.0


def draw_augment(seed: int, scale: float | None = None, style: str = "clan") -> Augment:
    """The augmentation a sample seed stands for under ``style``:

    - "clan": CLAN's image rescale and mirror; ``scale`` (drawn once per batch by the loader) overrides the drawn
      scale. The scale is always drawn first, so the mirror for a seed does not depend on whether ``scale`` is given.
    - "maxsquare": MaxSquare's mirror (p 0.5) and Gaussian blur (p 0.5, radius uniform in [0, 1)), no rescale
      (``scale`` is ignored: the batch keeps the protocol size).
    - "none": nothing.
    """
    if style == "none":
        return NO_AUGMENT
    rng = np.random.default_rng(seed)
    if style == "maxsquare":
        mirror = bool(rng.random() < MIRROR_P)
        blur = float(rng.random()) if rng.random() < BLUR_P else 0.0
        return Augment(mirror=mirror, blur=blur)
    drawn = draw_scale(rng)
    mirror = bool(rng.random() < MIRROR_P)
    return Augment(scale=drawn if scale is None else float(scale), mirror=mirror)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(W, H) scaled and truncated as the reference does (1024×512 ×0.8 → 819×409); never below 1 pixel."""
    w, h = size
    # The epsilon keeps products that are whole in exact arithmetic (720 × 0.8 = 576) from truncating to 575.
    return max(1, int(w * scale + 1e-6)), max(1, int(h * scale + 1e-6))


def mirror(image: Image.Image, label: np.ndarray | None) -> tuple[Image.Image, np.ndarray | None]:
    """Flip an image and its label map left-right together."""
    flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return flipped, None if label is None else np.ascontiguousarray(label[:, ::-1])


def image_to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """RGB uint8 → float32, RGB→BGR, minus ``IMG_MEAN_BGR``, CHW; no division by 255 (the Caffe-style input).

    Shape: (H, W, 3) uint8 RGB → (3, H, W) float32 BGR.
    """
    rgb = np.asarray(image)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise TypeError(f"image_to_tensor expects (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    bgr_chw = np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))
    return torch.from_numpy(bgr_chw).to(torch.float32).sub_(_MEAN_BGR)


def label_to_tensor(label: np.ndarray) -> torch.Tensor:
    """uint8 trainIds (255 = ignore) → int64 tensor, the dtype the losses index with.

    Shape: (H, W) → (H, W).
    """
    return torch.from_numpy(np.array(label, dtype=np.int64, order="C"))


def sample_from(image: Image.Image, label: np.ndarray | None, *, size: tuple[int, int],
                augment: Augment = NO_AUGMENT) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The whole protocol for one decoded pair: image resized to ``size`` × ``augment.scale`` (BICUBIC), label to
    ``size`` (NEAREST, never rescaled: the logits are upsampled to the nominal size), optional joint mirror, optional
    image blur, tensors.

    Shape: image (H0, W0) RGB, label (H1, W1) uint8 trainIds → (3, h, w) float32, (size[1], size[0]) int64.
    """
    image = resize_image(image, scaled_size(size, augment.scale))
    if label is not None:
        label = resize_label(label, size)
    if augment.mirror:
        image, label = mirror(image, label)
    if augment.blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(radius=augment.blur))
    return image_to_tensor(image), None if label is None else label_to_tensor(label)
