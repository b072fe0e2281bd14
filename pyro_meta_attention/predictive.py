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

from .attention import MECHANISMS
from .guide import RoutingGuide
from .metrics import entropy
from .model import RoutingModel
from .sites import ROUTING_PREFIX, routing_site

CONTEXT_BYTES = 20  # left context shown with each listed token
VISIBLE = {"\n": "⏎", "\t": "⇥", "\r": "␍", "\x7f": "␡"}


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


def visible(data: bytes) -> str:
    """Decode bytes (errors="replace") with newlines, tabs and control bytes made visible."""
    text = data.decode("utf-8", errors="replace")
    return "".join(VISIBLE.get(c, chr(0x2400 + ord(c)) if ord(c) < 32 else c) for c in text)


def _token(
    x: torch.Tensor, u: dict[str, dict[str, torch.Tensor]], layer: int, b: int, t: int
) -> dict[str, Any]:
    stats = u[routing_site(layer)]
    row = bytes(x[b].tolist())
    return {
        "batch": b,
        "position": t,
        "layer": layer,
        "context": visible(row[max(0, t - CONTEXT_BYTES) : t]),
        "byte": visible(row[t : t + 1]),
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
    epistemic uncertainty, so one token can appear once per layer. A deterministic guide
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
        M = mean.shape[-1]
        share = (
            torch.bincount(mean.argmax(-1).flatten(), minlength=M).double() / mean[..., 0].numel()
        )
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
                into.append(_token(x, u, layers[i // (B * T)]["layer"], i // T % B, i % T))
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


def _fmt(v: float | None, width: int = 9, digits: int = 4) -> str:
    return f"{'n/a':>{width}}" if v is None else f"{v:>{width}.{digits}f}"


def _tokens(title: str, tokens: list[dict[str, Any]]) -> list[str]:
    lines = [title, f"  {'layer':>5} {'pos':>4} {'epist.':>8}  {'alpha_bar':<20}  context⟨byte⟩"]
    for tok in tokens:
        alpha = "/".join(f"{a:.2f}" for a in tok["alpha_mean"])
        text = f"{tok['context']:>{CONTEXT_BYTES}}⟨{tok['byte']}⟩"
        lines.append(
            f"  {tok['layer']:>5} {tok['position']:>4} {tok['epistemic']:>8.4f}  {alpha:<20}  {text}"
        )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """A fixed-width text rendering of `uncertainty_report`: two tables and the token lists."""
    mechs = report["mechanisms"]
    B, T = report["shape"]
    lines = [
        f"routing uncertainty: prior {report['prior']}, {report['num_samples']} samples, "
        f"{B} x {T} tokens (entropies in nats)",
        "",
        "alpha_bar (mean) / argmax share",
        f"{'layer':>5} " + " ".join(f"{m:>16}" for m in mechs),
    ]
    for row in report["layers"]:
        cells = [
            f"{row['alpha_mean'][m]:>7.3f} / {100 * row['argmax_share'][m]:>5.1f}%" for m in mechs
        ]
        lines.append(f"{row['layer']:>5} " + " ".join(cells))
    lines += [
        "",
        f"{'layer':>5} {'total':>9} {'aleatoric':>9} {'epistemic':>9} {'a0':>9} {'gap':>9}",
    ]
    for row in report["layers"]:
        values = ("total", "aleatoric", "epistemic", "concentration_total", "aleatoric_gap")
        lines.append(f"{row['layer']:>5} " + " ".join(_fmt(row[k]) for k in values))
    lines.append("gap: closed-form E[H(alpha)] minus its Monte Carlo estimate, mean over tokens")
    if report["deterministic"]:
        lines += [
            "",
            "deterministic router (Delta guide): no posterior uncertainty, epistemic = 0 for every "
            "token; total = aleatoric = entropy of the router's softmax",
        ]
        return "\n".join(lines)
    lines.append("")
    lines += _tokens("most epistemic (pooled over layers)", report["most_epistemic"])
    lines.append("")
    lines += _tokens("least epistemic (pooled over layers)", report["least_epistemic"])
    return "\n".join(lines)
