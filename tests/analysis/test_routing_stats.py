"""analysis/routing_stats.py: the plain verdict on whether routing was learned."""

import pytest
import torch

from pyro_meta_attention.analysis.routing_stats import routing_learned
from pyro_meta_attention.bayes.priors import make_prior
from pyro_meta_attention.config import PriorConfig

COST = torch.tensor([1.0, 1.0, 0.23], dtype=torch.float64)


def stats(differs, distance, spread, kl=0.01):
    return {"argmax_differs": differs, "prior_distance": distance, "token_spread": spread, "kl": kl}


@pytest.mark.parametrize(
    "row,learned",
    [
        (stats(0.0, 0.002, 0.001), False),  # the posterior is the prior
        (stats(0.031, 0.006, 0.018), True),  # MQAR: only the queries' argmax moved, in one layer
        (stats(0.005, 0.003, 0.004), False),  # a handful of pairs: noise, not routing
        (stats(1.0, 0.30, 0.001), False),  # every token moved alike: a new prior, not routing
        (stats(0.0, 0.08, 0.05), True),  # alpha_bar moved and varies, argmax unchanged
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
