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
from pyro_meta_attention.config import PriorConfig

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
