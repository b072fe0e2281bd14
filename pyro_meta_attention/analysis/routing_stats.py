"""Routing statistics of a guide: shares, entropy, KL to the prior, per-token spread, classes.

All statistics are over tokens and layers of a batch, computed from the guide's posterior mean
alpha_bar [B, T, L, M] (and, for Dirichlet posteriors, the concentration) without sampling:

- routing_share [M]: share of (token, layer) pairs whose argmax of alpha_bar is m;
- layer_share [L][M]: the same per layer (share of tokens whose argmax in layer l is m);
- routing_entropy: mean H(alpha_bar) / log M, in [0, 1];
- kl: sum over layers of the mean KL(q || p) per token (the KL term of the loss, nats/token);
  "the prior" is p(alpha) per layer: for a hierarchical prior, given the guide's routing means
  (so the statistics below measure what tokens do apart from their layer);
- argmax_differs: share of (token, layer) pairs whose argmax is not the prior mean's argmax
  (with a tied prior mean, e.g. symmetric, any tied mechanism counts as the prior's);
- prior_distance: mean total-variation distance between alpha_bar and the prior mean;
- data_routed: share of pairs routed by the data: argmax not the prior's, and alpha_bar at least
  ROUTE_MARGIN (TV) from the prior mean; a near-tied prior mean (lambda = 0.5 is near uniform)
  lets a TV move of 0.004 flip an argmax, which is noise, not routing (docs/design-notes.md);
- flipped_tv: the 10 / 50 / 90 % quantiles of that TV over the flipped pairs (None: none);
- token_spread: mean over mechanisms of the std of alpha_bar across tokens (0: every token
  is routed alike, i.e. nothing per-token was learned);
- collapse_fraction: share of pairs with max_m alpha_bar > 0.9;
- penalty: a prior's explicit penalty summed over layers, mean per token (None without one);
- layer_prior_mean [L][M]: the prior mean of alpha per layer (Bayesian priors);
- layer_shift: for a hierarchical prior, the largest TV over layers between a layer's routing
  mean and the hyperprior's mode (how far the data moved a whole layer);
- hyperprior: for a hierarchical prior, -sum_l log p(mu_l) / tokens, the loss's other prior
  term beside the KL (with a budget, plus sum_l of the price each token pays for mu_l).
KL and the four prior-relative statistics are None for the improper `none` prior.
`class_shares` splits the shares by token class on the synthetic tasks.
"""

from __future__ import annotations

import torch
from torch.distributions import Dirichlet, kl_divergence

from ..bayes.guide import RoutingGuide
from ..bayes.priors import RoutingPrior
from ..data.recall import CLASS_NAMES
from ..simplex import argmax_share, normalised_entropy

ROUTE_MARGIN = 0.05  # TV from the prior mean a flipped token needs to count as routed by data


