"""Loss terms of the six training methods, as plain functions (formulas: ``reference/methods.md`` §3).

Every loss returns a float32 scalar: softmax, norms and reductions are computed in float32 even when the inputs are
bfloat16/float16 (autocast), and every function accepts channels_last inputs. The loss weights (λ_seg, λ_adv, λ_norm,
damping, …) are applied by the methods, not here, unless a docstring says otherwise.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ftadapt.errors import UsageError
from ftadapt.labels import IGNORE_INDEX

__all__ = [
    "cross_entropy", "focal_loss", "feature_norm_loss", "clan_weight_map",
    "weighted_bce_with_logits", "weight_discrepancy_loss", "maxsquare_loss", "iw_maxsquare_loss",
    "multilevel_self_guidance_loss",
]


def _check_4d(x: Tensor, name: str) -> None:
    if x.dim() != 4:
        raise UsageError(f"{name} must be N×C×H×W, got shape {tuple(x.shape)}")


def _kept_labels(logits: Tensor, labels: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Validate ``labels`` against ``logits``; return (labels with every dropped pixel set to ignore_index, keep mask).

    A pixel is kept when 0 ≤ y and y ≠ ignore_index (negative labels are ignored too, as in AdaptSegNet's loss).
    """
    _check_4d(logits, "logits")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise UsageError(f"labels must be an integer tensor of class ids, got dtype {labels.dtype}")
    n, _, h, w = logits.shape
    if tuple(labels.shape) != (n, h, w):
        raise UsageError(f"labels shape {tuple(labels.shape)} does not match logits N×H×W {(n, h, w)}; "
                         "upsample the logits to the label size first (ftadapt.models.deeplab.upsample_logits)")
    labels = labels.long()
    keep = (labels >= 0) & (labels != ignore_index)
    return torch.where(keep, labels, ignore_index), keep


def cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Softmax cross-entropy averaged over kept pixels (AdaptSegNet's ``CrossEntropy2d``, MaxSquare's CE).

    L = (1/K) Σ_{kept i} −log softmax(z_i)_{y_i}, kept = {i : y_i ≥ 0, y_i ≠ ignore_index}, K = #kept. With no kept
    pixel the result is a zero that keeps the graph (its gradient is zero), not NaN. Integer label dtypes are cast to
    int64.

    Shape: logits (N, C, H, W), labels (N, H, W) at the same size → scalar float32.
    """
    labels, keep = _kept_labels(logits, labels, ignore_index)
    total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    return total / keep.sum().clamp_min(1)


_LOG_P_MIN = math.log(1e-9)
_LOG_P_MAX = math.log1p(-1e-9)


def focal_loss(logits: Tensor, labels: Tensor, gamma: float = 2.0, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Focal loss, CLAN's and FTA's segmentation loss (named ``CrossEntropy2d`` there), averaged over kept pixels.

    p = softmax(z) clamped to [1e-9, 1 − 1e-9]; L = (1/K) Σ_{kept i} −(1 − p_{i,y_i})^γ · log p_{i,y_i}. The clamp is
    applied to log p (same values) so that the upper bound survives float32 rounding and (1 − p)^γ stays > 0 for any γ.
    γ = 0 gives ``cross_entropy`` (up to the clamp). No kept pixel → a zero that keeps the graph.

    Shape: logits (N, C, H, W), labels (N, H, W) at the same size → scalar float32.
    """
    labels, keep = _kept_labels(logits, labels, ignore_index)
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, labels.where(keep, 0).unsqueeze(1)).squeeze(1)
    log_p = log_p.clamp(_LOG_P_MIN, _LOG_P_MAX)
    one_minus_p = -torch.expm1(log_p)
    per_pixel = -one_minus_p.pow(gamma) * log_p
    return torch.where(keep, per_pixel, 0.0).sum() / keep.sum().clamp_min(1)


