"""Routing priors p(alpha_t) on the simplex, swappable by name through one registry.

Every prior is parameterised by its total concentration kappa = sum_m a_m, so kappa means the
same thing across priors. Adding a prior is one class plus one `@register_prior("name")` line.

- `compute-dirichlet`: a = kappa · softmax(-lambda · c): cheaper mechanisms get more mass.
- `hierarchical-dirichlet`: the compute prior one level up. Each layer l has its own routing mean
  mu_l ~ Dir(1 + kappa · softmax(-lambda · c)) (its mode is compute-dirichlet's mean), and its
  tokens draw alpha_t ~ Dir(kappa · mu_l). mu_l is a global latent (a MAP point in the guide), so
  "this layer runs local" costs one hyperprior density, not a KL on every token: where every
  token prefers one mechanism the layer's mean moves there and routing costs nothing
  (docs/results.md, "No regret"); tokens that differ from their layer still pay their KL.
- `hierarchical-penalised`: `hierarchical-dirichlet` plus cost-penalised's lambda · sum_m
  alpha_m c_m per token and layer. Where tokens are indifferent a hierarchical layer mean
  follows the few tokens that are not (MQAR's queries pull layer 0 to all-full); the penalty
  keeps indifferent tokens, and so their layer, on the cheap mechanisms.
- `hierarchical-budget`: `hierarchical-dirichlet` whose layer means move freely toward the
  cheapest mechanism but pay for weight on a costlier one beyond the compute prior's: every
  token pays lambda · sum_m (c_m - min c) · max(0, mu_l,m - w_m) for its layer (lambda nats per
  unit of cost, the price softmax(-lambda · c) itself puts on cost). A layer's mean goes local
  where all its tokens prefer local (text), and is held near the compute prior's where
  indifferent tokens would otherwise follow a few costly ones (MQAR's queries), which then pay
  their own KL.
- `symmetric-dirichlet`: a = kappa / M for every mechanism (kappa = M is uniform on the simplex).
- `sparse-dirichlet`: symmetric with a = kappa / M < 1, which favours the simplex corners.
- `fixed-full`, `fixed-linear`, `fixed-local`: single-mechanism reference models. A point mass
  (Delta) on one corner in both model and guide: no routing, no KL, the same code path.
- `fixed-layers`: one mechanism per layer (`PriorConfig.layers`, e.g. "local,full"): the
  reference for a router that routes by layer rather than by token.
- `none`: the paper's prior-free baseline. An improper flat density (log p = 0) in the model and
  a deterministic softmax router (a Delta) in the guide, so the ELBO reduces to the
  log-likelihood: maximum likelihood on the same network and code path, with zero KL.
- `cost-penalised`: the fair non-Bayesian competitor (the paper's public prototype): `none`
  plus an explicit expected-cost penalty lambda · sum_m alpha_m c_m per token and layer, trained
  with straight-through hard routing so that it loses nothing when hardened.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ..config import PriorConfig
from ..mechanisms import MECHANISMS

PRIORS: dict[str, type[RoutingPrior]] = {}


def register_prior(name: str) -> Callable[[type[RoutingPrior]], type[RoutingPrior]]:
    def add(cls: type[RoutingPrior]) -> type[RoutingPrior]:
        if name in PRIORS:
            raise ValueError(f"prior {name!r} is already registered")
        cls.name = name
        PRIORS[name] = cls
        return cls

    return add


class RoutingPrior(ABC):
    """A prior over routing weights alpha_t in the M-simplex, shared by every token and layer."""

    name: str = ""
    deterministic: bool = False  # True: no posterior, the guide is a point-estimate router
    hierarchical: bool = False  # True: alpha ~ Dir(kappa · mu_l) with a per-layer mean mu_l
    straight_through: bool = False  # True: the network always sees one-hot alpha (`harden`)
    default_concentration: float = 3.0  # kappa when PriorConfig.concentration is None

    def __init__(self, config: PriorConfig, cost: torch.Tensor) -> None:
        self.config = config
        self.cost = torch.as_tensor(cost, dtype=torch.float64)  # c: [M], full = 1
        if self.cost.ndim != 1 or self.cost.numel() < 2:
            raise ValueError(
                f"cost must be a vector of >= 2 mechanisms, got {tuple(self.cost.shape)}"
            )
        self.kappa = (
            self.default_concentration if config.concentration is None else config.concentration
        )
        if self.kappa <= 0:
            raise ValueError(f"total concentration kappa must be > 0, got {self.kappa}")

    @property
    def n_mechanisms(self) -> int:
        return self.cost.numel()

    @abstractmethod
    def concentration(self) -> torch.Tensor | None:
        """a: [M] float64 Dirichlet concentration, or None for an improper prior."""

    def fixed_weights(self) -> torch.Tensor | None:
        """alpha float64 if the routing is fixed, else None: [M] for every layer alike, or
        [L, M] one row per layer (`fixed-layers`)."""
        return None

    def penalty(self, alpha: torch.Tensor) -> torch.Tensor | None:
        """An explicit penalty [...] added to the loss for routing alpha [..., M], or None."""
        return None

    def mean(self) -> torch.Tensor | None:
        """E[alpha]: [M] float64, or None for an improper prior."""
        a = self.concentration()
        return None if a is None else a / a.sum()

    def distribution(
        self, batch_shape: torch.Size, like: torch.Tensor, layer: int = 0
    ) -> dist.TorchDistribution:
        """p(alpha) of layer `layer`'s tokens with batch shape `batch_shape` (e.g. [B, T]) and
        event shape [M] (the same for every layer except under `fixed-layers`).

        Device and dtype come from `like`.
        """
        a = self.concentration().to(like)
        return dist.Dirichlet(a.expand(*batch_shape, self.n_mechanisms))

    def _checked(self, a: torch.Tensor) -> torch.Tensor:
        if (a < self.config.floor).any():
            shown = [round(x, 4) for x in a.tolist()]
            raise ValueError(
                f"prior {self.name!r}: concentration {shown} falls below the floor "
                f"{self.config.floor} (Dirichlet gradients explode and torch's sampler degenerates "
                "there); raise kappa or lower lambda"
            )
        return a


@register_prior("compute-dirichlet")
class ComputeDirichlet(RoutingPrior):
    """a = kappa · softmax(-lambda · c): the mean favours cheap mechanisms, ordered by cost."""

    def __init__(self, config: PriorConfig, cost: torch.Tensor) -> None:
        super().__init__(config, cost)
        if config.strength < 0:
            raise ValueError(f"cost strength lambda must be >= 0, got {config.strength}")

    def weights(self) -> torch.Tensor:
        """w = softmax(-lambda · c): [M] float64, the prior's mean before the floor check."""
        return torch.softmax(-self.config.strength * self.cost, dim=0)

    def concentration(self) -> torch.Tensor:
        return self._checked(self.kappa * self.weights())


