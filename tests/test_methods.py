"""Methods as compositions of terms: which terms each method has, their values against hand-computed formulas, the
norm term's gradient direction, and that the discriminator step never reaches G."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ftadapt.config import METHODS, LossConfig
from ftadapt.errors import UsageError
from ftadapt.methods import DomainOutput, StepContext, create_method
from ftadapt.models.discriminator import FCDiscriminator
from ftadapt.models.registry import create_model

C = 19


def _ctx(model=None, heads="clan", step=0, steps=10, disc=None):
    rule = {"clan": "sum", "multi": "main", "single": "main"}[heads]
    return StepContext(step, steps, model, heads, rule, disc)


def _out(n=1, h=8, w=8, seed=0, label=True, grad=False):
    g = torch.Generator().manual_seed(seed)
    logits = tuple(torch.randn(n, C, h, w, generator=g).requires_grad_(grad) for _ in range(2))
    features = torch.randn(n, 16, h // 2, w // 2, generator=g).requires_grad_(grad)
    return DomainOutput(logits, features, torch.randint(0, C, (n, h, w), generator=g) if label else None)


@pytest.mark.parametrize("name, target, disc, terms", [
    ("source-only", False, False, ["Segmentation"]),
    ("norm-only", True, False, ["Segmentation", "FeatureNorm"]),
    ("clan", True, True, ["Segmentation", "ClanAdversarial", "WeightDiscrepancy"]),
    ("clan-norm", True, True, ["Segmentation", "FeatureNorm", "ClanAdversarial", "WeightDiscrepancy"]),
    ("maxsquare", True, False, ["Segmentation", "MaxSquare"]),
    ("maxsquare-norm", True, False, ["Segmentation", "FeatureNorm", "MaxSquare"]),
])
def test_each_method_is_a_composition_of_terms(name, target, disc, terms):
    method = create_method(name, LossConfig())
    assert [type(t).__name__ for t in method.terms] == terms
    assert (method.uses_target, method.uses_discriminator) == (target, disc)
    assert name in METHODS


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(UsageError, match="unknown method 'dann'; valid methods: source-only, norm-only, clan"):
        create_method("dann", LossConfig())


def test_segmentation_head_rules_and_focal_option():
    out = _out()
    ce = [F.cross_entropy(x, out.label) for x in out.logits]
    clan = create_method("source-only", LossConfig()).source_losses(_ctx(heads="clan"), out)["seg"]
    multi = create_method("source-only", LossConfig()).source_losses(_ctx(heads="multi"), out)["seg"]
    torch.testing.assert_close(clan, ce[0] + ce[1])
    torch.testing.assert_close(multi, ce[1] + 0.1 * ce[0])  # main = layer6 (second), aux = layer5
    focal = create_method("source-only", LossConfig(seg="focal")).source_losses(_ctx(), out)["seg"]
    p = [F.softmax(x, 1).gather(1, out.label[:, None])[:, 0] for x in out.logits]
    torch.testing.assert_close(focal, sum((-(1 - q) ** 2 * q.log()).mean() for q in p))


def test_norm_term_value_damping_and_gradient_grows_every_norm():
    cfg = LossConfig(lambda_norm=0.5, delta_r=0.25, norm_damping=1.5)
    method = create_method("norm-only", cfg)
    out = _out(grad=True)
    losses = method.source_losses(_ctx(step=2, steps=6), out)
    damping = 1 - 1.5 * 2 / 6  # 0.5
    torch.testing.assert_close(losses["norm_src"], torch.tensor(0.5 * damping * 0.25 ** 2))
    losses["norm_src"].backward()
    f = out.features.detach()
    norms = f.norm(dim=1, keepdim=True)
    positions = f.shape[0] * f.shape[2] * f.shape[3]
    # d/df of λ·d·mean(‖f‖ − ‖f‖.detach() − Δr)² = −2·λ·d·Δr/P · f/‖f‖: straight outwards at every position
    torch.testing.assert_close(out.features.grad, -2 * 0.5 * damping * 0.25 / positions * f / norms)
    stepped = f - 10.0 * out.features.grad
    assert (stepped.norm(dim=1) > f.norm(dim=1)).all()
    assert set(method.target_losses(_ctx(step=2, steps=6), _out(label=False))) == {"norm_tgt"}


def test_clan_terms_match_the_formulas_and_d_step_never_reaches_g():
    torch.manual_seed(0)
    model = create_model("tiny")
    disc = FCDiscriminator(C, ndf=8)
    cfg = LossConfig(adv_damping=True)
    method = create_method("clan", cfg)
    ctx = _ctx(model, step=5, steps=10, disc=disc)
    src, tgt = _out(h=64, w=64, seed=1, grad=True), _out(h=64, w=64, seed=2, label=False, grad=True)
    disc.requires_grad_(False)
    losses = method.target_losses(ctx, tgt)

    p1, p2 = tgt.logits
    s1, s2 = F.softmax(p1, 1), F.softmax(p2, 1)
    weight = 1 - (s1 * s2).sum(1, keepdim=True) / (s1.norm(dim=1, keepdim=True) * s2.norm(dim=1, keepdim=True))
    d_out = F.interpolate(disc(F.softmax(p1 + p2, 1)), size=(64, 64), mode="bilinear", align_corners=True)
    bce = F.binary_cross_entropy_with_logits(d_out, torch.zeros_like(d_out), reduction="none")
    torch.testing.assert_close(losses["adv"], 0.001 * 0.5 * ((0.4 + 40 * weight) * bce).mean())
    w5 = torch.cat([p.flatten() for p in model.layer5.parameters()])
    w6 = torch.cat([p.flatten() for p in model.layer6.parameters()])
    torch.testing.assert_close(losses["weight"], 2 * 0.01 * 0.5 * (F.cosine_similarity(w5, w6, dim=0) + 1))
    sum(losses.values()).backward()
    assert all(p.grad is None for p in disc.parameters()), "G's adversarial term trained D"
    assert tgt.logits[0].grad is not None and model.layer5.conv2d_list[0].weight.grad is not None

    for x in (*src.logits, *tgt.logits):
        x.grad = None
    disc.requires_grad_(True)
    d_losses = method.discriminator_losses(ctx, src, tgt)
    d_src = F.interpolate(disc(F.softmax(src.logits[0] + src.logits[1], 1)), size=(64, 64), mode="bilinear",
                          align_corners=True)
    torch.testing.assert_close(d_losses["d_src"], F.binary_cross_entropy_with_logits(d_src, torch.zeros_like(d_src)))
    d_tgt = F.interpolate(disc(F.softmax(p1 + p2, 1)), size=(64, 64), mode="bilinear", align_corners=True)
    bce_t = F.binary_cross_entropy_with_logits(d_tgt, torch.ones_like(d_tgt), reduction="none")
    torch.testing.assert_close(d_losses["d_tgt"], ((0.4 + 40 * weight) * bce_t).mean())  # no ½, no damping
    sum(d_losses.values()).backward()
    assert all(x.grad is None for x in (*src.logits, *tgt.logits)), "the D loss reached G's predictions"
    assert all(p.grad is not None for p in disc.parameters())


def test_clan_preheat_uses_plain_bce_separately_for_g_and_d():
    disc = FCDiscriminator(C, ndf=8)
    tgt, src = _out(h=32, w=32, label=False), _out(h=32, w=32, seed=1)
    d_out = disc(F.softmax(tgt.logits[0] + tgt.logits[1], 1))  # 1×1 output: the upsample is a broadcast
    plain_g = F.binary_cross_entropy_with_logits(d_out, torch.zeros_like(d_out))
    plain_d = F.binary_cross_entropy_with_logits(d_out, torch.ones_like(d_out))
    model = create_model("tiny")
    for g_preheat, d_preheat in ((3, 0), (0, 3), (3, 3), (0, 0)):
        method = create_method("clan", LossConfig(adv_preheat_steps=g_preheat, d_preheat_steps=d_preheat,
                                                  adv_damping=False))
        ctx = _ctx(model, step=2, disc=disc)
        g_loss = method.target_losses(ctx, tgt)["adv"]
        d_loss = method.discriminator_losses(ctx, src, tgt)["d_tgt"]
        assert torch.allclose(g_loss, 0.001 * plain_g) == (g_preheat > 2), (g_preheat, d_preheat)
        assert torch.allclose(d_loss, plain_d) == (d_preheat > 2), (g_preheat, d_preheat)


def test_maxsquare_variants():
    out = _out(label=False)
    pred = out.logits[0] + out.logits[1]
    plain = create_method("maxsquare", LossConfig()).target_losses(_ctx(), out)
    torch.testing.assert_close(plain["maxsquare"], 0.1 * -0.5 * F.softmax(pred, 1).square().mean())
    iw = create_method("maxsquare", LossConfig(iw_ratio=0.2)).target_losses(_ctx(), out)["maxsquare"]
    assert iw < 0 and not torch.isclose(iw, plain["maxsquare"])
    guided = create_method("maxsquare", LossConfig(self_guidance=True, guidance_threshold=0.0))
    losses = guided.target_losses(_ctx(heads="multi"), out)
    aux, main = out.logits
    pseudo = (F.softmax(main, 1) + F.softmax(aux, 1)).argmax(1)
    torch.testing.assert_close(losses["guidance"], 0.1 * 0.1 * F.cross_entropy(aux, pseudo))
    torch.testing.assert_close(losses["maxsquare"], 0.1 * -0.5 * F.softmax(main, 1).square().mean())


@pytest.mark.parametrize("name, cfg, heads, message", [
    ("clan", LossConfig(), "multi", "needs a model with 'clan' heads"),
    ("clan-norm", LossConfig(), "single", "needs a model with 'clan' heads"),
    ("maxsquare", LossConfig(self_guidance=True), "clan", "self-guidance .* needs a model with 'multi' heads"),
])
def test_methods_refuse_an_incompatible_head_layout(name, cfg, heads, message):
    with pytest.raises(UsageError, match=message):
        create_method(name, cfg).check_model(heads)