def feature_norm_loss(features: Tensor, delta_r: float, eps: float = 1e-6) -> Tensor:
    """Step-wise feature-norm loss (SAFN, Xu et al.; FTA applies it to the layer4 output), unweighted.

    n_p = ‖x_p‖₂ over channels at each spatial position p; r_p = n_p.detach() + Δr; L = (1/P) Σ_p (n_p − r_p)²,
    P = N·h·w. The value is always Δr²; the gradient is −2Δr/P · x_p/‖x_p‖ per position, i.e. it ascends the mean norm
    without saturating. The caller multiplies by λ_norm (0.00015) and the damping. ‖x_p‖ is computed as
    sqrt(max(Σ x², eps²)) in float32, so an all-zero position (possible after ReLU) gets a zero gradient instead of NaN;
    positions with ‖x_p‖ > eps get the exact gradient.

    Shape: features (N, C, h, w) → scalar float32.
    """
    _check_4d(features, "features")
    norms = features.float().square().sum(dim=1).clamp_min(eps * eps).sqrt()
    radius = norms.detach() + delta_r
    return (norms - radius).square().mean()


def clan_weight_map(logits_1: Tensor, logits_2: Tensor) -> Tensor:
    """CLAN's per-pixel discrepancy of the two heads: M = 1 − cos(P1, P2), P_k = softmax(logits_k) over classes.

    M is 0 where the heads agree and up to 1 where their class distributions are orthogonal. It is not detached: CLAN
    lets the G-step gradient flow through M into both heads; detach it for the discriminator step. Unlike CLAN's code it
    works for any batch size. (Softmax vectors never have zero norm, so no eps is needed.)

    Shape: logits_1, logits_2 (N, C, H, W) → (N, 1, H, W) float32.
    """
    _check_4d(logits_1, "logits_1")
    if logits_1.shape != logits_2.shape:
        raise UsageError(f"the two heads' logits differ in shape: {tuple(logits_1.shape)} vs {tuple(logits_2.shape)}")
    p1 = F.softmax(logits_1.float(), dim=1)
    p2 = F.softmax(logits_2.float(), dim=1)
    cos = (p1 * p2).sum(dim=1, keepdim=True) / (p1.norm(dim=1, keepdim=True) * p2.norm(dim=1, keepdim=True))
    return 1.0 - cos


def weighted_bce_with_logits(d_logits: Tensor, label: float, weight_map: Tensor | None = None, epsilon: float = 0.4,
                             lambda_local: float = 40.0) -> Tensor:
    """CLAN's category-level weighted adversarial loss; plain BCE-with-logits when ``weight_map`` is None.

    ℓ(x, y) = max(x, 0) − x·y + log(1 + e^{−|x|}) (the stable form of −[y log σ(x) + (1−y) log(1 − σ(x))]); the result
    is mean(ℓ) without a map and mean((ε + λ_local·M)·ℓ) with one, means over all elements. ``label`` is the domain:
    0 = source, 1 = target. Defaults ε = 0.4, λ_local = 40 are CLAN's GTA5 values (SYNTHIA: λ_local = 10).

    Shape: d_logits (N, 1, H, W) (any shape), weight_map broadcastable to it without growing it → scalar float32.
    """
    if not 0.0 <= float(label) <= 1.0:
        raise UsageError(f"label must be in [0, 1] (0 = source, 1 = target), got {label}")
    x = d_logits.float()
    loss = F.binary_cross_entropy_with_logits(x, torch.full_like(x, float(label)), reduction="none")
    if weight_map is None:
        return loss.mean()
    try:
        grows = torch.broadcast_shapes(weight_map.shape, x.shape) != x.shape
    except RuntimeError:
        grows = True
    if grows:
        raise UsageError(f"weight_map shape {tuple(weight_map.shape)} does not broadcast to the discriminator output "
                         f"{tuple(x.shape)}; upsample the discriminator output to the weight map's size first")
    return ((epsilon + lambda_local * weight_map.float()) * loss).mean()


def weight_discrepancy_loss(head_a: nn.Module, head_b: nn.Module, eps: float = 1e-12) -> Tensor:
    """CLAN's weight-discrepancy term, unscaled: cos(W_a, W_b) + 1, in [0, 2].

    W_a is every parameter of ``head_a`` flattened and concatenated in ``parameters()`` order (for an ASPP head: weight
    and bias of all 4 convs), W_b likewise. The caller forms the full term of methods.md §3.4,
    L_weight = (cos + 1) · λ_weight · damping · 2 (λ_weight 0.01 paper/CLAN, 0.009 FTA code). Gradients reach both
    heads.

    Shape: two modules with the same number of parameter elements → scalar float32.
    """
    w_a = torch.cat([p.reshape(-1).float() for p in head_a.parameters()])
    w_b = torch.cat([p.reshape(-1).float() for p in head_b.parameters()])
    if w_a.numel() != w_b.numel():
        raise UsageError(f"the two heads have different parameter counts ({w_a.numel()} vs {w_b.numel()}); "
                         "the weight-discrepancy loss needs two heads of the same layout")
    cos = (w_a * w_b).sum() / (w_a.norm() * w_b.norm()).clamp_min(eps)
    return cos + 1.0


