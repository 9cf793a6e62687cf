"""Loss functions against values worked out by hand (plain arithmetic / numpy); bf16-autocast and channels_last runs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ftadapt.errors import UsageError
from ftadapt.losses import (
    clan_weight_map,
    cross_entropy,
    feature_norm_loss,
    focal_loss,
    iw_maxsquare_loss,
    maxsquare_loss,
    multilevel_self_guidance_loss,
    weight_discrepancy_loss,
    weighted_bce_with_logits,
)
from ftadapt.models.deeplab import upsample_logits


def as_logits(columns) -> torch.Tensor:
    """Per-pixel class scores given as a list of pixels (each a list over C) → a 1×C×1×W float32 tensor."""
    arr = np.asarray(columns, dtype=np.float64).T  # C × W
    return torch.tensor(arr, dtype=torch.float32).reshape(1, arr.shape[0], 1, arr.shape[1]).requires_grad_()


def from_probs(columns) -> torch.Tensor:
    """Logits log(P) whose softmax is exactly the given per-pixel probabilities."""
    return as_logits(np.log(np.asarray(columns, dtype=np.float64)))


def np_softmax(z) -> np.ndarray:
    e = np.exp(np.asarray(z, dtype=np.float64) - np.max(z))
    return e / e.sum()


# ---- cross_entropy / focal_loss --------------------------------------------------------------------------------------

PIXELS = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [2.0, 0.0, -1.0], [5.0, 5.0, 5.0]]
LABELS = [2, 255, 0, -1]  # pixels 1 (ignore index) and 3 (negative) are dropped


def labels_tensor(values=LABELS) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64).reshape(1, 1, -1)


def test_cross_entropy_matches_hand_values_and_gradient():
    logits = as_logits(PIXELS)
    loss = cross_entropy(logits, labels_tensor())
    ce0 = math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 3
    ce2 = math.log(math.exp(2) + math.exp(0) + math.exp(-1)) - 2
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((ce0 + ce2) / 2, rel=1e-6)

    loss.backward()
    grad = logits.grad.reshape(3, 4).T.numpy()  # pixel × class
    np.testing.assert_allclose(grad[0], (np_softmax(PIXELS[0]) - [0, 0, 1]) / 2, atol=1e-6)
    np.testing.assert_allclose(grad[2], (np_softmax(PIXELS[2]) - [1, 0, 0]) / 2, atol=1e-6)
    assert not grad[1].any() and not grad[3].any()


def test_cross_entropy_accepts_uint8_labels_and_other_ignore_index():
    logits = as_logits(PIXELS)
    expected = cross_entropy(logits, labels_tensor()).item()
    assert cross_entropy(logits, labels_tensor([2, 255, 0, 255]).to(torch.uint8)).item() == pytest.approx(expected)
    assert cross_entropy(logits, labels_tensor([2, -1, 0, -1]), ignore_index=-1).item() == pytest.approx(expected)


@pytest.mark.parametrize("loss_fn", [cross_entropy, focal_loss])
def test_no_kept_pixel_gives_zero_with_grad_path(loss_fn):
    logits = as_logits(PIXELS)
    loss = loss_fn(logits, labels_tensor([255, 255, -1, 255]))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("loss_fn", [cross_entropy, focal_loss])
def test_label_shape_and_dtype_errors(loss_fn):
    logits = as_logits(PIXELS)
    with pytest.raises(UsageError, match=r"labels shape \(1, 2, 2\).*upsample"):
        loss_fn(logits, torch.zeros(1, 2, 2, dtype=torch.int64))
    with pytest.raises(UsageError, match="integer"):
        loss_fn(logits, labels_tensor().float())
    with pytest.raises(UsageError, match=r"N×C×H×W"):
        loss_fn(logits[0], labels_tensor())


def test_focal_loss_matches_hand_values():
    logits = as_logits(PIXELS)
    p0 = math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3))
    p2 = math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-1))
    expected = (-(1 - p0) ** 2 * math.log(p0) - (1 - p2) ** 2 * math.log(p2)) / 2
    assert focal_loss(logits, labels_tensor()).item() == pytest.approx(expected, rel=1e-6)
    cubic = (-(1 - p0) ** 3 * math.log(p0) - (1 - p2) ** 3 * math.log(p2)) / 2
    assert focal_loss(logits, labels_tensor(), gamma=3.0).item() == pytest.approx(cubic, rel=1e-6)
    assert focal_loss(logits, labels_tensor(), gamma=0.0).item() == pytest.approx(
        cross_entropy(logits, labels_tensor()).item(), rel=1e-6)


def test_focal_loss_clamps_probabilities():
    # pixel 0: p_y = e^-40/(1+e^-40) < 1e-9 → clamped to 1e-9; pixel 1: p_y ≈ 1 → loss ≈ 0.
    logits = as_logits([[-40.0, 0.0], [40.0, 0.0]])
    loss = focal_loss(logits, torch.tensor([[[0, 0]]]), gamma=0.5)
    expected = -(1 - 1e-9) ** 0.5 * math.log(1e-9) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert not logits.grad[..., 0].any()  # no gradient through the clamp


# ---- upsample_logits -------------------------------------------------------------------------------------------------

def test_upsample_logits_is_bilinear_align_corners():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).reshape(1, 1, 2, 2)
    expected = torch.tensor([[0.0, 0.5, 1.0], [1.0, 1.5, 2.0], [2.0, 2.5, 3.0]])
    torch.testing.assert_close(upsample_logits(x, (3, 3))[0, 0], expected)
    torch.testing.assert_close(upsample_logits(x, (2, 3))[0, 0], torch.tensor([[0.0, 0.5, 1.0], [2.0, 2.5, 3.0]]))
    assert upsample_logits(x, (2, 2)) is x
    with pytest.raises(UsageError, match="size_hw"):
        upsample_logits(x, (0, 3))


# ---- feature_norm_loss -----------------------------------------------------------------------------------------------

def test_feature_norm_loss_value_and_gradient_by_hand():
    # N=2, C=2, h=1, w=2: positions (3,4), (0,0) | (1,0), (0,-2); P = N·h·w = 4.
    values = [[[[3.0, 0.0]], [[4.0, 0.0]]], [[[1.0, 0.0]], [[0.0, -2.0]]]]
    feats = torch.tensor(values, requires_grad=True)
    loss = feature_norm_loss(feats, delta_r=0.12)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(0.12 ** 2, rel=1e-6)

    loss.backward()
    scale = -2 * 0.12 / 4
    expected = [[[[scale * 0.6, 0.0]], [[scale * 0.8, 0.0]]],  # zero-norm position: zero gradient, not NaN
                [[[scale * 1.0, 0.0]], [[0.0, scale * -1.0]]]]
    np.testing.assert_allclose(feats.grad.numpy(), np.array(expected), atol=1e-7)


# ---- clan_weight_map -------------------------------------------------------------------------------------------------

def test_clan_weight_map_batch_of_two():
    def cos_dist(p, q):
        return 1 - (p[0] * q[0] + p[1] * q[1]) / (math.hypot(*p) * math.hypot(*q))

    # image 0: P1=(.5,.5) vs P2=(.75,.25); equal heads. image 1: (.9,.1) vs (.1,.9); uniform vs uniform.
    l1 = torch.cat([from_probs([[0.5, 0.5], [0.3, 0.7]]), from_probs([[0.9, 0.1], [0.5, 0.5]])]).detach()
    l2 = torch.cat([from_probs([[0.75, 0.25], [0.3, 0.7]]), from_probs([[0.1, 0.9], [0.5, 0.5]])]).detach()
    l1.requires_grad_()
    weight = clan_weight_map(l1, l2)
    assert weight.shape == (2, 1, 1, 2) and weight.dtype == torch.float32
    expected = [[cos_dist((0.5, 0.5), (0.75, 0.25)), 0.0], [cos_dist((0.9, 0.1), (0.1, 0.9)), 0.0]]
    np.testing.assert_allclose(weight[:, 0, 0].detach().numpy(), expected, atol=1e-6)
    assert expected[1][0] == pytest.approx(1 - 0.18 / 0.82)

    weight.sum().backward()  # not detached: the gradient reaches the head
    assert l1.grad[0, :, 0, 0].abs().sum() > 0


def test_clan_weight_map_shape_mismatch():
    with pytest.raises(UsageError, match="differ in shape"):
        clan_weight_map(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 3))


# ---- weighted_bce_with_logits ----------------------------------------------------------------------------------------

D_OUT = [[2.0, -1.0], [0.0, 100.0]]
WEIGHT = [[0.0, 0.5], [0.1, 1.0]]


def test_bce_without_weight_map_is_plain_mean_bce():
    x = torch.tensor(D_OUT).reshape(1, 1, 2, 2)
    as_target = [math.log1p(math.exp(-v)) for row in D_OUT for v in row]  # −log σ(x)
    as_source = [2 + math.log1p(math.exp(-2)), math.log1p(math.exp(-1)), math.log(2), 100.0]  # −log(1 − σ(x))
    assert weighted_bce_with_logits(x, 1.0).item() == pytest.approx(sum(as_target) / 4, rel=1e-6)
    assert weighted_bce_with_logits(x, 0.0).item() == pytest.approx(sum(as_source) / 4, rel=1e-6)


def test_weighted_bce_with_map():
    x = torch.tensor(D_OUT).reshape(1, 1, 2, 2)
    m = torch.tensor(WEIGHT).reshape(1, 1, 2, 2)
    bce = [2 + math.log1p(math.exp(-2)), math.log1p(math.exp(-1)), math.log(2), 100.0]
    weights = [0.4 + 40 * w for row in WEIGHT for w in row]
    expected = sum(w * b for w, b in zip(weights, bce)) / 4
    assert weighted_bce_with_logits(x, 0.0, m).item() == pytest.approx(expected, rel=1e-6)
    custom = sum((1.0 + 10 * w) * b for w, b in zip([0, 0.5, 0.1, 1.0], bce)) / 4
    assert weighted_bce_with_logits(x, 0.0, m, epsilon=1.0, lambda_local=10.0).item() == pytest.approx(custom, rel=1e-6)


def test_weighted_bce_errors():
    x = torch.zeros(1, 1, 2, 2)
    for bad in (torch.zeros(1, 1, 4, 4), torch.zeros(2, 1, 2, 2)):
        with pytest.raises(UsageError, match="does not broadcast"):
            weighted_bce_with_logits(x, 1.0, bad)
    with pytest.raises(UsageError, match="label"):
        weighted_bce_with_logits(x, 2.0)


# ---- weight_discrepancy_loss -----------------------------------------------------------------------------------------

def two_conv_head(values) -> nn.Sequential:
    """Two 1×1 convs (1→1 channel): parameters() = weight0, bias0, weight1, bias1 = the four values."""
    head = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1))
    with torch.no_grad():
        for p, v in zip(head.parameters(), values):
            p.fill_(v)
    return head


def test_weight_discrepancy_value_and_gradient():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 0.0, 1.0, 5.0]
    head_a, head_b = two_conv_head(a), two_conv_head(b)
    loss = weight_discrepancy_loss(head_a, head_b)
    na, nb = math.sqrt(30), math.sqrt(30)
    cos = 25 / (na * nb)
    assert loss.item() == pytest.approx(cos + 1, rel=1e-6)

    loss.backward()
    grad_a = [p.grad.item() for p in head_a.parameters()]
    np.testing.assert_allclose(grad_a, [bi / (na * nb) - cos * ai / na ** 2 for ai, bi in zip(a, b)], atol=1e-6)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head_b.parameters())


def test_weight_discrepancy_extremes_and_mismatch():
    assert weight_discrepancy_loss(two_conv_head([1, 2, 3, 4]), two_conv_head([1, 2, 3, 4])).item() == pytest.approx(2)
    assert weight_discrepancy_loss(two_conv_head([1, 2, 3, 4]), two_conv_head([-1, -2, -3, -4])).item() == \
        pytest.approx(0, abs=1e-7)
    with pytest.raises(UsageError, match="parameter counts"):
        weight_discrepancy_loss(two_conv_head([1, 2, 3, 4]), nn.Conv2d(1, 3, 1))


# ---- maxsquare_loss / iw_maxsquare_loss ------------------------------------------------------------------------------

def test_maxsquare_loss():
    logits = from_probs([[0.5, 0.5], [0.75, 0.25]])
    # mean of p² over the 4 elements = (0.25 + 0.25 + 0.5625 + 0.0625) / 4
    assert maxsquare_loss(logits).item() == pytest.approx(-0.5 * 1.125 / 4, rel=1e-6)


IMAGE_0 = [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.5, 0.25, 0.25], [0.2, 0.7, 0.1]]  # argmax 0,0,0,1 → hist (3,1,0)
IMAGE_1 = [[0.1, 0.1, 0.8], [0.2, 0.2, 0.6], [0.3, 0.6, 0.1], [0.05, 0.9, 0.05]]  # argmax 2,2,1,1 → hist (0,2,2)


def iw_part(pixels, hist, n_images, alpha=0.2, num_classes=3):
    """One image's share of the IW-MaxSquare loss: −Σ_pixels w_k̂ · Σ_c p_c² / (N·C)."""
    total = sum(hist)
    weights = [1 / max(h ** alpha * total ** (1 - alpha), 1) for h in hist]
    return -sum(weights[int(np.argmax(p))] * sum(c * c for c in p) for p in pixels) / (n_images * num_classes)


