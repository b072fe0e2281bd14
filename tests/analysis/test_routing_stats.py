"""analysis/routing_stats.py: the data-routed share and the plain verdict on whether routing was
learned."""

import pytest
import torch

from pyro_meta_attention.analysis.routing_stats import (
    ROUTE_MARGIN,
    routing_learned,
    routing_stats,
)
from pyro_meta_attention.bayes.priors import make_prior
from pyro_meta_attention.config import PriorConfig, smoke_config
from pyro_meta_attention.training.build import build

COST = torch.tensor([1.0, 1.0, 0.23], dtype=torch.float64)


def stats(routed, distance, spread, kl=0.01, differs=None):
    return {
        "argmax_differs": routed if differs is None else differs,
        "data_routed": routed,
        "prior_distance": distance,
        "token_spread": spread,
        "kl": kl,
    }


@pytest.mark.parametrize(
    "row,learned",
    [
        (stats(0.0, 0.002, 0.001), False),  # the posterior is the prior
        (stats(0.031, 0.006, 0.018), True),  # MQAR: only the queries moved, in one layer
        (stats(0.005, 0.003, 0.004), False),  # a handful of pairs: noise, not routing
        (stats(1.0, 0.30, 0.001), False),  # every token moved alike: a new prior, not routing
        (stats(0.0, 0.08, 0.05), True),  # alpha_bar moved and varies, argmax unchanged
        # text under lambda = 0.5: 16 % of argmaxes flipped between near-tied mechanisms while
        # the posterior moved by TV 0.004 (issue 19): no token moved by the margin
        (stats(0.0, 0.004, 0.003, kl=0.001, differs=0.16), False),
    ],
)
def test_verdict(row, learned):
    got, verdict = routing_learned(row, make_prior(PriorConfig(), COST))
    assert got is learned
    assert ("LEARNED" in verdict and "NOT" not in verdict) is learned


def test_fixed_and_prior_free_models():
    assert not routing_learned(stats(0.5, 0.1, 0.1), make_prior(PriorConfig("fixed-full"), COST))[0]
    none = make_prior(PriorConfig("none"), COST)
    assert routing_learned(stats(0.5, 0.1, 0.05, kl=None), none)[0]
    assert not routing_learned(stats(0.5, 0.1, 0.001, kl=None), none)[0]


class _Guide:
    """A guide stand-in whose posterior mean is given [B, T, L, M] (concentration = 50 · mean)."""

    def __init__(self, prior, mean):
        self.prior, self.mean = prior, mean

    def posterior_mean(self, x):
        return self.mean

    def concentration(self, x):
        return 50.0 * self.mean

    def prior_concentration(self):
        a = self.prior.concentration()
        return a.expand(self.mean.shape[2], a.numel())


def test_data_routed_counts_only_flips_beyond_the_margin():
    # the default cost vector at T = 128 (full, linear, local): lambda = 0.5's prior mean
    # 0.267 / 0.341 / 0.392 has linear 0.05 behind local, so a TV move of 0.026 flips it
    prior = make_prior(PriorConfig(strength=0.5), torch.tensor([1.0, 0.508, 0.234]).double())
    m = prior.mean().double()  # [M], argmax local
    near = m + torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64) * (m[2] - m[1] + 0.002) / 2
    far = torch.tensor([0.1, 0.1, 0.8], dtype=torch.float64)  # local, far from the prior mean
    flip = torch.tensor([0.8, 0.1, 0.1], dtype=torch.float64)  # full, TV >> margin
    assert near.argmax() == 1 and 0.5 * (near - m).abs().sum() < ROUTE_MARGIN
    rows = torch.stack([near, near, far, flip])  # [4, M]: 2 near-tie flips, 1 kept, 1 routed
    s = routing_stats(_Guide(prior, rows.view(1, 4, 1, 3)), torch.zeros(1, 4, dtype=torch.long))
    assert s["argmax_differs"] == pytest.approx(0.75)
    assert s["data_routed"] == pytest.approx(0.25)


def test_a_hierarchical_prior_is_measured_per_layer_against_its_routing_mean():
    # layer 0's routing mean moved to local, layer 1's stayed at the hyperprior's mode: tokens
    # that follow their layer are not routed by the data, and the layer's own move is reported
    config = smoke_config(prior={"name": "hierarchical-dirichlet"})
    _, guide = build(config)
    x = torch.zeros(1, 4, dtype=torch.long)
    with torch.no_grad():
        guide.mean_logits[0] = torch.tensor([-6.0, -6.0, 6.0])
    means = guide.routing_means().detach()  # [L, M]
    assert means[0, 2] > 0.95 and torch.allclose(means[1], guide.prior.mean().float(), atol=1e-5)
    alpha_bar = means.double().expand(1, 4, 2, 3)  # every token at its layer's mean
    stand_in = _Guide(guide.prior, alpha_bar)
    stand_in.prior_concentration = guide.prior_concentration  # per layer, from the routing means
    s = routing_stats(stand_in, x)
    s_real = routing_stats(guide, x)
    assert s["prior_distance"] == pytest.approx(0.0, abs=1e-6) and s["data_routed"] == 0.0
    shift = 0.5 * (means[0].double() - guide.prior.mean()).abs().sum()
    assert s["layer_shift"] == pytest.approx(float(shift), rel=1e-5) and shift > ROUTE_MARGIN
    assert s["layer_prior_mean"][0][2] == pytest.approx(float(means[0, 2]), rel=1e-5)
    learned, verdict = routing_learned(s, guide.prior)
    assert learned and "layer routing LEARNED" in verdict
    assert s_real["kl"] is not None and s_real["layer_shift"] == pytest.approx(s["layer_shift"])
    # the loss's other prior term: -sum_l log p(mu_l), scaled 1 / tokens like every site
    hyper = guide.prior.hyper_distribution(means.double())
    want = -float(hyper.log_prob(means.double()).sum()) / x.numel()
    assert s["hyperprior"] == pytest.approx(want, rel=1e-6)  # the means are float32 parameters
    # with a budget, plus what each token pays for its layer's mean (layer 0's is local: 0)
    _, budgeted = build(smoke_config(prior={"name": "hierarchical-budget", "strength": 0.5}))
    with torch.no_grad():
        budgeted.mean_logits[0] = torch.tensor([6.0, -6.0, -6.0])  # layer 0 all-full
    means = budgeted.routing_means().detach().double()
    hyper = budgeted.prior.hyper_distribution(means)
    price = budgeted.prior.budget(means)
    assert float(price[0]) > 0.05
    want = -float(hyper.log_prob(means).sum()) / x.numel() + float(price.sum())
    assert routing_stats(budgeted, x)["hyperprior"] == pytest.approx(want, rel=1e-5)