@register_prior("hierarchical-dirichlet")
class HierarchicalDirichlet(ComputeDirichlet):
    """mu_l ~ Dir(1 + kappa · w) per layer with w = softmax(-lambda · c), alpha_t ~ Dir(kappa · mu_l).

    The hyperprior's concentrations are all >= 1, so its density is bounded and its mode is w:
    with no data the MAP mean is the compute prior's mean, and `concentration` (the prior of
    alpha at that mode) equals compute-dirichlet's.
    """

    hierarchical = True

    def hyper_concentration(self) -> torch.Tensor:
        """Concentration [M] float64 of the hyperprior on each layer's routing mean mu_l."""
        return 1 + self.kappa * self.weights()

    def hyper_distribution(self, like: torch.Tensor) -> dist.TorchDistribution:
        """p(mu_l): event shape [M]; device and dtype from `like`."""
        return dist.Dirichlet(self.hyper_concentration().to(like))

    def conditional(self, mean: torch.Tensor) -> torch.Tensor:
        """Concentration kappa · mu [..., M] of alpha given a routing mean mu [..., M], held at
        the floor (a hyperprior draw can come arbitrarily close to a face of the simplex; the
        guide's MAP mean never goes below it)."""
        return (self.kappa * mean).clamp(min=self.config.floor)

    def distribution(
        self, batch_shape: torch.Size, like: torch.Tensor, mean: torch.Tensor | None = None
    ) -> dist.TorchDistribution:
        """p(alpha | mu) with batch shape `batch_shape`; mean None: mu at the hyperprior's mode."""
        a = self.concentration() if mean is None else self.conditional(mean)
        return dist.Dirichlet(a.to(like).expand(*batch_shape, self.n_mechanisms))

    def budget(self, mean: torch.Tensor) -> torch.Tensor | None:
        """The price [...] each token pays for its layer's routing mean mu [..., M] (the part
        of -log p(mu) that grows with the data), or None: no budget."""
        return None


