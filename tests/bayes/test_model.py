"""The Pyro model and guide: sites, plates, masks, the ELBO, causality, hardening."""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from torch.distributions import Dirichlet, kl_divergence

from pyro_meta_attention.bayes.model import harden
from pyro_meta_attention.bayes.sites import (
    OBS_SITE,
    budget_site,
    penalty_site,
    routing_mean_site,
    routing_site,
)
from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.data.batches import sample_batch
from pyro_meta_attention.mechanisms import MECHANISMS
from pyro_meta_attention.training.build import build, make_elbo

B, T = 3, 32


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (2000,), generator=g, dtype=torch.uint8)
    return sample_batch(data, B, T, g)


@pytest.mark.parametrize(
    "prior",
    [
        "compute-dirichlet",
        "hierarchical-dirichlet",
        "hierarchical-budget",
        "symmetric-dirichlet",
        "none",
        "fixed-linear",
    ],
)
def test_model_and_guide_sites_agree(prior):
    config = smoke_config(prior={"name": prior})
    model, guide = build(config)
    x, y = batch()
    guide_tr = poutine.trace(guide).get_trace(x, y)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, y)
    L = config.model.n_layer
    for layer in range(L):
        site = routing_site(layer)
        g, m = guide_tr.nodes[site], model_tr.nodes[site]
        assert g["fn"].batch_shape == m["fn"].batch_shape == (B, T)
        assert g["fn"].event_shape == m["fn"].event_shape == (3,)
        assert torch.equal(g["value"], m["value"])
        assert torch.allclose(g["value"].sum(-1), torch.ones(B, T))
        assert g["scale"] == m["scale"] == pytest.approx(1 / (B * T))
        mean_site = routing_mean_site(layer)
        budget = model_tr.nodes.get(budget_site(layer))  # a factor per token, model side only
        assert (budget is None) == (prior != "hierarchical-budget")
        assert budget is None or budget["fn"].batch_shape == (B, T)
        if not prior.startswith("hierarchical"):
            assert mean_site not in guide_tr.nodes and mean_site not in model_tr.nodes
            continue
        g, m = guide_tr.nodes[mean_site], model_tr.nodes[mean_site]  # global: [M], no plates
        assert g["fn"].batch_shape == m["fn"].batch_shape == ()
        assert g["fn"].event_shape == m["fn"].event_shape == (3,)
        assert torch.equal(g["value"], m["value"]) and not g["cond_indep_stack"]
        assert g["scale"] == m["scale"] == pytest.approx(1 / (B * T))
    assert model_tr.nodes[OBS_SITE]["fn"].batch_shape == (B, T)
    assert torch.equal(model_tr.nodes[OBS_SITE]["value"], y)


