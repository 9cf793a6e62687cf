"""Every method as the composition of terms its catalogue names, and every loss term of every method where it acts: its
value under the resolved config of each preset (its λ and its damping at a given step) against the loss primitives
(whose formulas ``test_losses`` checks by hand), and the tensors its gradient reaches (and those it must not).

Together these tests fail when any term is removed, mis-weighted, left undamped, detached from where it should act or
attached where it should not (e.g. the target feature-norm term multiplied by zero, or reading the source features).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ftadapt.config import METHODS, LossConfig, build_config
from ftadapt.config.methods import METHOD_TERMS
from ftadapt.config.presets import PRESETS
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
from ftadapt.methods import DomainOutput, StepContext, create_method
from ftadapt.models.deeplab import combine_heads, upsample_logits
from ftadapt.models.discriminator import FCDiscriminator
from ftadapt.models.registry import create_model
from ftadapt.training.schedules import linear_damping, norm_damping

C, STEP, STEPS = 19, 3, 10  # a step where every damping differs from 1 (and the preheats of 5 steps still run)
MODELS = {"clan": "tiny", "multi": "tiny-multi"}


def _domain(seed: int, labelled: bool) -> DomainOutput:
    """A domain's forward as leaf tensors, so a term's gradient can be traced to what it read."""
    g = torch.Generator().manual_seed(seed)
    logits = tuple((2 * torch.randn(1, C, 32, 32, generator=g)).requires_grad_() for _ in range(2))
    features = (torch.rand(1, 16, 8, 8, generator=g) + 0.5).requires_grad_()
    label = torch.randint(0, C, (1, 32, 32), generator=g) if labelled else None
    return DomainOutput(logits, features, label)


def _setup(method: str, preset: str, **keys):
    cfg = build_config({"method": method, "preset": preset, "steps": STEPS, **keys})
    heads = "multi" if "multi" in cfg.model else "clan"
    torch.manual_seed(0)
    model = create_model(MODELS[heads])
    disc = FCDiscriminator(C, ndf=8)
    ctx = StepContext(STEP, STEPS, model, heads, {"clan": "sum", "multi": "main"}[heads], disc)
    return cfg, ctx, create_method(method, cfg.loss), model, disc


def _expected(name: str, cfg, ctx, src: DomainOutput, tgt: DomainOutput) -> torch.Tensor:
    """Each term's value from the primitives and the config, independently of the method code."""
    loss, i = cfg.loss, ctx.step
    n = loss.damping_steps or ctx.steps  # the damping horizon: the run's steps unless the config fixes it
    seg = (lambda x, y: focal_loss(x, y, gamma=loss.focal_gamma)) if loss.seg == "focal" else cross_entropy
    adv_damp = linear_damping(i, n) if loss.adv_damping else 1.0
    norm_weight = loss.lambda_norm * norm_damping(i, n, factor=loss.norm_damping)

    def disc(logits_sum):
        prob = torch.softmax(logits_sum, dim=1)
        return upsample_logits(ctx.discriminator(prob), prob.shape[-2:])

    def plain(map_, preheat):
        return None if i < preheat else map_

    p1, p2 = tgt.logits
    wmap = clan_weight_map(p1, p2)
    pred = combine_heads(tgt.logits, ctx.head_rule)
    table = {
        "seg": lambda: (seg(src.logits[1], src.label) + loss.aux_weight * seg(src.logits[0], src.label)
                        if ctx.heads == "multi" else seg(src.logits[0], src.label) + seg(src.logits[1], src.label)),
        "norm_src": lambda: norm_weight * feature_norm_loss(src.features, loss.delta_r),
        "norm_tgt": lambda: norm_weight * feature_norm_loss(tgt.features, loss.delta_r),
        "adv": lambda: loss.lambda_adv * adv_damp * weighted_bce_with_logits(
            disc(p1 + p2), 0.0, plain(wmap, loss.adv_preheat_steps), loss.epsilon, loss.lambda_local),
        "weight": lambda: 2 * loss.lambda_weight * adv_damp * weight_discrepancy_loss(ctx.model.layer5,
                                                                                       ctx.model.layer6),
        "maxsquare": lambda: loss.lambda_target * (iw_maxsquare_loss(pred, loss.iw_ratio) if loss.iw_ratio > 0
                                                   else maxsquare_loss(pred)),
        "guidance": lambda: loss.aux_weight * loss.lambda_target * multilevel_self_guidance_loss(
            tgt.logits[1], tgt.logits[0], loss.guidance_threshold),
        "d_src": lambda: weighted_bce_with_logits(disc(src.logits[0].detach() + src.logits[1].detach()), 0.0),
        "d_tgt": lambda: weighted_bce_with_logits(disc((p1 + p2).detach()), 1.0,
                                                  plain(wmap.detach(), loss.d_preheat_steps), loss.epsilon,
                                                  loss.lambda_local),
    }
    return table[name]()  # lazily: not every term fits every head layout


