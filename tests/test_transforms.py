"""Shared transforms of the paper protocol: mean subtraction, BGR order, resizes, mirror, seeded augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ftadapt.data import transforms as T
from ftadapt.protocol import IMG_MEAN_BGR


def test_image_to_tensor_is_bgr_minus_mean_without_scaling():
    rgb = np.array([[[10, 20, 30], [255, 0, 128]]], dtype=np.uint8)  # (1, 2, 3)
    out = T.image_to_tensor(Image.fromarray(rgb))
    assert out.shape == (3, 1, 2) and out.dtype == torch.float32 and out.is_contiguous()
    b, g, r = IMG_MEAN_BGR
    expected = np.array([[[30 - b, 128 - b]], [[20 - g, 0 - g]], [[10 - r, 255 - r]]], dtype=np.float32)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    assert out[2, 0, 1].item() == pytest.approx(255 - 122.67891434, abs=1e-4)  # red channel last, no /255


def test_image_to_tensor_rejects_non_rgb():
    with pytest.raises(TypeError, match="uint8 RGB"):
        T.image_to_tensor(np.zeros((4, 4), dtype=np.uint8))


@pytest.mark.parametrize("size, scale, expected", [
    ((1280, 720), 1.1, (1408, 792)), ((1280, 720), 0.8, (1024, 576)),
    ((1024, 512), 1.1, (1126, 563)), ((1024, 512), 0.8, (819, 409)), ((1024, 512), 1.0, (1024, 512)),
])
def test_scaled_size_truncates_like_the_reference(size, scale, expected):
    assert T.scaled_size(size, scale) == expected


def test_resize_label_is_nearest_and_keeps_values():
    label = np.array([[1, 2], [3, 255]], dtype=np.uint8)
    up = T.resize_label(label, (4, 4))
    np.testing.assert_array_equal(up, np.kron(label, np.ones((2, 2), dtype=np.uint8)))
    down = T.resize_label(np.kron(label, np.ones((3, 3), dtype=np.uint8)), (2, 2))
    np.testing.assert_array_equal(down, label)
    assert T.resize_label(label, (2, 2)) is label
    with pytest.raises(TypeError):
        T.resize_label(label.astype(np.int64), (4, 4))


def test_resize_image_is_bicubic_and_noop_at_same_size():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 10, 3), dtype=np.uint8))
    assert T.resize_image(img, (10, 8)) is img
    ours = np.asarray(T.resize_image(img, (7, 5)))
    np.testing.assert_array_equal(ours, np.asarray(img.resize((7, 5), Image.Resampling.BICUBIC)))


def test_mirror_flips_image_and_label_together():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    label = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    img, lab = T.mirror(Image.fromarray(rgb), label)
    np.testing.assert_array_equal(np.asarray(img), rgb[:, ::-1])
    np.testing.assert_array_equal(lab, [[2, 1, 0], [5, 4, 3]])
    assert lab.flags.c_contiguous


def test_sample_from_scales_image_only_and_mirrors_both():
    rgb = np.random.default_rng(1).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    label = np.tile(np.arange(40, dtype=np.uint8), (20, 1))
    image_t, label_t = T.sample_from(Image.fromarray(rgb), label, size=(20, 10), augment=T.Augment(1.1, True))
    assert image_t.shape == (3, 11, 22)  # image rescaled ×1.1
    assert label_t.shape == (10, 20) and label_t.dtype == torch.int64  # label stays at the nominal size
    # PIL NEAREST samples source column floor((x + 0.5) · 2) = 2x + 1; the mirror reverses the row.
    assert label_t[0].tolist() == list(range(39, 0, -2))
    plain_image, plain_label = T.sample_from(Image.fromarray(rgb), label, size=(20, 10))
    mirrored_image, mirrored_label = T.sample_from(Image.fromarray(rgb), label, size=(20, 10),
                                                   augment=T.Augment(1.0, True))
    assert plain_image.shape == (3, 10, 20)
    assert torch.equal(mirrored_image, plain_image.flip(-1)) and torch.equal(mirrored_label, plain_label.flip(-1))


def test_draw_augment_is_a_function_of_the_seed_with_clan_frequencies():
    assert T.draw_augment(123) == T.draw_augment(123)
    draws = [T.draw_augment(seed) for seed in range(3000)]
    scales = np.array([d.scale for d in draws])
    assert set(scales.tolist()) == {0.8, 1.0, 1.1}
    assert abs((scales == 1.1).mean() - 0.3) < 0.04 and abs((scales == 0.8).mean() - 0.3) < 0.04
    assert abs(np.mean([d.mirror for d in draws]) - 0.5) < 0.04


def test_draw_augment_scale_override_keeps_the_mirror_decision():
    for seed in range(20):
        assert T.draw_augment(seed, scale=0.8) == T.Augment(0.8, T.draw_augment(seed).mirror)


def test_maxsquare_augmentation_mirrors_and_blurs_but_never_rescales():
    draws = [T.draw_augment(seed, scale=0.8, style="maxsquare") for seed in range(3000)]
    assert {d.scale for d in draws} == {1.0}  # the loader's batch scale is ignored: fixed resize
    blurred = np.array([d.blur for d in draws if d.blur > 0])
    assert abs(np.mean([d.mirror for d in draws]) - 0.5) < 0.04 and abs(len(blurred) / 3000 - 0.5) < 0.04
    assert blurred.min() >= 0 and blurred.max() < 1 and abs(blurred.mean() - 0.5) < 0.04  # radius U(0, 1)
    assert T.draw_augment(7, style="none") == T.NO_AUGMENT
    img = Image.fromarray((np.arange(12 * 16).reshape(12, 16) % 7 * 30).astype(np.uint8)).convert("RGB")
    plain, _ = T.sample_from(img, None, size=(16, 12))
    blurred_t, _ = T.sample_from(img, None, size=(16, 12), augment=T.Augment(blur=0.9))
    assert blurred_t.shape == plain.shape and blurred_t.std() < plain.std()  # a blur smooths the image
