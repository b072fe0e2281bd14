"""What full attention gains per token, and what an oracle router could buy with it.

Two models scored on the same held-out positions give every position a gain,
g_t = nats_local(t) - nats_full(t): what running full attention instead of local attention
saved at that token. Under the ELBO with KL weight 1 a router sends a token to full only if its
gain exceeds the KL price of the decision (`analysis/decision_price.py`), so the distribution
of g against that price says which tokens a Bayesian router *could* buy, before any router is
trained:

- `gain_by_class`: per repeat class (`analysis/repeats.py`) the share of positions, the mean
  and quantiles of g, the share of the class whose gain exceeds the price, and the share of
  the class's total gain those positions carry;
- `oracle_curve`: route to full exactly the positions with g > tau, for every tau: the share
  routed and the fraction of the all-positions gap (mean g) closed. An oracle that sees the
  two references' losses is an upper bound on what a router that sees only x_<t can do.

Whether a router could *find* those positions is a question of what it sees: `auc` scores how
well a statistic of x_<=t ranks the positions that pay above those that do not, and
`fit_logistic` learns such a statistic from causal match features (`data/kgrams.py`: did the k
bytes ending at t occur before, inside or beyond the window) on half the windows, for the other
half.

Two separately trained networks also differ token by token by chance. The same statistics of
two seeds of one reference (g = nats_a - nats_b, zero mean) measure that noise: the part of
the reference gain's tails that no single network could reproduce.

    >>> local = torch.tensor([2.0, 1.0, 3.0, 0.5])
    >>> full = torch.tensor([1.0, 1.0, 0.5, 0.5])
    >>> curve = oracle_curve(local - full, [0.0, 1.5])
    >>> [(r["routed"], r["closed"]) for r in curve]
    [(0.5, 1.0), (0.25, 0.7142857142857143)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..bayes.guide import RoutingGuide
from ..bayes.model import RoutingModel
from ..data.batches import Batch
from ..policies import one_mechanism, parse_policy
from .evaluation import policy_assignments, scored

QUANTILES = (0.1, 0.5, 0.9, 0.99)


@torch.no_grad()
def hard_position_nats(
    model: RoutingModel,
    guide: RoutingGuide,
    batches: list[Batch],
    cost: Tensor,
    mechanism: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """(nats [P], classes [P] or None): the loss of every scored held-out position under hard
    routing (each token runs its argmax mechanism; a fixed model runs its one mechanism), or
    with every token of every layer forced onto `mechanism`; in batch order, float64."""
    hard = parse_policy("hard")
    nats, classes = [], []
    L = len(model.net.blocks)
    for b in batches:
        if mechanism is None:
            alphas, assignments = policy_assignments(guide, b.x, hard, cost.to(b.x.device))
        else:
            dtype = model.net.tok_emb.weight.dtype
            alphas, assignments = one_mechanism(b.x, mechanism, L, dtype)
        logits = model.net(b.x, alphas, assignments).flatten(0, 1)  # [B * T, V]
        nll = F.cross_entropy(logits, b.y.flatten(), reduction="none")  # [B * T]
        nats.append(scored(b, nll).double().cpu())
        if b.classes is not None:
            classes.append(scored(b, b.classes.flatten()).long().cpu())
    return torch.cat(nats), (torch.cat(classes) if classes else None)


def gain_by_class(
    gain: Tensor, classes: Tensor, names: Sequence[str], price: float
) -> dict[str, dict[str, Any]]:
    """Per class c (classes [P] values index names) of the gains [P]: "share" of positions,
    "mean" and "sd" of g, "quantiles" (`QUANTILES`), "above_price" (share of the class with
    g > price) and "gain_above_price" (their share of the class's summed positive gain)."""
    if gain.shape != classes.shape or gain.dim() != 1:
        raise ValueError(f"gain and classes must both be [P], got {gain.shape}, {classes.shape}")
    out = {}
    q = torch.tensor(QUANTILES, dtype=torch.float64)
    for c, name in enumerate(names):
        g = gain[classes == c].double()
        if g.numel() == 0:
            out[name] = {"share": 0.0}
            continue
        positive = g.clamp(min=0).sum()
        above = g > price
        out[name] = {
            "share": g.numel() / gain.numel(),
            "mean": float(g.mean()),
            "sd": float(g.std()) if g.numel() > 1 else 0.0,
            "quantiles": dict(zip(map(str, QUANTILES), torch.quantile(g, q).tolist(), strict=True)),
            "above_price": float(above.double().mean()),
            "gain_above_price": float(g[above].sum() / positive) if positive > 0 else 0.0,
        }
    return out


def oracle_curve(gain: Tensor, thresholds: Sequence[float]) -> list[dict[str, float]]:
    """For each tau: route to full the positions with gain [P] > tau. "routed" is their share,
    "closed" their summed gain over the summed gain of all positions (1 = the full model's
    loss, above 1 when full loses on the rest), "nats_saved" that sum per position."""
    total = float(gain.sum())
    rows = []
    for tau in thresholds:
        picked = gain > tau
        saved = float(gain[picked].sum())
        rows.append(
            {
                "tau": float(tau),
                "routed": float(picked.double().mean()),
                "nats_saved": saved / gain.numel(),
                "closed": saved / total if total != 0 else float("nan"),
            }
        )
    return rows


def share_to_close(gain: Tensor, fraction: float) -> dict[str, float]:
    """The fewest positions an oracle must route to full (largest gains first) to save
    `fraction` of the summed gain [P]: their share, and the gain of the last one routed."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    total = float(gain.sum())
    if total <= 0:
        return {"routed": float("nan"), "weakest_gain": float("nan")}
    ordered = gain.double().sort(descending=True).values
    n = int(torch.searchsorted(ordered.cumsum(0), torch.tensor(fraction * total).double())) + 1
    n = min(n, ordered.numel())
    return {"routed": n / ordered.numel(), "weakest_gain": float(ordered[n - 1])}


def auc(score: Tensor, label: Tensor) -> float:
    """Area under the ROC curve of score [P] for the boolean label [P]: the probability that a
    random positive outranks a random negative (ties count half); nan without both kinds."""
    label = label.bool()
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = score.double().argsort()
    ranks = torch.empty_like(order, dtype=torch.float64)
    ranks[order] = torch.arange(1, score.numel() + 1, dtype=torch.float64)
    values, inverse, counts = torch.unique(score.double(), return_inverse=True, return_counts=True)
    mean_rank = torch.zeros_like(values).index_add_(0, inverse, ranks) / counts  # tied ranks
    r = mean_rank[inverse]
    return float((r[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fit_logistic(features: Tensor, label: Tensor, iterations: int = 200) -> Tensor:
    """Weights [F + 1] (bias last) of a logistic regression of label [P] on features [P, F],
    float64, full-batch L-BFGS; a 1e-4 L2 penalty keeps separable data finite."""
    X = torch.cat([features.double(), torch.ones(features.shape[0], 1, dtype=torch.float64)], 1)
    y = label.double()
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(X @ w, y) + 1e-4 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach()


def predictability(gain: Tensor, features: Tensor, half: Tensor, price: float) -> dict[str, float]:
    """How well causal features [P, F] find the positions with gain [P] > price: a logistic
    regression fit where `half` [P] is True, scored where it is False. "auc" of its scores,
    "base_rate" of the label there, "precision_at_half_recall" (`precision_at_recall`)."""
    label = gain > price
    w = fit_logistic(features[half], label[half])
    test = ~half
    ones = torch.ones(int(test.sum()), 1, dtype=torch.float64)
    score, y = torch.cat([features[test].double(), ones], 1) @ w, label[test]
    return {
        "auc": auc(score, y),
        "base_rate": float(y.double().mean()),
        "precision_at_half_recall": precision_at_recall(score, y, 0.5),
    }


def precision_at_recall(score: Tensor, label: Tensor, recall: float) -> float:
    """Precision of "score >= s" at the highest threshold s whose recall of label [P] reaches
    `recall` (tied scores are taken together); nan without positives."""
    label = label.bool()
    if not label.any():
        return float("nan")
    values, inverse = torch.unique(score.double(), return_inverse=True)  # ascending
    pos = torch.zeros_like(values).index_add_(0, inverse, label.double())
    count = torch.zeros_like(values).index_add_(0, inverse, torch.ones_like(pos[inverse]))
    pos_above, count_above = pos.flip(0).cumsum(0), count.flip(0).cumsum(0)  # descending
    i = int(torch.nonzero(pos_above >= recall * float(label.sum()))[0])
    return float(pos_above[i] / count_above[i])
