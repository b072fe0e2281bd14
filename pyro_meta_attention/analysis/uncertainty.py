"""Posterior samples of the routing weights and their uncertainty, per token and layer.

alpha_t (one per layer) is a categorical distribution over the M mechanisms: "which mechanism
handles token t". Under the guide q(alpha | x) each token carries a distribution *over* such
categoricals, and the entropy of the mechanism choice splits the classic way (all in nats):

    total      H[E_q alpha]             entropy of the mean routing alpha_bar
    aleatoric  E_q H[alpha]             the mixing the router intends (a soft mix is certain too)
    epistemic  H[E_q alpha] - E_q H[alpha]
               = I(mechanism; alpha)    mutual information: how much the posterior disagrees

Monte Carlo estimates use S samples from `pyro.infer.Predictive`. For a Dirichlet(a) posterior
the aleatoric term also has a closed form, with a0 = sum_m a_m:

    E[H(alpha)] = -sum_m (a_m / a0) (psi(a_m + 1) - psi(a0 + 1)).

With the `none` prior the guide is a Delta: every sample is the same softmax, so the epistemic
term is identically 0 and the report says so (`deterministic: true`) instead of ranking ties.
"""

from __future__ import annotations

from typing import Any

import torch
from pyro.infer import Predictive

from ..bayes.guide import RoutingGuide
from ..bayes.model import RoutingModel
from ..bayes.sites import ROUTING_PREFIX, routing_site
from ..mechanisms import MECHANISMS
from ..simplex import argmax_share, entropy


def layer_of(site: str) -> int:
    """Layer index l of the routing site f"alpha_{l}"."""
    return int(site.removeprefix(ROUTING_PREFIX))


def posterior_samples(
    model: RoutingModel, guide: RoutingGuide, x: torch.Tensor, num_samples: int
) -> dict[str, torch.Tensor]:
    """S draws of every routing site for x [B, T]: {"alpha_0": [S, B, T, M], ...}.

    Sequential Predictive (not parallel=True): vectorising would add a sample plate on the left,
    and the guide's network and the transformer would have to broadcast over that extra leading
    dim, which they do not. The next_byte site is sampled (y=None) but not returned.
    """
    sites = [routing_site(layer) for layer in range(guide.n_layer)]
    if guide.prior.deterministic:
        # Predictive probes the model by sampling every site, and the improper flat prior of
        # `none` cannot be sampled. The routing sites of Predictive(model, guide) are the
        # guide's draws replayed, so drawing them from the guide gives the same dict.
        predictive = Predictive(guide, num_samples=num_samples, return_sites=sites)
    else:
        predictive = Predictive(model, guide=guide, num_samples=num_samples, return_sites=sites)
    with torch.no_grad():
        return predictive(x)


def prior_samples(
    model: RoutingModel, x: torch.Tensor, num_samples: int
) -> dict[str, torch.Tensor]:
    """S draws of every routing site from the model's prior for x [B, T], the same dict as
    `posterior_samples`: {"alpha_0": [S, B, T, M], ...}. A prior that cannot be sampled (the
    improper flat density of `none` and `cost-penalised`) raises ValueError."""
    if model.prior.deterministic:
        raise ValueError(f"prior {model.prior.name!r} is improper: it has no draws")
    sites = [routing_site(layer) for layer in range(model.net.config.n_layer)]
    with torch.no_grad():
        return Predictive(model, num_samples=num_samples, return_sites=sites)(x)