# Per loss name: what its gradient must reach, and what it must not.
REACH = {
    "seg": ({"src.logits"}, {"src.features", "tgt.logits", "tgt.features", "G.heads", "D"}),
    "norm_src": ({"src.features"}, {"src.logits", "tgt.features", "tgt.logits", "D"}),
    "norm_tgt": ({"tgt.features"}, {"tgt.logits", "src.features", "src.logits", "D"}),
    "adv": ({"tgt.logits"}, {"src.logits", "src.features", "tgt.features"}),  # D's params get a grad too: frozen
    "weight": ({"G.heads"}, {"src.logits", "tgt.logits", "src.features", "tgt.features", "D"}),
    "maxsquare": ({"tgt.logits"}, {"src.logits", "tgt.features", "D"}),
    "guidance": ({"tgt.logits"}, {"src.logits", "tgt.features", "D"}),
    "d_src": ({"D"}, {"src.logits", "tgt.logits", "src.features", "tgt.features"}),
    "d_tgt": ({"D"}, {"src.logits", "tgt.logits", "src.features", "tgt.features"}),
}
EXPECTED_TERMS = {
    "source-only": {"seg"}, "norm-only": {"seg", "norm_src", "norm_tgt"},
    "clan": {"seg", "adv", "weight", "d_src", "d_tgt"},
    "clan-norm": {"seg", "norm_src", "norm_tgt", "adv", "weight", "d_src", "d_tgt"},
    "maxsquare": {"seg", "maxsquare"}, "maxsquare-norm": {"seg", "norm_src", "norm_tgt", "maxsquare"},
}


def _losses(method, ctx, src, tgt) -> dict[str, torch.Tensor]:
    losses = dict(method.source_losses(ctx, src))
    if method.uses_target:
        losses.update(method.target_losses(ctx, tgt))
    if method.uses_discriminator:
        losses.update(method.discriminator_losses(ctx, src, tgt))
    return losses


def _reached(loss: torch.Tensor, src, tgt, model, disc) -> set[str]:
    groups = {"src.logits": list(src.logits), "src.features": [src.features], "tgt.logits": list(tgt.logits),
              "tgt.features": [tgt.features],
              "G.heads": [p for p in (*model.layer5.parameters(), *model.layer6.parameters()) if p.requires_grad],
              "D": list(disc.parameters())}
    flat = [t for ts in groups.values() for t in ts]
    grads = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True)
    found, k = set(), 0
    for name, tensors in groups.items():
        if any(g is not None and g.abs().sum() > 0 for g in grads[k:k + len(tensors)]):
            found.add(name)
        k += len(tensors)
    return found


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("method", METHODS)
def test_every_term_has_its_value_and_reaches_what_it_should(method, preset):
    cfg, ctx, spec, model, disc = _setup(method, preset)
    src, tgt = _domain(1, labelled=True), _domain(2, labelled=False)
    losses = _losses(spec, ctx, src, tgt)
    assert set(losses) == EXPECTED_TERMS[method]
    for name, value in losses.items():
        torch.testing.assert_close(value, _expected(name, cfg, ctx, src, tgt), rtol=1e-5, atol=1e-9,
                                   msg=lambda m, name=name: f"{method}/{preset} term {name}: {m}")
        assert value.abs() > 0, f"{method}/{preset}: term {name} is zero at step {STEP}"
        must, must_not = REACH[name]
        reached = _reached(value, src, tgt, model, disc)
        assert must <= reached and not (must_not & reached), (method, preset, name, sorted(reached))


@pytest.mark.parametrize("keys, terms", [
    ({"method": "maxsquare", "loss.iw_ratio": 0.2}, {"maxsquare"}),
    ({"method": "maxsquare-norm", "loss.self_guidance": True, "loss.guidance_threshold": 0.2},
     {"maxsquare", "guidance", "norm_tgt"}),
    ({"method": "clan-norm", "loss.adv_preheat_steps": 5, "loss.d_preheat_steps": 5}, {"adv", "d_tgt"}),
    ({"method": "clan", "loss.adv_preheat_steps": 5}, {"adv", "d_tgt"}),  # G's term plain, D's weighted
    ({"method": "clan", "loss.d_preheat_steps": 5}, {"adv", "d_tgt"}),  # and the other way round
])
def test_the_optional_forms_of_terms(keys, terms):
    """Image-wise MaxSquare, MaxSquare's self-guidance, CLAN's plain-BCE preheat of G's and of D's term, each on its
    own: value and reach as above."""
    method = keys.pop("method")
    cfg, ctx, spec, model, disc = _setup(method, "paper", **keys)
    src, tgt = _domain(1, labelled=True), _domain(2, labelled=False)
    losses = _losses(spec, ctx, src, tgt)
    for name in terms:
        torch.testing.assert_close(losses[name], _expected(name, cfg, ctx, src, tgt), rtol=1e-5, atol=1e-9)
        must, must_not = REACH[name]
        reached = _reached(losses[name], src, tgt, model, disc)
        assert must <= reached and not (must_not & reached), (name, sorted(reached))


