"""Routing at decode time: the weights and assignment of every layer for each new token.

A router gives a prompt its routing in one pass (`prefill`) and then one position at a time
(`step`), both as a `Route`. `GuideRouter` reads the trained guide, which is causal: the
routing of token t depends on bytes t - context + 1 .. t and on t itself, so a step runs the
guide on that window alone (`RoutingGuide.raw(window, offset)`), never on the whole prefix
again (a guide with match features does: `RoutingGuide.reach` is None). Its policy
(`policies.py`) applies per token; `budget:Y` is the one policy that looks at other tokens,
and at decode time it becomes causal (`OnlineBudget`). `MixRouter` routes
every token hard and independently with fixed shares (benchmarks, random weights).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import pyro.distributions as dist
import torch
from torch import Tensor

from ..bayes.guide import RoutingGuide
from ..mechanisms import MECHANISMS
from ..policies import SOFT, Policy, assign
from ..simplex import entropy

M = len(MECHANISMS)


@dataclass(frozen=True)
class Route:
    """The routing of T positions of B sequences in L layers.

    alpha: [B, T, L, M], the weights soft tokens are mixed with (the guide's posterior mean);
    assignment: [B, T, L] int64, m = hard-routed to m, -1 = soft;
    epistemic: [B, T, L] nats, the routing's epistemic uncertainty (0 without a posterior).
    """

    alpha: Tensor
    assignment: Tensor
    epistemic: Tensor

    def layer(self, layer: int) -> tuple[Tensor, Tensor]:
        """(alpha [B, T, M], assignment [B, T]) of one layer."""
        return self.alpha[:, :, layer], self.assignment[:, :, layer]

    @staticmethod
    def cat(routes: list[Route]) -> Route:
        """Routes of consecutive positions joined along T."""
        return Route(*(torch.cat([getattr(r, f.name) for r in routes], 1) for f in fields(Route)))


def epistemic_uncertainty(a: Tensor) -> Tensor:
    """Epistemic entropy of the mechanism choice under Dirichlet(a) [..., M] -> [...] nats:
    H[E alpha] - E H[alpha], with the closed form of the second term
    E H[alpha] = -sum_m (a_m / a0) (psi(a_m + 1) - psi(a0 + 1)) (`analysis/uncertainty.py`)."""
    a = a.double()
    a0 = a.sum(-1, keepdim=True)
    aleatoric = -(a / a0 * (torch.digamma(a + 1) - torch.digamma(a0 + 1))).sum(-1)
    return entropy(a / a0) - aleatoric


class OnlineBudget:
    """`budget:Y` for a sequence that grows one token at a time, per sequence and layer.

    The offline policy hardens the most confident tokens of the whole batch until the mean
    projected cost is <= Y; a decoder cannot see the tokens to come. Here each new token stays
    soft (cost sum_m c_m) only if the running mean projected cost of its sequence, the prompt
    included, stays <= Y with it; otherwise it is hardened (cost c_argmax), even if that too is
    above Y. The prompt is routed by the offline policy, as the forward pass routes it.
    """

    def __init__(self, budget: float, cost: Tensor) -> None:
        self.budget = budget
        self.cost = cost.double()  # c [M]
        self.spent: Tensor | None = None  # [B, L] projected cost so far
        self.count = 0

    def cost_of(self, assignment: Tensor) -> Tensor:
        """Projected cost of each assignment [...] (-1 soft) -> [...] float64."""
        cost = self.cost.to(assignment.device)
        return torch.where(assignment == SOFT, cost.sum(), cost[assignment.clamp(min=0)])

    def start(self, assignment: Tensor) -> None:
        """The prompt's assignment [B, T, L]."""
        self.spent = self.cost_of(assignment).sum(1)
        self.count = assignment.shape[1]

    def next(self, top: Tensor) -> Tensor:
        """The new token's argmax [B, L] -> its assignment [B, L] (-1 where it stays soft)."""
        cost = self.cost.to(top.device)
        soft_ok = (self.spent + cost.sum()) / (self.count + 1) <= self.budget + 1e-12
        assignment = torch.where(soft_ok, torch.full_like(top, SOFT), top)
        self.spent = self.spent + self.cost_of(assignment)
        self.count += 1
        return assignment


class GuideRouter:
    """Routing from a trained guide under a policy; cost c [M] is the policy's cost vector."""

    def __init__(self, guide: RoutingGuide, policy: Policy, cost: Tensor) -> None:
        self.guide = guide
        self.policy = policy
        self.cost = cost
        self.budget = OnlineBudget(policy.value, cost) if policy.kind == "budget" else None
        fixed = guide.prior.fixed_weights()
        self.possible = (
            tuple(True for _ in MECHANISMS)
            if fixed is None
            else tuple(bool(w > 0) for w in fixed.reshape(-1, fixed.shape[-1]).amax(0))
        )

    @property
    def context(self) -> int | None:
        """Bytes the guide reads per token: t - context + 1 .. t (None: the whole prefix)."""
        return self.guide.reach

    def _route(self, x: Tensor, offset: int, last: bool) -> tuple[Tensor, Tensor]:
        """(alpha_bar [B, T, L, M], epistemic [B, T, L]) of x [B, T] at positions offset..;
        with last=True of its last position only (T = 1)."""
        cut = slice(-1, None) if last else slice(None)
        if self.guide.prior.deterministic:
            alpha = self.guide.posterior_mean(x, offset)[:, cut]
            return alpha, alpha.new_zeros(alpha.shape[:-1], dtype=torch.float64)
        a = self.guide.concentration(x, offset)[:, cut]  # [B, T, L, M]
        return a / a.sum(-1, keepdim=True), epistemic_uncertainty(a)

    def _assign(self, alpha: Tensor) -> Tensor:
        """alpha_bar [B, T, L, M] -> assignment [B, T, L] by the policy, layer by layer."""
        cost = self.cost.to(alpha.device)
        return torch.stack([assign(self.policy, a, cost) for a in alpha.unbind(2)], 2)

    @torch.no_grad()
    def prefill(self, x: Tensor) -> Route:
        """The routing of a prompt x [B, T]: what the forward pass of x under the policy uses."""
        alpha, epistemic = self._route(x, 0, last=False)
        assignment = self._assign(alpha)
        if self.budget is not None:
            self.budget.start(assignment)
        return Route(alpha, assignment, epistemic)

    @torch.no_grad()
    def step(self, window: Tensor, offset: int) -> Route:
        """The routing of the newest token: window [B, W] holds positions offset .. offset+W-1,
        the last `context` of them (or all, from 0), the newest last. Returns T = 1."""
        alpha, epistemic = self._route(window, offset, last=True)
        if self.budget is None:
            assignment = self._assign(alpha)
        else:
            assignment = self.budget.next(alpha[:, 0].argmax(-1))[:, None]
        return Route(alpha, assignment, epistemic)

    def distributions(self, window: Tensor, offset: int) -> list[dist.TorchDistribution]:
        """q(alpha_t | x_<=t) of the newest token of `window` (as in `step`), one per layer,
        batch shape [B, 1]: the Dirichlet (or Delta) the guide's site draws from."""
        if self.guide.prior.deterministic:
            weights = self.guide.router_weights(window, offset)[:, -1:]  # [B, 1, L, M]
            return [dist.Delta(w, event_dim=1) for w in weights.unbind(2)]
        a = self.guide.concentration(window, offset)[:, -1:]
        return [dist.Dirichlet(c) for c in a.unbind(2)]


class MixRouter:
    """Every token of every layer routed hard and independently: P(m) = shares[m], seeded."""

    context = 1

    def __init__(self, shares: tuple[float, ...], n_layer: int, seed: int = 0) -> None:
        if len(shares) != M or min(shares) < 0 or abs(sum(shares) - 1) > 1e-6:
            raise ValueError(f"shares must be {M} numbers >= 0 summing to 1, got {shares}")
        self.shares = torch.tensor(shares, dtype=torch.float64)
        self.n_layer = n_layer
        self.generator = torch.Generator().manual_seed(seed)
        self.possible = tuple(s > 0 for s in shares)

    def _route(self, B: int, T: int, like: Tensor) -> Route:
        n = B * T * self.n_layer
        draws = torch.multinomial(self.shares, n, replacement=True, generator=self.generator)
        assignment = draws.view(B, T, self.n_layer).to(like.device)
        alpha = torch.nn.functional.one_hot(assignment, M).to(torch.float64)
        return Route(alpha, assignment, alpha.new_zeros(B, T, self.n_layer))

    def prefill(self, x: Tensor) -> Route:
        return self._route(*x.shape, x)

    def step(self, window: Tensor, offset: int) -> Route:
        return self._route(window.shape[0], 1, window)
