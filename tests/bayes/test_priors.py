import math

import pytest
import torch
from torch.distributions import constraints

from pyro_meta_attention.bayes.priors import PRIORS, RoutingPrior, make_prior, register_prior
from pyro_meta_attention.config import ModelConfig, PriorConfig
from pyro_meta_attention.mechanisms.cost import cost_model_for

COST = cost_model_for(ModelConfig()).normalised()


NEEDS = {"fixed-layers": {"layers": "local,full"}}  # what a prior cannot be built without


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_every_prior_has_simplex_support_and_shapes(name):
    prior = make_prior(PriorConfig(name=name, **NEEDS.get(name, {})), COST)
    like = torch.zeros((), dtype=torch.float32)
    d = prior.distribution(torch.Size([2, 5]), like)
    assert d.batch_shape == (2, 5) and d.event_shape == (3,)
    if prior.fixed_weights() is None:  # a Delta's support is its value's real space
        assert d.support is constraints.simplex or d.support == constraints.simplex
    alpha = torch.softmax(torch.randn(2, 5, 3), -1)
    if prior.fixed_weights() is not None:  # a point mass: finite only at its corner
        alpha = prior.fixed_weights().reshape(-1, 3)[0].float().expand(2, 5, 3)  # layer 0
    lp = d.log_prob(alpha)
    assert lp.shape == (2, 5) and torch.isfinite(lp).all()
    if not prior.deterministic:
        sample = d.sample()
        assert torch.allclose(sample.sum(-1), torch.ones(2, 5), atol=1e-5)
        assert (sample >= 0).all()


def test_compute_dirichlet_mean_follows_cost():
    prior = make_prior(PriorConfig(name="compute-dirichlet", strength=2.0), COST)
    mean = prior.mean()
    order_cost = torch.argsort(COST)  # cheapest first
    assert torch.all(mean[order_cost][:-1] >= mean[order_cost][1:])
    assert math.isclose(float(prior.concentration().sum()), 3.0, rel_tol=1e-12)


def test_compute_dirichlet_zero_strength_is_uniform_and_more_strength_favours_cheap():
    mean0 = make_prior(PriorConfig(strength=0.0), COST).mean()
    assert torch.allclose(mean0, torch.full((3,), 1 / 3, dtype=torch.float64))
    cheapest = int(COST.argmin())
    mean5 = make_prior(PriorConfig(strength=5.0), COST).mean()
    assert mean5[cheapest] > make_prior(PriorConfig(strength=2.0), COST).mean()[cheapest]


def test_symmetric_and_sparse_concentrations():
    sym = make_prior(PriorConfig(name="symmetric-dirichlet"), COST).concentration()
    assert torch.allclose(sym, torch.ones(3, dtype=torch.float64))
    sparse = make_prior(PriorConfig(name="sparse-dirichlet"), COST).concentration()
    assert torch.allclose(sparse, torch.full((3,), 0.1, dtype=torch.float64))
    with pytest.raises(ValueError, match="kappa / M < 1"):
        make_prior(PriorConfig(name="sparse-dirichlet", concentration=6.0), COST)


def test_none_prior_is_flat_and_deterministic():
    prior = make_prior(PriorConfig(name="none"), COST)
    assert prior.deterministic and prior.mean() is None
    d = prior.distribution(torch.Size([3]), torch.zeros(()))
    assert torch.equal(d.log_prob(torch.full((3, 3), 1 / 3)), torch.zeros(3))


def test_cost_penalised_is_none_plus_lambda_times_expected_cost():
    prior = make_prior(PriorConfig(name="cost-penalised", strength=0.5), COST)
    assert prior.deterministic and prior.straight_through and prior.mean() is None
    alpha = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    want = 0.5 * (alpha * COST).sum(-1)  # lambda * sum_m alpha_m c_m
    torch.testing.assert_close(prior.penalty(alpha), want)
    assert make_prior(PriorConfig(name="none"), COST).penalty(alpha) is None
    # the hierarchical prior with the same penalty; the hierarchical prior alone has none
    both = make_prior(PriorConfig(name="hierarchical-penalised", strength=0.5), COST)
    assert both.hierarchical and not both.deterministic
    torch.testing.assert_close(both.penalty(alpha), want)
    assert make_prior(PriorConfig(name="hierarchical-dirichlet"), COST).penalty(alpha) is None
    with pytest.raises(ValueError, match="lambda must be >= 0"):
        make_prior(PriorConfig(name="cost-penalised", strength=-1.0), COST)


def test_bad_prior_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown prior"):
        make_prior(PriorConfig(name="nope"), COST)
    with pytest.raises(ValueError, match="floor"):
        make_prior(PriorConfig(name="compute-dirichlet", concentration=0.05), COST)
    with pytest.raises(ValueError, match="kappa must be > 0"):
        make_prior(PriorConfig(name="symmetric-dirichlet", concentration=0.0), COST)
    with pytest.raises(ValueError, match="lambda"):
        make_prior(PriorConfig(strength=-1.0), COST)