def test_damping_follows_the_step():
    """The same term at two steps differs exactly by the ratio of its damping factors (paper: 1 − i/N on both)."""
    _cfg, ctx, spec, model, disc = _setup("clan-norm", "paper")
    src, tgt = _domain(1, labelled=True), _domain(2, labelled=False)
    early = _losses(spec, StepContext(0, STEPS, model, "clan", "sum", disc), src, tgt)
    late = _losses(spec, ctx, src, tgt)
    ratio = 1 - STEP / STEPS
    for name in ("norm_src", "norm_tgt", "adv", "weight"):
        torch.testing.assert_close(late[name], ratio * early[name], rtol=1e-5, atol=0)
    for name in ("seg", "d_src"):  # never damped
        torch.testing.assert_close(late[name], early[name])
    assert F.mse_loss(late["seg"], early["seg"]) == 0


def test_damping_runs_over_its_own_horizon():
    """loss.damping_steps fixes the damping horizon apart from the run's steps (FTA's code: 150,000 whatever the
    run's length): at step 3 of 10 with a horizon of 20 the norm term is damped by 1 − 1.5·3/20 and the adversarial
    and weight terms by 1 − 3/20, and the method's coefficients say exactly that."""
    _cfg, ctx, spec, model, disc = _setup("clan-norm", "paper-code", **{"loss.damping_steps": 20})
    src, tgt = _domain(1, labelled=True), _domain(2, labelled=False)
    early = _losses(spec, StepContext(0, STEPS, model, "clan", "sum", disc), src, tgt)
    late = _losses(spec, ctx, src, tgt)
    for names, ratio in ((("norm_src", "norm_tgt"), 1 - 1.5 * STEP / 20), (("adv", "weight"), 1 - STEP / 20)):
        for name in names:
            torch.testing.assert_close(late[name], ratio * early[name], rtol=1e-5, atol=0)
            assert spec.coefficients(STEP, STEPS)[name] == pytest.approx(ratio * spec.coefficients(0, STEPS)[name])


@pytest.mark.parametrize("method, target, disc", [
    ("source-only", False, False), ("norm-only", True, False), ("clan", True, True), ("clan-norm", True, True),
    ("maxsquare", True, False), ("maxsquare-norm", True, False),
])
def test_each_method_is_the_composition_its_catalogue_names(method, target, disc):
    """What the loop runs for it: a target forward only when a term reads the target, a discriminator only for the
    adversarial term."""
    composed = create_method(method, LossConfig())
    assert [term.name for term in composed.terms] == list(METHOD_TERMS[method])
    assert (composed.uses_target, composed.uses_discriminator) == (target, disc)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(UsageError, match="unknown method 'dann'; valid methods: source-only, norm-only, clan"):
        create_method("dann", LossConfig())


@pytest.mark.parametrize("name, cfg, heads, message", [
    ("clan", LossConfig(), "multi", "needs a model with 'clan' heads"),
    ("clan-norm", LossConfig(), "single", "needs a model with 'clan' heads"),
    ("maxsquare", LossConfig(self_guidance=True), "clan", "self-guidance .* needs a model with 'multi' heads"),
])
def test_methods_refuse_an_incompatible_head_layout(name, cfg, heads, message):
    with pytest.raises(UsageError, match=message):
        create_method(name, cfg).check_model(heads)


def test_the_adversarial_term_trains_g_and_leaves_a_frozen_d_alone():
    """The step freezes D for G's terms: the adversarial term's gradient then reaches G's heads (through the weight
    map and the prediction) and no parameter of D."""
    _cfg, ctx, spec, model, disc = _setup("clan", "paper")
    disc.requires_grad_(False)
    losses = spec.target_losses(ctx, _domain(2, labelled=False))
    sum(losses.values()).backward()
    assert all(p.grad is None for p in disc.parameters()), "G's adversarial term trained D"
    assert model.layer5.conv2d_list[0].weight.grad is not None