@torch.no_grad()
def routing_stats(
    guide: RoutingGuide, x: torch.Tensor, alpha_bar: torch.Tensor | None = None
) -> dict[str, object]:
    """Routing statistics of the guide on x [B, T] (see module docstring); `alpha_bar`
    [B, T, L, M]: the guide's posterior mean on x when the caller has it already."""
    prior = guide.prior
    M = prior.n_mechanisms
    mean = (guide.posterior_mean(x) if alpha_bar is None else alpha_bar).double()  # [B, T, L, M]
    mean = mean / mean.sum(-1, keepdim=True)  # exactly on the simplex in float64 (H <= log M)
    flat = mean.reshape(-1, M)
    stats: dict[str, object] = {
        "routing_share": argmax_share(flat).tolist(),
        "layer_share": [argmax_share(mean[:, :, l]).tolist() for l in range(mean.shape[2])],
        "routing_entropy": float(normalised_entropy(flat).mean()),
        "token_spread": float(flat.std(0).mean()) if flat.shape[0] > 1 else 0.0,
        "collapse_fraction": float((flat.max(-1).values > 0.9).double().mean()),
        "kl": None,
        "argmax_differs": None,
        "prior_distance": None,
        "data_routed": None,
        "flipped_tv": None,
        "penalty": None,
        "layer_prior_mean": None,
        "layer_shift": None,
        "hyperprior": None,
    }
    penalty = prior.penalty(mean)  # [B, T, L] or None
    if penalty is not None:
        stats["penalty"] = float(penalty.sum(-1).mean())
    prior_conc = guide.prior_concentration()  # [L, M]: a hierarchical prior's differ by layer
    if prior_conc is not None:
        q = Dirichlet(guide.concentration(x).double())  # batch [B, T, L]
        p = Dirichlet(prior_conc.to(q.concentration))
        prior_mean = (prior_conc / prior_conc.sum(-1, keepdim=True)).to(flat)  # [L, M]
        stats["kl"] = float(kl_divergence(q, p).sum(-1).mean())
        stats["layer_prior_mean"] = prior_mean.tolist()
        if prior.hierarchical:
            shift = 0.5 * (prior_mean - prior.mean().to(prior_mean)).abs().sum(-1)  # [L]
            stats["layer_shift"] = float(shift.max())
            # the layer's prior mean is its routing mean mu_l (kappa · mu stays above the floor)
            log_p = prior.hyper_distribution(prior_mean).log_prob(prior_mean).sum()
            hyper = -log_p / x.numel()  # as in the loss: scaled 1 / tokens
            price = prior.budget(prior_mean)  # [L] per token, or None
            stats["hyperprior"] = float(hyper if price is None else hyper + price.sum())
        prior_top = prior_mean >= prior_mean.max(-1, keepdim=True).values - 1e-9  # ties: prior's
        top = prior_top.expand_as(mean).gather(-1, mean.argmax(-1, keepdim=True))  # [B, T, L, 1]
        flipped = ~top.reshape(-1)  # [N]
        tv = (0.5 * (mean - prior_mean).abs().sum(-1)).reshape(-1)  # [N]
        stats["argmax_differs"] = float(flipped.double().mean())
        stats["prior_distance"] = float(tv.mean())
        stats["data_routed"] = float((flipped & (tv >= ROUTE_MARGIN)).double().mean())
        if flipped.any():
            q = torch.tensor([0.1, 0.5, 0.9], dtype=tv.dtype, device=tv.device)
            stats["flipped_tv"] = torch.quantile(tv[flipped], q).tolist()
    return stats


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
    routed = float(stats["data_routed"])
    shift = stats.get("layer_shift")
    layer = (
        ""
        if shift is None
        else f"; layer means moved by TV {float(shift):.3f} from the hyperprior's mode"
        + (" (layer routing LEARNED)" if float(shift) > ROUTE_MARGIN else "")
    )
    moved = float(stats["prior_distance"]) > ROUTE_MARGIN or routed > 0.01
    # per token: some tokens were routed away from the prior's argmax by the data and others
    # were not (sparse routing, such as MQAR's queries, is a few percent of the pairs), or
    # alpha_bar moved and varies
    learned = 0.01 < routed < 0.99 or (moved and spread > 0.02)
    learned = learned or (shift is not None and float(shift) > ROUTE_MARGIN)
    verdict = "LEARNED" if learned else ("moved but uniform" if moved else "NOT LEARNED (= prior)")
    return learned, (
        f"routing {verdict}: mean |alpha_bar - prior mean|_TV = {stats['prior_distance']:.3f}, "
        f"argmax differs from prior for {100 * float(stats['argmax_differs']):.1f}% of tokens "
        f"({100 * routed:.1f}% by TV >= {ROUTE_MARGIN}), "
        f"per-token spread {spread:.3f}, KL(q||p) = {float(stats['kl']):.4f} nats/token{layer}"
    )


def class_shares(
    alpha_bar: torch.Tensor, classes: torch.Tensor, names: tuple[str, ...] = CLASS_NAMES
) -> dict[str, dict[str, list[float] | int]]:
    """Per token class: argmax routing shares [M] and mean alpha_bar [M], pooled over layers.

    alpha_bar: [B, T, L, M]; classes: [B, T] (values index `names`).
    """
    M = alpha_bar.shape[-1]
    out: dict[str, dict[str, list[float] | int]] = {}
    for c, name in enumerate(names):
        sel = alpha_bar[classes == c]  # [N, L, M]
        flat = sel.reshape(-1, M).double()
        if flat.numel() == 0:
            out[name] = {"tokens": 0, "argmax_share": [0.0] * M, "mean_alpha": [0.0] * M}
            continue
        out[name] = {
            "tokens": int(sel.shape[0]),
            "argmax_share": argmax_share(flat).tolist(),
            "mean_alpha": flat.mean(0).tolist(),
        }
    return out
