"""Routing statistics from the guide, and held-out likelihood under soft routing.

All statistics are over tokens and layers of a batch, computed from the guide's posterior mean
alpha_bar [B, T, L, M] (and, for Dirichlet posteriors, the concentration) without sampling:

- routing_share [M]: share of (token, layer) pairs whose argmax of alpha_bar is m;
- routing_entropy: mean H(alpha_bar) / log M, in [0, 1];
- kl: sum over layers of the mean KL(q || p) per token (the KL term of the loss, nats/token);
- argmax_differs: share of (token, layer) pairs whose argmax is not the prior mean's argmax
  (with a tied prior mean, e.g. symmetric, any tied mechanism counts as the prior's);
- prior_distance: mean total-variation distance between alpha_bar and the prior mean;
- token_spread: mean over mechanisms of the std of alpha_bar across tokens (0: every token
  is routed alike, i.e. nothing per-token was learned);
- collapse_fraction: share of pairs with max_m alpha_bar > 0.9.
KL, argmax_differs and prior_distance are None for the improper `none` prior.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import Dirichlet, kl_divergence

from .guide import RoutingGuide
from .model import RoutingModel
from .priors import RoutingPrior


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) over the last dim of probabilities p [..., M] -> [...]."""
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


def routing_stats(guide: RoutingGuide, x: torch.Tensor) -> dict[str, object]:
    """Routing statistics of the guide on x [B, T] (see module docstring)."""
    prior = guide.prior
    M = prior.n_mechanisms
    mean = guide.posterior_mean(x).double()  # [B, T, L, M]
    mean = mean / mean.sum(-1, keepdim=True)  # exactly on the simplex in float64 (H <= log M)
    flat = mean.reshape(-1, M)
    share = torch.bincount(flat.argmax(-1), minlength=M).double() / flat.shape[0]
    stats: dict[str, object] = {
        "routing_share": share.tolist(),
        "routing_entropy": float(entropy(flat).mean() / math.log(M)),
        "token_spread": float(flat.std(0).mean()) if flat.shape[0] > 1 else 0.0,
        "collapse_fraction": float((flat.max(-1).values > 0.9).double().mean()),
        "kl": None,
        "argmax_differs": None,
        "prior_distance": None,
    }
    prior_conc = prior.concentration()
    if prior_conc is not None:
        q = Dirichlet(guide.concentration(x).double())  # batch [B, T, L]
        p = Dirichlet(prior_conc.to(q.concentration))
        prior_mean = prior.mean().to(flat)
        stats["kl"] = float(kl_divergence(q, p).sum(-1).mean())
        prior_top = prior_mean >= prior_mean.max() - 1e-9  # [M]: ties count as the prior's choice
        stats["argmax_differs"] = float((~prior_top[flat.argmax(-1)]).double().mean())
        stats["prior_distance"] = float(0.5 * (flat - prior_mean).abs().sum(-1).mean())
    return stats


@torch.no_grad()
def soft_val_nats(
    model: RoutingModel, guide: RoutingGuide, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> float:
    """Mean next-byte NLL (nats/token) with every layer mixed by the posterior mean alpha_bar."""
    total, count = 0.0, 0
    for x, y in batches:
        mean = guide.posterior_mean(x)  # [B, T, L, M]
        logits = model.net(x, list(mean.unbind(2)))
        total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
        count += y.numel()
    return total / count


def routing_learned(stats: dict[str, object], prior: RoutingPrior) -> tuple[bool, str]:
    """A plain verdict: did the posterior move away from the prior, and does it vary per token?"""
    spread = float(stats["token_spread"])
    if prior.fixed_weights() is not None:
        return False, f"fixed routing ({prior.name}): nothing to learn"
    if stats["kl"] is None:
        varied = spread > 0.02
        return varied, (
            f"prior-free router: per-token spread of alpha_bar {spread:.3f} "
            f"({'varies across tokens' if varied else 'routes every token alike'})"
        )
    moved = float(stats["prior_distance"]) > 0.05 or float(stats["argmax_differs"]) > 0.05
    learned = moved and spread > 0.02
    verdict = "LEARNED" if learned else ("moved but uniform" if moved else "NOT LEARNED (= prior)")
    return learned, (
        f"routing {verdict}: mean |alpha_bar - prior mean|_TV = {stats['prior_distance']:.3f}, "
        f"argmax differs from prior for {100 * float(stats['argmax_differs']):.1f}% of tokens, "
        f"per-token spread {spread:.3f}, KL(q||p) = {float(stats['kl']):.4f} nats/token"
    )
