"""The price of one routing decision: the least KL(q || p), in nats, at which a Dirichlet q
sends a token to one mechanism (its sample's argmax) with probability at least `target`.

Under the ELBO with KL weight 1 a token is worth routing away from the prior only if what it
gains in log-likelihood exceeds this price. On MQAR a query's answer carries at most
ln(value_vocab) nats (ln 128 = 4.85), so a prior whose price of "full with probability 0.9" is
near that leaves the posterior no reason to move — whatever the optimiser does.

    >>> import torch
    >>> p = torch.tensor([0.45, 0.43, 2.12])  # compute-dirichlet, lambda 2, kappa 3, MQAR costs
    >>> price = decision_price(p, mechanism=0, target=0.5, grid=(0.3, 1.0, 3.0), samples=2000)
    >>> 0.0 < price["kl"] < 5.0 and price["probability"] >= 0.5
    True

The search is a grid over q's concentrations (every mechanism takes every grid value), with
P(argmax = mechanism) estimated from `samples` seeded draws: an upper bound on the true price
(a finer grid can only lower it), exact enough to compare priors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch.distributions import Dirichlet, kl_divergence

GRID = (0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)  # q's concentrations


def argmax_probability(
    concentration: torch.Tensor, mechanism: int, samples: int, seed: int = 0
) -> torch.Tensor:
    """P(argmax alpha = mechanism) for alpha ~ Dir(concentration [..., M]) -> [...] (Monte Carlo)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        draws = Dirichlet(concentration).sample((samples,))  # [S, ..., M]
    return (draws.argmax(-1) == mechanism).double().mean(0)


def _candidates(
    prior: torch.Tensor,
    mechanism: int,
    target: float,
    grid: Sequence[float],
    samples: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Every q on the grid (each mechanism takes each value): (q [K, M], P(argmax = mechanism)
    [K], KL(q || prior) [K], the prior's own P)."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must lie in (0, 1), got {target}")
    prior = torch.as_tensor(prior, dtype=torch.float64)
    q = torch.tensor(list(itertools.product(grid, repeat=prior.numel())), dtype=torch.float64)
    probability = argmax_probability(q, mechanism, samples, seed)  # [K]
    kl = kl_divergence(Dirichlet(q), Dirichlet(prior.expand_as(q)))  # [K]
    return q, probability, kl, float(argmax_probability(prior, mechanism, samples, seed))


def decision_price(
    prior: torch.Tensor,
    mechanism: int,
    target: float,
    grid: Sequence[float],
    samples: int = 4000,
    seed: int = 0,
) -> dict[str, object]:
    """The cheapest q on the grid with P(argmax = mechanism) >= target, for the prior Dir(prior [M]).

    Returns {"kl": nats, "concentration": q's [M] list, "probability": its P, "prior_probability":
    the prior's own P}; kl is inf when no grid point reaches the target.
    """
    q, probability, kl, own = _candidates(prior, mechanism, target, grid, samples, seed)
    kl = torch.where(probability >= target, kl, torch.full_like(kl, float("inf")))
    best = int(kl.argmin())
    return {
        "kl": float(kl[best]),
        "concentration": q[best].tolist(),
        "probability": float(probability[best]),
        "prior_probability": own,
    }


def break_even_gain(
    prior: torch.Tensor,
    mechanism: int,
    target: float,
    grid: Sequence[float],
    samples: int = 4000,
    seed: int = 0,
) -> dict[str, object]:
    """The least per-token gain g (nats) at which a q with P(argmax = mechanism) >= target beats
    the prior Dir(prior [M]) in the ELBO: with hard straight-through samples a token gains
    g · (P_q - P_p) in expected log-likelihood and pays KL(q || p), so it moves when
    g > KL / (P_q - P_p); the minimum of that ratio over the grid's q.

    Returns {"gain": nats, "kl", "probability", "prior_probability", "concentration"}; inf when
    no grid point both reaches the target and raises P above the prior's.
    """
    q, probability, kl, own = _candidates(prior, mechanism, target, grid, samples, seed)
    lift = probability - own
    ok = (probability >= target) & (lift > 0)
    ratio = torch.where(ok, kl / lift.clamp(min=1e-12), torch.full_like(kl, float("inf")))
    best = int(ratio.argmin())
    return {
        "gain": float(ratio[best]),
        "kl": float(kl[best]),
        "concentration": q[best].tolist(),
        "probability": float(probability[best]),
        "prior_probability": own,
    }