def test_registering_a_prior_is_one_class():
    @register_prior("test-corner")
    class Corner(RoutingPrior):
        def concentration(self):
            return torch.tensor([2.0, 0.5, 0.5], dtype=torch.float64)

    try:
        prior = make_prior(PriorConfig(name="test-corner"), COST)
        assert prior.name == "test-corner"
        assert torch.allclose(
            prior.mean(), torch.tensor([2 / 3, 1 / 6, 1 / 6], dtype=torch.float64)
        )
        with pytest.raises(ValueError, match="already registered"):
            register_prior("test-corner")(Corner)
    finally:
        PRIORS.pop("test-corner")


@pytest.mark.parametrize("m,name", list(enumerate(["full", "linear", "local"])))
def test_fixed_priors_are_point_masses(m, name):
    prior = make_prior(PriorConfig(name=f"fixed-{name}"), COST)
    assert prior.deterministic and prior.concentration() is None
    assert torch.equal(prior.mean(), torch.nn.functional.one_hot(torch.tensor(m), 3).double())
    d = prior.distribution(torch.Size([4]), torch.zeros(()))
    assert torch.equal(d.sample(), prior.mean().float().expand(4, 3))


def test_hierarchical_budget_prices_weight_on_costlier_mechanisms_beyond_the_prior():
    cost = torch.tensor([1.0, 1.0, 0.25], dtype=torch.float64)  # MQAR: linear costs as much as full
    prior = make_prior(PriorConfig(name="hierarchical-budget", strength=0.5), cost)
    assert prior.hierarchical
    w = prior.mean()  # the compute prior's mean, the hyperprior's mode
    trade = w + torch.tensor([0.2, -0.2, 0.0], dtype=torch.float64)  # linear -> full, same cost
    means = torch.stack([w, torch.tensor([0.02, 0.02, 0.96], dtype=torch.float64), trade])
    price = prior.budget(means)  # [3]: at the mode, moved to the cheapest, traded at equal cost
    assert price[0] == 0.0 and price[1] == 0.0
    assert float(price[2]) == pytest.approx(0.5 * 0.75 * 0.2)  # lambda (c_full - c_min) 0.2
    assert make_prior(PriorConfig(name="hierarchical-dirichlet"), cost).budget(means) is None


def test_hierarchical_dirichlet_is_the_compute_prior_one_level_up():
    config = PriorConfig(name="hierarchical-dirichlet", strength=2.0)
    prior = make_prior(config, COST)
    compute = make_prior(PriorConfig(strength=2.0), COST)
    assert prior.hierarchical and not compute.hierarchical
    # alpha's prior at the hyperprior's mode is compute-dirichlet's, and that mode is its mean:
    # Dir(a) has mode (a - 1) / (sum a - M), and a = 1 + kappa · w gives w
    assert torch.allclose(prior.concentration(), compute.concentration())
    a = prior.hyper_concentration()
    assert (a >= 1).all()
    assert torch.allclose((a - 1) / (a.sum() - 3), compute.mean())
    like = torch.zeros((), dtype=torch.float64)
    assert prior.hyper_distribution(like).event_shape == (3,)
    # given a routing mean mu, alpha ~ Dir(kappa · mu), held at the floor near a face
    mu = torch.tensor([0.001, 0.009, 0.99], dtype=torch.float64)
    d = prior.distribution(torch.Size([2]), like, mu)
    assert d.batch_shape == (2,)
    expected = torch.tensor([config.floor, config.floor, 3 * 0.99], dtype=torch.float64)
    assert torch.allclose(d.concentration[0], expected)


def test_fixed_layers_routes_each_layer_to_its_corner():
    prior = make_prior(PriorConfig(name="fixed-layers", layers="local, full"), COST)
    assert torch.equal(
        prior.fixed_weights(), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]).double()
    )
    like = torch.zeros((), dtype=torch.float32)
    for layer, corner in enumerate(([0.0, 0.0, 1.0], [1.0, 0.0, 0.0])):
        d = prior.distribution(torch.Size([2, 5]), like, layer)
        assert torch.equal(d.sample(), torch.tensor(corner).expand(2, 5, 3))
    with pytest.raises(ValueError, match="fixed-layers' setting"):
        make_prior(PriorConfig(name="fixed-local", layers="local,full"), COST)
    for layers in (None, "", "local,fool", "local,,full"):
        with pytest.raises(ValueError, match="one mechanism per layer"):
            make_prior(PriorConfig(name="fixed-layers", layers=layers), COST)
