import pytest
import torch

from pyro_meta_attention.policies import SOFT, Policy, assign, parse_policy
from pyro_meta_attention.simplex import normalised_entropy

COST = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)


def alpha_bar(seed=0, B=2, T=50, sharp=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(sharp * torch.randn(B, T, 3, generator=g, dtype=torch.float64), -1)


def test_parse_policy():
    assert parse_policy("soft") == Policy("soft")
    assert parse_policy("threshold:0.3") == Policy("threshold", 0.3)
    assert str(parse_policy("budget:0.5")) == "budget:0.5"
    for bad in ["", "hard:1", "threshold", "threshold:x", "budget:-1", "mixed"]:
        with pytest.raises(ValueError):
            parse_policy(bad)


def test_soft_hard_and_threshold_assignments():
    a = alpha_bar()
    assert (assign(Policy("soft"), a, COST) == SOFT).all()
    assert torch.equal(assign(Policy("hard"), a, COST), a.argmax(-1))
    u = normalised_entropy(a)
    got = assign(Policy("threshold", 0.5), a, COST)
    assert torch.equal(got == SOFT, u >= 0.5)
    assert torch.equal(got[u < 0.5], a.argmax(-1)[u < 0.5])
    assert (assign(Policy("threshold", 0.0), a, COST) == SOFT).all()
    assert torch.equal(assign(Policy("threshold", 1.01), a, COST), a.argmax(-1))


def projected(assignment, cost):
    per_token = torch.where(assignment == SOFT, cost.sum(), cost[assignment.clamp_min(0)])
    return float(per_token.mean())


@pytest.mark.parametrize("budget", [0.3, 0.6, 1.0, 1.5])
def test_budget_hardens_most_confident_first_and_meets_the_budget(budget):
    a = alpha_bar(1)
    got = assign(Policy("budget", budget), a, COST)
    assert projected(got, COST) <= budget + 1e-9 or (got != SOFT).all()
    u = normalised_entropy(a)
    hard = got != SOFT
    if hard.any() and (~hard).any():
        assert u[hard].max() <= u[~hard].min()  # the most confident went hard
    # minimal: un-hardening the least confident hard token would break the budget
    if hard.any() and projected(got, COST) <= budget:
        idx = torch.nonzero(hard.flatten() & (u.flatten() == u[hard].max()))[0]
        loosened = got.flatten().clone()
        loosened[idx] = SOFT
        assert projected(loosened.view_as(got), COST) > budget - 1e-12


def test_unreachable_budget_hardens_everything():
    a = alpha_bar(2)
    assert torch.equal(assign(Policy("budget", 0.0), a, COST), a.argmax(-1))


def test_one_mechanism_routes_every_token_of_every_layer_hard():
    from pyro_meta_attention.mechanisms import MECHANISMS
    from pyro_meta_attention.policies import one_mechanism

    x = torch.randint(0, 256, (2, 5))
    alphas, assignments = one_mechanism(x, "local", 3, torch.float64)
    m = MECHANISMS.index("local")
    assert len(alphas) == len(assignments) == 3
    assert alphas[0].shape == (2, 5, len(MECHANISMS)) and alphas[0].dtype == torch.float64
    assert bool((alphas[0].argmax(-1) == m).all()) and bool((alphas[0].sum(-1) == 1).all())
    assert bool((assignments[2] == m).all()) and assignments[2].dtype == torch.int64