def maxsquare_loss(logits: Tensor) -> Tensor:
    """MaxSquare loss: L = −½ · mean over all N·C·H·W elements of p², p = softmax(logits) over classes.

    MaxSquare's ignore mask never masks anything (it compares probabilities with −1), so there is none here.

    Shape: logits (N, C, H, W) → scalar float32.
    """
    _check_4d(logits, "logits")
    return -0.5 * F.softmax(logits.float(), dim=1).square().mean()


def iw_maxsquare_loss(logits: Tensor, ratio: float = 0.2) -> Tensor:
    """Image-wise weighted MaxSquare loss (MaxSquare's ``IW_MaxSquareloss``, α = ``ratio``).

    Per image n: k̂(h,w) = argmax_c p_c(h,w); hist_k = #pixels with k̂ = k;
    w_k = 1 / max(hist_k^α · (Σ_j hist_j)^{1−α}, 1) (no gradient);
    L = −Σ_{n,h,w} w_{n,k̂(n,h,w)} · Σ_c p_c(n,h,w)² / (N·C): a sum over pixels, no ½. The class weights are per image,
    so a batch of N images gives the mean of the N single-image losses (MaxSquare's code is only correct for N = 1, the
    batch it uses).

    Shape: logits (N, C, H, W) → scalar float32.
    """
    _check_4d(logits, "logits")
    n, c = logits.shape[:2]
    prob = F.softmax(logits.float(), dim=1)
    with torch.no_grad():
        pred = prob.argmax(dim=1).reshape(n, -1)
        hist = torch.zeros(n, c, dtype=torch.float32, device=logits.device).scatter_add_(
            1, pred, torch.ones_like(pred, dtype=torch.float32))
        total = hist.sum(dim=1, keepdim=True)
        class_weight = 1.0 / (hist.pow(ratio) * total.pow(1.0 - ratio)).clamp_min(1.0)
        pixel_weight = class_weight.gather(1, pred).reshape(prob.shape[0], *prob.shape[2:])
    return -(pixel_weight * prob.square().sum(dim=1)).sum() / (n * c)


def multilevel_self_guidance_loss(main_logits: Tensor, aux_logits: Tensor, threshold: float = 0.95,
                                  ignore_index: int = IGNORE_INDEX) -> Tensor:
    """MaxSquare's multi-level self-produced guidance: CE of the aux head against pseudo labels from both heads.

    pseudo(h,w) = argmax_c (P_main + P_aux)/2 where max_c P_main > threshold or max_c P_aux > threshold, else
    ignore_index; L = cross_entropy(aux_logits, pseudo). Pseudo labels carry no gradient, so only the aux head is
    trained by this term. The caller multiplies by λ_seg · λ_target (0.1 · 0.09). No confident pixel → 0 (MaxSquare's
    mean would give NaN).

    Shape: main_logits, aux_logits (N, C, H, W) at the same size → scalar float32.
    """
    _check_4d(main_logits, "main_logits")
    if main_logits.shape != aux_logits.shape:
        raise UsageError(f"main and aux logits differ in shape: {tuple(main_logits.shape)} vs "
                         f"{tuple(aux_logits.shape)}; upsample both to the same size first")
    with torch.no_grad():
        p_main = F.softmax(main_logits.float(), dim=1)
        p_aux = F.softmax(aux_logits.float(), dim=1)
        confident = (p_main.amax(dim=1) > threshold) | (p_aux.amax(dim=1) > threshold)
        pseudo = torch.where(confident, (p_main + p_aux).argmax(dim=1), ignore_index)
    return cross_entropy(aux_logits, pseudo, ignore_index=ignore_index)