def test_iw_maxsquare_batch_one_by_hand():
    logits = from_probs(IMAGE_0)
    w0, w1 = 1 / (3 ** 0.2 * 4 ** 0.8), 1 / 4 ** 0.8
    expected = -(w0 * (0.66 + 0.46 + 0.375) + w1 * 0.54) / 3
    assert iw_maxsquare_loss(logits).item() == pytest.approx(expected, rel=1e-6)
    assert iw_part(IMAGE_0, (3, 1, 0), n_images=1) == pytest.approx(expected)


def test_iw_maxsquare_batch_two_is_sum_of_per_image_parts():
    logits = torch.cat([from_probs(IMAGE_0), from_probs(IMAGE_1)]).detach().requires_grad_()
    loss = iw_maxsquare_loss(logits)
    parts = iw_part(IMAGE_0, (3, 1, 0), n_images=2) + iw_part(IMAGE_1, (0, 2, 2), n_images=2)
    assert loss.item() == pytest.approx(parts, rel=1e-6)
    singles = iw_maxsquare_loss(from_probs(IMAGE_0)).item() + iw_maxsquare_loss(from_probs(IMAGE_1)).item()
    assert loss.item() == pytest.approx(singles / 2, rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# ---- multilevel_self_guidance_loss -----------------------------------------------------------------------------------

MAIN = [[0.99, 0.01], [0.6, 0.4], [0.7, 0.3]]
AUX = [[0.8, 0.2], [0.03, 0.97], [0.4, 0.6]]


def test_multilevel_self_guidance_by_hand():
    # pixel 0: main confident, mean (0.895, 0.105) → 0; pixel 1: aux confident, mean (0.315, 0.685) → 1;
    # pixel 2: neither head above 0.95 → ignored.
    main, aux = from_probs(MAIN), from_probs(AUX)
    loss = multilevel_self_guidance_loss(main, aux)
    assert loss.item() == pytest.approx((-math.log(0.8) - math.log(0.97)) / 2, rel=1e-5)
    loss.backward()
    assert main.grad is None  # pseudo labels carry no gradient
    assert not aux.grad[..., 2].any() and aux.grad[..., 0].abs().sum() > 0


def test_multilevel_self_guidance_nothing_confident_and_mismatch():
    main, aux = from_probs(MAIN), from_probs(AUX)
    assert multilevel_self_guidance_loss(main, aux, threshold=0.999).item() == 0.0
    with pytest.raises(UsageError, match="differ in shape"):
        multilevel_self_guidance_loss(main, aux[..., :2])


# ---- bf16 autocast and channels_last ---------------------------------------------------------------------------------

def _heads():
    torch.manual_seed(1)
    return nn.Conv2d(4, 3, 3), nn.Conv2d(4, 3, 3)


def _case(name):
    """(function, list of float inputs N×C×H×W, extra positional args) for each loss."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=gen) * 3
    other = torch.randn(2, 5, 6, 7, generator=gen) * 3
    labels = torch.randint(0, 5, (2, 6, 7), generator=gen)
    labels[0, 0] = 255
    d_out = torch.randn(2, 1, 6, 7, generator=gen) * 4
    feats = torch.relu(torch.randn(2, 8, 3, 4, generator=gen))
    return {
        "cross_entropy": (lambda x: cross_entropy(x, labels), [logits]),
        "focal_loss": (lambda x: focal_loss(x, labels), [logits]),
        "upsample_logits": (lambda x: upsample_logits(x, (11, 13)), [logits]),
        "feature_norm_loss": (lambda x: feature_norm_loss(x, 0.12), [feats]),
        "clan_weight_map": (clan_weight_map, [logits, other]),
        "weighted_bce_with_logits": (lambda x, m: weighted_bce_with_logits(x, 1.0, clan_weight_map(m, m * 0.5)),
                                     [d_out, logits]),
        "weight_discrepancy_loss": (lambda: weight_discrepancy_loss(*(h.to(memory_format=torch.channels_last)
                                                                     for h in _heads())), []),
        "maxsquare_loss": (maxsquare_loss, [logits]),
        "iw_maxsquare_loss": (iw_maxsquare_loss, [logits]),
        "multilevel_self_guidance_loss": (lambda x, y: multilevel_self_guidance_loss(x, y, threshold=0.8),
                                          [logits, other]),
    }[name]


CASES = ["cross_entropy", "focal_loss", "upsample_logits", "feature_norm_loss", "clan_weight_map",
         "weighted_bce_with_logits", "weight_discrepancy_loss", "maxsquare_loss", "iw_maxsquare_loss",
         "multilevel_self_guidance_loss"]


@pytest.mark.parametrize("name", CASES)
def test_bf16_autocast_channels_last_matches_fp32(name):
    fn, inputs = _case(name)
    reference = fn(*inputs)
    bf16 = [x.bfloat16().to(memory_format=torch.channels_last).requires_grad_() for x in inputs]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(*bf16)
    assert torch.isfinite(out).all()
    if name != "upsample_logits":
        assert out.dtype == torch.float32  # reductions run in float32
        # Same bf16-rounded inputs in plain fp32 give the same number: nothing inside ran in bf16.
        torch.testing.assert_close(out, fn(*(x.detach().float() for x in bf16)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.float(), reference, rtol=3e-2, atol=3e-2)
    if out.requires_grad:
        out.float().sum().backward()
        assert all(torch.isfinite(x.grad).all() for x in bf16 if x.grad is not None)


@pytest.mark.parametrize("name", CASES)
def test_channels_last_fp32_equals_contiguous(name):
    fn, inputs = _case(name)
    out = fn(*(x.to(memory_format=torch.channels_last) for x in inputs))
    torch.testing.assert_close(out, fn(*inputs), rtol=1e-6, atol=1e-6)
