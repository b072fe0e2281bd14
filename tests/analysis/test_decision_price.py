"""analysis/decision_price.py: the least KL at which q routes a token to one mechanism."""

import doctest

import pytest
import torch

from pyro_meta_attention.analysis import decision_price as module
from pyro_meta_attention.analysis.decision_price import (
    argmax_probability,
    break_even_gain,
    decision_price,
)

GRID = (0.1, 0.3, 1.0, 3.0, 10.0)


def test_docstring_example():
    assert doctest.testmod(module).failed == 0


def test_a_prior_that_already_meets_the_target_costs_nothing():
    prior = torch.tensor([3.0, 0.3, 0.3], dtype=torch.float64)  # on the grid: q = p is a candidate
    price = decision_price(prior, mechanism=0, target=0.5, grid=GRID, samples=2000)
    assert price["prior_probability"] > 0.5
    assert price["kl"] == pytest.approx(0.0, abs=1e-12)


def test_the_price_rises_with_the_target_and_with_the_prior_against_it():
    cheap_prior = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    dear_prior = torch.tensor([0.3, 0.3, 3.0], dtype=torch.float64)
    prices = [decision_price(cheap_prior, 0, t, GRID, 2000)["kl"] for t in (0.5, 0.8, 0.95)]
    assert prices == sorted(prices) and prices[0] > 0  # 1/3 < 0.5: the flat prior must move
    assert decision_price(dear_prior, 0, 0.8, GRID, 2000)["kl"] > prices[1]


def test_unreachable_targets_are_infinite_and_bad_targets_refused():
    prior = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    assert decision_price(prior, 0, 0.999, (1.0,), 500)["kl"] == float("inf")
    with pytest.raises(ValueError, match="target"):
        decision_price(prior, 0, 1.0, GRID)


def test_argmax_probability_is_seeded_and_sums_to_one_over_mechanisms():
    a = torch.tensor([[0.5, 1.0, 2.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    p = torch.stack([argmax_probability(a, m, 4000, seed=3) for m in range(3)], -1)  # [2, M]
    torch.testing.assert_close(p.sum(-1), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(
        p, torch.stack([argmax_probability(a, m, 4000, 3) for m in range(3)], -1)
    )
    # symmetric row: each mechanism wins a third of the draws (binomial sd ~ 0.0075 at 4000)
    assert (p[1] - 1 / 3).abs().max() < 0.03


def test_break_even_gain_is_the_kl_per_unit_of_probability_moved():
    prior = torch.tensor([0.3, 0.3, 3.0], dtype=torch.float64)  # full is unlikely a priori
    even = break_even_gain(prior, 0, 0.5, GRID, 2000)
    lift = even["probability"] - even["prior_probability"]
    assert even["probability"] >= 0.5 and lift > 0
    assert even["gain"] == pytest.approx(even["kl"] / lift, rel=1e-12)
    # no q on the grid does better per unit lift than the cheapest q that meets the target
    price = decision_price(prior, 0, 0.5, GRID, 2000)
    bound = price["kl"] / (price["probability"] - price["prior_probability"])
    assert even["gain"] <= bound + 1e-12
    # a higher target can only need as much gain or more: its candidates are a subset
    assert break_even_gain(prior, 0, 0.9, GRID, 2000)["gain"] >= even["gain"]
    with pytest.raises(ValueError, match="target"):
        break_even_gain(prior, 0, 0.0, GRID)