@pytest.mark.parametrize("elbo", ["meanfield", "trace"])
@pytest.mark.parametrize("prior", ["compute-dirichlet", "sparse-dirichlet", "none"])
def test_elbo_is_finite_and_in_nats_per_token(elbo, prior):
    model, guide = build(smoke_config(prior={"name": prior}))
    loss = make_elbo(elbo)(model, guide)(*batch())
    # untrained byte LM: about log(256) = 5.55 nats per token, plus a small KL
    assert torch.isfinite(loss) and 5.0 < loss.item() < 6.5
    loss.backward()
    grads = [p.grad for p in guide.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_guide_initialised_at_prior_has_near_zero_kl():
    model, guide = build(smoke_config())
    x, _ = batch()
    q = Dirichlet(guide.concentration(x).double())
    p = Dirichlet(model.prior.concentration())
    # the init squashes the prior into [floor, cap] via a float32 logit: KL ~ 1e-10 or less
    assert float(kl_divergence(q, p).max().detach()) < 1e-6


def test_hierarchical_elbo_adds_the_hyperprior_once_per_layer_and_moves_the_means():
    # at init the routing means sit at the hyperprior's mode, so q and p(alpha | mu) are the
    # compute prior's: the two ELBOs (same seed, same samples) differ by the hyperprior alone
    x, y = batch()
    losses, models = {}, {}
    for name in ("compute-dirichlet", "hierarchical-dirichlet"):
        pyro.set_rng_seed(0)
        models[name] = build(smoke_config(prior={"name": name}))
        pyro.set_rng_seed(1)
        losses[name] = make_elbo("meanfield").differentiable_loss(*models[name], x, y)
    model, guide = models["hierarchical-dirichlet"]
    mu = guide.routing_means().detach()  # [L, M]
    hyper = model.prior.hyper_distribution(mu)
    log_p = sum(float(hyper.log_prob(mu[layer])) for layer in range(mu.shape[0]))
    gap = float(losses["hierarchical-dirichlet"] - losses["compute-dirichlet"])
    assert gap == pytest.approx(-log_p / (B * T), rel=1e-4, abs=1e-6)
    # every token's q pushed to local: the loss's gradient moves each layer's mean to local
    with torch.no_grad():
        guide.mlp[-1].bias.view(-1, 3)[:] = torch.tensor([-4.0, -4.0, 4.0])
    guide.mean_logits.grad = None
    make_elbo("meanfield").differentiable_loss(model, guide, x, y).backward()
    grad = guide.mean_logits.grad  # [L, M]: descent raises the local logit, lowers the others
    assert (grad[:, 2] < 0).all() and (grad[:, :2] > 0).all()


def test_the_budget_charges_every_token_for_a_layer_mean_above_it():
    # the same guide and samples under hierarchical-dirichlet and hierarchical-budget: the
    # losses differ by beta x sum_l price(mu_l), zero while the means are at or below budget
    x, y = batch()

    def loss_gap(layer0, beta):  # layer 0's mean logits; layer 1's stays at the prior mean
        losses = {}
        for name in ("hierarchical-dirichlet", "hierarchical-budget"):
            pyro.set_rng_seed(0)
            model, guide = build(smoke_config(prior={"name": name, "strength": 0.5}))
            with torch.no_grad():
                guide.mean_logits[0] = layer0
            pyro.set_rng_seed(1)
            elbo = make_elbo("meanfield").differentiable_loss
            losses[name] = float(elbo(model, guide, x, y, beta=beta))
        price = model.prior.budget(guide.routing_means().detach().double())  # [L]
        return losses["hierarchical-budget"] - losses["hierarchical-dirichlet"], price

    gap, price = loss_gap(torch.tensor([-6.0, -6.0, 6.0]), 1.0)
    assert gap == pytest.approx(0.0, abs=1e-6) and float(price.sum()) < 1e-6  # local; at mode
    gap, price = loss_gap(torch.tensor([6.0, -6.0, -6.0]), 0.5)
    assert float(price[0]) > 0.05 and float(price[1]) < 1e-6  # layer 0 all-full: above budget
    assert gap == pytest.approx(0.5 * float(price.sum()), rel=1e-4)


def test_a_hierarchical_prior_needs_room_above_the_guide_floor():
    # kappa = M x floor (3 x 1.0): every mean's concentration would sit at the floor, with no
    # room to move (the prior itself, 1 / 1 / 1, is representable)
    bad = {"name": "hierarchical-dirichlet", "strength": 0.0, "concentration": 3.0}
    with pytest.raises(ValueError, match="must exceed"):
        build(smoke_config(prior=bad, guide={"floor": 1.0}))


def test_a_prior_the_guide_cannot_represent_is_refused():
    # compute-dirichlet at kappa 0.2: a = 0.2 * softmax(-2 c) has entries ~0.04 < guide floor 0.05
    with pytest.raises(ValueError, match="outside the guide's"):
        build(smoke_config(prior={"concentration": 0.2, "floor": 0.01}))
    build(smoke_config(prior={"concentration": 0.2, "floor": 0.01}, guide={"floor": 0.03}))


def test_mask_and_scale_reach_both_sides():
    model, guide = build(smoke_config())
    x, y = batch()
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:, T // 2 :] = False
    guide_tr = poutine.trace(guide).get_trace(x, y, beta=0.5, mask=mask)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(
        x, y, beta=0.5, mask=mask
    )
    n = int(mask.sum())
    for tr in (guide_tr, model_tr):
        node = tr.nodes[routing_site(0)]
        assert node["scale"] == pytest.approx(0.5 / n)
        assert torch.equal(node["mask"], mask)
    assert model_tr.nodes[OBS_SITE]["scale"] == pytest.approx(1 / n)
    # masked tokens do not change the loss
    elbo = make_elbo("meanfield")(model, guide)
    y2 = y.clone()
    y2[:, T // 2 :] = (y2[:, T // 2 :] + 1) % 256
    pyro.set_rng_seed(1)
    a = elbo(x, y, mask=mask)
    pyro.set_rng_seed(1)
    b = elbo(x, y2, mask=mask)
    assert torch.allclose(a, b)


@pytest.mark.parametrize("token_shift", [False, True])
def test_routed_model_is_causal(token_shift):
    config = smoke_config(model={"token_shift": token_shift})
    model, guide = build(config)
    model = model.double()
    x, _ = batch()
    t = 10
    x2 = x.clone()
    x2[:, t + 1 :] = (x2[:, t + 1 :] + 7) % 256

    def logits(inp):
        alphas = list(guide.posterior_mean(inp).double().unbind(2))
        return model.net(inp, alphas)

    with torch.no_grad():
        a, b = logits(x), logits(x2)
    assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-12, rtol=0)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


@pytest.mark.parametrize(
    "prior,want",
    [
        ({"name": "fixed-local"}, ["local", "local"]),
        ({"name": "fixed-layers", "layers": "local,full"}, ["local", "full"]),
    ],
)
def test_fixed_model_runs_only_each_layers_mechanism(monkeypatch, prior, want):
    import pyro_meta_attention.network as network

    model, guide = build(smoke_config(prior=prior))
    x, y = batch()
    ran = []
    real = network.run_mechanism
    monkeypatch.setattr(
        network, "run_mechanism", lambda name, *a, **k: ran.append(name) or real(name, *a, **k)
    )
    loss = make_elbo("meanfield")(model, guide)(x, y)
    assert ran == want and torch.isfinite(loss)  # layer 0, then layer 1
    for alpha, name in zip(guide(x, y), want, strict=True):
        corner = torch.nn.functional.one_hot(torch.tensor(MECHANISMS.index(name)), 3).float()
        assert torch.equal(alpha, corner.expand(B, T, 3))


def test_fixed_layers_names_every_layer():
    with pytest.raises(ValueError, match="lists 3 mechanism.* the network's 2 layers"):
        build(smoke_config(prior={"name": "fixed-layers", "layers": "local,full,full"}))


def test_harden_is_straight_through():
    alpha = torch.tensor([[0.98, 0.01, 0.01], [0.4, 0.3, 0.3]], requires_grad=True)
    out = harden(alpha, tau=0.2)
    assert torch.equal(out[0].detach(), torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(out[1].detach(), alpha[1].detach())  # uncertain stays soft
    out.sum().backward()
    assert torch.equal(alpha.grad, torch.ones_like(alpha))  # identity gradient
    assert harden(alpha, 0.0) is alpha


def test_obs_mask_scores_only_its_positions_and_routing_covers_every_token():
    model, guide = build(smoke_config())
    elbo = make_elbo("meanfield")(model, guide)
    x, y = batch()
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, [5, 17]] = True
    y_other = y.clone()
    y_other[~mask] = (y_other[~mask] + 1) % 256  # change only unscored targets
    y_scored = y.clone()
    y_scored[mask] = (y_scored[mask] + 1) % 256
    losses = []
    for target in (y, y_other, y_scored):
        pyro.set_rng_seed(3)
        losses.append(elbo(x, target, obs_mask=mask))
    assert torch.allclose(losses[0], losses[1]) and not torch.allclose(losses[0], losses[2])
    pyro.set_rng_seed(3)
    trace = poutine.trace(model).get_trace(x, y, obs_mask=mask)
    trace.compute_log_prob()
    assert trace.nodes[routing_site(0)]["log_prob"].shape == (B, T)  # every token routed
    assert (trace.nodes[OBS_SITE]["log_prob"][~mask] == 0).all()


def test_token_shift_adds_the_previous_token():
    net = build(smoke_config(model={"token_shift": True}))[0].net
    x, _ = batch()
    e = net.embed(x)
    x2 = x.clone()
    x2[:, 3] = (x2[:, 3] + 1) % 256
    e2 = net.embed(x2)
    changed = (e - e2).abs().sum(-1).gt(0)  # [B, T]: positions whose embedding moved
    assert changed[:, 3].all() and changed[:, 4].all() and not changed[:, 5:].any()


def test_cost_penalised_model_routes_hard_and_adds_the_penalty(monkeypatch):
    import pyro_meta_attention.network as network

    config = smoke_config(
        prior={"name": "cost-penalised", "strength": 0.7}, guide={"init": "random"}
    )
    model, guide = build(config)
    x, y = batch()
    seen = []
    real = network.MixedAttention.forward

    def record(self, h, alpha, assignment=None):
        seen.append(alpha)
        return real(self, h, alpha, assignment)

    monkeypatch.setattr(network.MixedAttention, "forward", record)
    guide_trace = poutine.trace(guide).get_trace(x, y)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    trace.compute_log_prob()
    for layer, alpha in enumerate(seen):  # the network saw one-hot alpha ...
        one_hot = torch.nn.functional.one_hot(alpha.argmax(-1), 3).float()
        # one_hot + alpha - alpha.detach(): exact up to float32 rounding of alpha - alpha
        torch.testing.assert_close(alpha.detach(), one_hot, rtol=0, atol=1e-6)
        soft = guide_trace.nodes[routing_site(layer)]["value"]
        assert not torch.equal(soft, alpha.detach())  # ... of the soft router weights
        factor = trace.nodes[penalty_site(layer)]["log_prob"] * B * T  # [B, T], scale undone
        torch.testing.assert_close(factor, -0.7 * (soft * model.prior.cost.float()).sum(-1))
    # straight-through: the loss gradient reaches the router through the one-hot forward
    loss = make_elbo("meanfield")(model, guide)(x, y)
    (grad,) = torch.autograd.grad(loss, [guide.mlp[-1].weight])
    assert grad.abs().sum() > 0


def test_no_penalty_while_the_network_runs_a_fixed_route():
    """Under `route` (the full warm-up) the executed cost does not depend on alpha: no factor."""
    model, guide = build(smoke_config(prior={"name": "cost-penalised", "strength": 0.7}))
    x, y = batch()
    full = torch.tensor([1.0, 0.0, 0.0])
    guide_trace = poutine.trace(guide).get_trace(x, y)
    replayed = poutine.replay(model, trace=guide_trace)
    assert penalty_site(0) in poutine.trace(replayed).get_trace(x, y).nodes
    assert penalty_site(0) not in poutine.trace(replayed).get_trace(x, y, route=full).nodes