@register_prior("hierarchical-penalised")
class HierarchicalPenalised(HierarchicalDirichlet):
    """`hierarchical-dirichlet` with lambda · sum_m alpha_m c_m added to the loss per token and
    layer (lambda = PriorConfig.strength, as in the hyperprior): the expected cost of alpha."""

    def penalty(self, alpha: torch.Tensor) -> torch.Tensor:
        """lambda · expected cost of the routing alpha [..., M]: [...]."""
        return self.config.strength * (alpha * self.cost.to(alpha)).sum(-1)


@register_prior("hierarchical-budget")
class HierarchicalBudget(HierarchicalDirichlet):
    """`hierarchical-dirichlet` with a compute budget on each layer's routing mean: every token
    pays lambda · sum_m (c_m - min c) · max(0, mu_m - w_m), the extra cost of the weight a layer
    puts on each mechanism beyond the compute prior's mean w = softmax(-lambda · c), at lambda
    nats per unit of cost (w's own price: log w_m = -lambda · c_m + const). Weight moved to the
    cheapest mechanism is free, so a layer whose tokens all prefer it moves there for one
    token's hyperprior density; weight moved to a costlier one costs as much as moving every
    token. Priced per mechanism, not by the mean's expected cost c · mu: that one is blind to
    trades at equal cost (MQAR's linear and full cost the same at T = 64, and layer 0's mean
    moved from linear to full for free; docs/design-notes.md). A factor in the model, so prior
    draws of mu (`Predictive` without a guide) come from the Dirichlet part alone."""

    def budget(self, mean: torch.Tensor) -> torch.Tensor:
        cost, w = self.cost.to(mean), self.weights().to(mean)
        extra = (cost - cost.min()) * (mean - w).clamp(min=0)  # [..., M]
        return self.config.strength * extra.sum(-1)


@register_prior("symmetric-dirichlet")
class SymmetricDirichlet(RoutingPrior):
    """a = kappa / M for every mechanism: no preference between mechanisms."""

    def concentration(self) -> torch.Tensor:
        a = torch.full_like(self.cost, self.kappa / self.n_mechanisms)
        return self._checked(a)


@register_prior("sparse-dirichlet")
class SparseDirichlet(SymmetricDirichlet):
    """Symmetric with a = kappa / M < 1: mass piles up near the corners (near-hard routing)."""

    default_concentration = 0.3

    def __init__(self, config: PriorConfig, cost: torch.Tensor) -> None:
        super().__init__(config, cost)
        if self.kappa / self.n_mechanisms >= 1:
            raise ValueError(
                f"sparse-dirichlet needs kappa / M < 1 to favour corners; got kappa="
                f"{self.kappa} with M={self.n_mechanisms} (try kappa=0.3)"
            )