def routing_uncertainty(
    samples: dict[str, torch.Tensor], concentration: torch.Tensor | None = None
) -> dict[str, dict[str, torch.Tensor]]:
    """Per site and token, the entropy decomposition of the mechanism choice (float64, nats).

    samples: site -> alpha [S, B, T, M]; concentration: the guide's Dirichlet [B, T, L, M].
    Returns site -> {"mean": alpha_bar [B, T, M], "total", "aleatoric", "epistemic": [B, T]}
    and, with the concentration, "concentration_total" a0 and "aleatoric_exact" [B, T].
    Entropies are log-safe: alpha hits exact 0 in float32 and 0 · log 0 counts as 0.
    """
    out: dict[str, dict[str, torch.Tensor]] = {}
    for site, alpha in samples.items():
        alpha = alpha.double()
        mean = alpha.mean(0)  # [B, T, M]
        total = entropy(mean)  # [B, T]
        aleatoric = entropy(alpha).mean(0)  # [B, T]
        stats = {
            "mean": mean,
            "total": total,
            "aleatoric": aleatoric,
            "epistemic": total - aleatoric,
        }
        if concentration is not None:
            a = concentration[:, :, layer_of(site)].double()  # [B, T, M]
            a0 = a.sum(-1)
            digamma_gap = torch.digamma(a + 1) - torch.digamma(a0 + 1)[..., None]
            stats["concentration_total"] = a0
            stats["aleatoric_exact"] = -(a / a0[..., None] * digamma_gap).sum(-1)
        out[site] = stats
    return out


def _token(u: dict[str, dict[str, torch.Tensor]], layer: int, b: int, t: int) -> dict[str, Any]:
    stats = u[routing_site(layer)]
    return {
        "batch": b,
        "position": t,
        "layer": layer,
        "alpha_mean": [round(v, 4) for v in stats["mean"][b, t].tolist()],
        "epistemic": float(stats["epistemic"][b, t]),
        "total": float(stats["total"][b, t]),
    }


def uncertainty_report(
    model: RoutingModel, guide: RoutingGuide, x: torch.Tensor, num_samples: int, top_k: int = 5
) -> dict[str, Any]:
    """JSON-serialisable routing uncertainty of x [B, T] from `num_samples` posterior draws.

    Per layer: mean alpha_bar and argmax share per mechanism (alpha_bar is the Monte Carlo mean
    of the draws), mean total / aleatoric / epistemic entropy, mean a0, and the closed-form
    minus Monte Carlo aleatoric gap (signed mean and mean |gap| over tokens). Token lists are
    pooled over layers: the `top_k` (token, layer) pairs with the highest and the lowest
    epistemic uncertainty (batch, position, layer: the scripts render their bytes), so one
    token can appear once per layer. A deterministic guide
    (`none`) has no posterior uncertainty: `deterministic` is true and both lists are empty.
    """
    deterministic = guide.prior.deterministic
    samples = posterior_samples(model, guide, x, num_samples)
    with torch.no_grad():
        concentration = None if deterministic else guide.concentration(x)
    u = routing_uncertainty(samples, concentration)
    layers = []
    for site, stats in sorted(u.items(), key=lambda kv: layer_of(kv[0])):
        mean = stats["mean"]
        share = argmax_share(mean)
        row: dict[str, Any] = {
            "layer": layer_of(site),
            "alpha_mean": dict(zip(MECHANISMS, mean.mean((0, 1)).tolist(), strict=True)),
            "argmax_share": dict(zip(MECHANISMS, share.tolist(), strict=True)),
            **{k: float(stats[k].mean()) for k in ("total", "aleatoric", "epistemic")},
            "concentration_total": None,
            "aleatoric_gap": None,
            "aleatoric_gap_abs": None,
        }
        if concentration is not None:
            gap = stats["aleatoric_exact"] - stats["aleatoric"]
            row["concentration_total"] = float(stats["concentration_total"].mean())
            row["aleatoric_gap"] = float(gap.mean())
            row["aleatoric_gap_abs"] = float(gap.abs().mean())
        layers.append(row)
    epistemic = torch.stack([u[routing_site(r["layer"])]["epistemic"] for r in layers])  # [L, B, T]
    most, least = [], []
    if not deterministic:
        k = min(top_k, epistemic.numel())
        B, T = x.shape
        for largest, into in ((True, most), (False, least)):
            for i in epistemic.flatten().topk(k, largest=largest).indices.tolist():
                into.append(_token(u, layers[i // (B * T)]["layer"], i // T % B, i % T))
    return {
        "deterministic": deterministic,
        "prior": guide.prior.name,
        "num_samples": num_samples,
        "shape": list(x.shape),
        "mechanisms": list(MECHANISMS),
        "max_epistemic": float(epistemic.max()),
        "layers": layers,
        "most_epistemic": most,
        "least_epistemic": least,
    }
