"""The Pyro model: alpha_t ~ prior per token and layer, mixed attention, next byte ~ Categorical.

    for each layer l (hierarchical priors):  mu_l ~ p(mu)                       [M]
    for each layer l, sequence b, token t:  alpha_{l,b,t} ~ p(alpha | mu_l)  [B, T] x [M]
                                            (a budget prior: factor -price(mu_l) per token)
    logits = RoutedTransformer(x, alpha_0..alpha_{L-1})                    [B, T, V]
    y_{b,t} ~ Categorical(logits_{b,t})                                    [B, T]

Every token site sits in the [B, T] plates and is scaled by 1 / tokens (loss in nats per token);
routing sites additionally carry the KL weight beta. A routing mean mu_l is global: outside the
plates, scaled by 1 / tokens and beta as well. The network is a submodule, so its
parameters are this module's own (`pyro.settings.set(module_local_params=True)`).
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.nn import PyroModule

from ..network import RoutedTransformer
from ..simplex import normalised_entropy
from .priors import RoutingPrior
from .sites import (
    OBS_SITE,
    budget_site,
    global_scale,
    penalty_site,
    routing_mean_site,
    routing_scale,
    routing_site,
    token_plates,
)


class RoutingModel(PyroModule):
    def __init__(self, net: RoutedTransformer, prior: RoutingPrior) -> None:
        super().__init__()
        self.net = net
        self.prior = prior

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        beta: float = 1.0,
        mask: torch.Tensor | None = None,
        tau: float = 0.0,
        obs_mask: torch.Tensor | None = None,
        route: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, T] int64 bytes, y [B, T] next bytes (None: sampled) -> logits [B, T, V].

        mask [B, T] drops positions from every site (model and guide); obs_mask [B, T] scores
        only those positions' targets while routing sites still cover every token (a task's
        answers, `Batch.mask`); the scale stays 1 / tokens either way.
        tau > 0 routes tokens whose sampled alpha has normalised entropy < tau hard
        (straight-through one-hot, see `harden`): the soft-to-hard training schedule; a prior
        with `straight_through` routes every token so. A prior's `penalty` enters as a factor.
        route [M], when given, is what the network runs for every token instead of the sampled
        alpha (a warm-up: the routing sites are still sampled, so the guide sees only the KL; a
        prior's penalty, the cost of the executed routing, does not depend on alpha then and is
        left out, so a penalised router is not pushed to its cheapest corner before it acts).
        """
        B, T = x.shape
        like = self.net.tok_emb.weight
        L = self.net.config.n_layer
        means = None
        if self.prior.hierarchical:
            with global_scale(B, T, mask), routing_scale(beta):
                hyper = self.prior.hyper_distribution(like)
                means = [pyro.sample(routing_mean_site(layer), hyper) for layer in range(L)]
        with token_plates(B, T, mask):
            alphas = []
            for layer in range(L):
                with routing_scale(beta):
                    if means is None:
                        prior = self.prior.distribution(torch.Size([B, T]), like, layer)
                    else:
                        prior = self.prior.distribution(torch.Size([B, T]), like, means[layer])
                        price = self.prior.budget(means[layer])
                        if price is not None:  # part of -log p(mu_l): beta-scaled, per token
                            pyro.factor(budget_site(layer), -price.expand(B, T))
                    alphas.append(pyro.sample(routing_site(layer), prior))
                penalty = None if route is not None else self.prior.penalty(alphas[-1])
                if penalty is not None:  # the cost of what runs: none of alpha's under `route`
                    pyro.factor(penalty_site(layer), -penalty)
            tau = math.inf if self.prior.straight_through else tau
            used = [harden(a, tau) if route is None else route.to(a).expand_as(a) for a in alphas]
            logits = self.net(x, used)
            with nullcontext() if obs_mask is None else poutine.mask(mask=obs_mask.bool()):
                pyro.sample(OBS_SITE, dist.Categorical(logits=logits), obs=y)
        return logits


def harden(alpha: torch.Tensor, tau: float) -> torch.Tensor:
    """Straight-through hard routing of confident samples: alpha [..., M] -> [..., M].

    Samples whose normalised entropy is below tau become the one-hot of their argmax in the
    forward pass and keep the gradient of alpha in the backward pass, so the guide keeps
    learning (the schedule of tau is `training.schedules.hardening_tau`).
    """
    if tau <= 0:
        return alpha
    one_hot = torch.nn.functional.one_hot(alpha.argmax(-1), alpha.shape[-1]).to(alpha)
    hard = one_hot + alpha - alpha.detach()
    confident = (normalised_entropy(alpha) < tau)[..., None]
    return torch.where(confident, hard, alpha)