@register_prior("none")
class NoPrior(RoutingPrior):
    """Prior-free baseline: flat improper density; the guide becomes a deterministic router."""

    deterministic = True

    def concentration(self) -> None:
        return None

    def distribution(
        self, batch_shape: torch.Size, like: torch.Tensor, layer: int = 0
    ) -> dist.TorchDistribution:
        return dist.ImproperUniform(constraints.simplex, tuple(batch_shape), (self.n_mechanisms,))


@register_prior("cost-penalised")
class CostPenalised(NoPrior):
    """`none` plus lambda · sum_m alpha_m c_m (lambda = PriorConfig.strength) per token and layer,
    with straight-through hard routing in training (forward one-hot, backward through alpha)."""

    straight_through = True

    def __init__(self, config: PriorConfig, cost: torch.Tensor) -> None:
        super().__init__(config, cost)
        if config.strength < 0:
            raise ValueError(f"cost penalty lambda must be >= 0, got {config.strength}")

    def penalty(self, alpha: torch.Tensor) -> torch.Tensor:
        """Expected cost of the router's probabilities alpha [..., M] times lambda: [...]."""
        return self.config.strength * (alpha * self.cost.to(alpha)).sum(-1)


class FixedMechanism(RoutingPrior):
    """Every token routed to one mechanism: alpha = e_m, a point mass in model and guide."""

    deterministic = True
    mechanism = 0  # index into MECHANISMS, set by each subclass below

    def concentration(self) -> None:
        return None

    def fixed_weights(self) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(self.mechanism), self.n_mechanisms).double()

    def mean(self) -> torch.Tensor:
        return self.fixed_weights()

    def distribution(
        self, batch_shape: torch.Size, like: torch.Tensor, layer: int = 0
    ) -> dist.TorchDistribution:
        fixed = self.fixed_weights()
        corner = fixed if fixed.ndim == 1 else fixed[layer]
        return dist.Delta(corner.to(like).expand(*batch_shape, self.n_mechanisms), event_dim=1)


@register_prior("fixed-full")
class FixedFull(FixedMechanism):
    """Reference model: every token runs full attention alone."""

    mechanism = MECHANISMS.index("full")


@register_prior("fixed-linear")
class FixedLinear(FixedMechanism):
    """Reference model: every token runs linear attention alone."""

    mechanism = MECHANISMS.index("linear")


@register_prior("fixed-local")
class FixedLocal(FixedMechanism):
    """Reference model: every token runs local attention alone."""

    mechanism = MECHANISMS.index("local")


@register_prior("fixed-layers")
class FixedLayers(FixedMechanism):
    """Reference model: every token of layer l runs mechanism `PriorConfig.layers`[l] alone."""

    def __init__(self, config: PriorConfig, cost: torch.Tensor) -> None:
        super().__init__(config, cost)
        names = [n.strip() for n in (config.layers or "").split(",")]
        unknown = [n for n in names if n not in MECHANISMS]
        if unknown:
            raise ValueError(
                f"prior fixed-layers: layers {config.layers!r} must name one mechanism per layer, "
                f"comma-separated, from {list(MECHANISMS)} (e.g. 'local,full')"
            )
        self.layers = tuple(MECHANISMS.index(n) for n in names)

    def fixed_weights(self) -> torch.Tensor:
        """[L, M] float64: the one-hot of each layer's mechanism."""
        return torch.nn.functional.one_hot(torch.tensor(self.layers), self.n_mechanisms).double()


def make_prior(config: PriorConfig, cost: torch.Tensor) -> RoutingPrior:
    """Build the prior named by `config.name` for the normalised cost vector `cost` [M]."""
    if config.name not in PRIORS:
        raise ValueError(f"unknown prior {config.name!r}; choose one of {sorted(PRIORS)}")
    if config.layers is not None and config.name != "fixed-layers":
        raise ValueError(f"prior.layers is fixed-layers' setting; prior {config.name!r} has none")
    prior = PRIORS[config.name](config, cost)
    prior.concentration()  # fail now, not mid-training, on a concentration below the floor
    return prior
