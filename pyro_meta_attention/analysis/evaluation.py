"""Evaluate a trained router: held-out loss under soft routing, and under a policy with its cost
measured three ways.

For each policy (see `policies.py`) and held-out batch, the guide's posterior mean alpha_bar
[B, T, L, M] gives every layer an assignment [B, T]; the network then runs hard-routed
(`mechanisms.routed`): hard tokens run only their mechanism, soft tokens all three.

Costs, side by side:
- projected: the paper's metric, sum_m (argmax share of alpha_bar)_m · c_m, from the soft
  posterior alone (the same for every policy);
- counted: executed attention FLOPs of the routed forward (`mechanisms.routed.flops`, an exact
  count tested against FlopCounterMode) over the causal dense full-attention FLOPs, all layers;
- wall: median wall-clock of the hard-routed model forward over the dense full-attention
  forward of the same model (every token full; shared projections and MLPs included), timed
  interleaved in one loop.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..bayes.guide import RoutingGuide
from ..bayes.model import RoutingModel
from ..data.recall import CLASS_NAMES
from ..mechanisms import MECHANISMS
from ..mechanisms.cost import CostModel
from ..mechanisms.routed import dense_full_flops, routed_flops
from ..policies import Policy, assign
from .simplex import argmax_counts, normalised_entropy
from .timing import time_interleaved

Batches = list[tuple[torch.Tensor, torch.Tensor]]


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


def policy_assignments(
    guide: RoutingGuide, x: torch.Tensor, policy: Policy, cost: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(alphas, assignments): per layer alpha_bar [B, T, M] and assignment [B, T] int64."""
    alpha_bar = guide.posterior_mean(x)  # [B, T, L, M]
    alphas = list(alpha_bar.unbind(2))
    return alphas, [assign(policy, a, cost) for a in alphas]


@torch.inference_mode()
def evaluate_policy(
    model: RoutingModel,
    guide: RoutingGuide,
    batches: Batches,
    policy: Policy,
    cost_model: CostModel,
    repeats: int = 3,
    classes: list[torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Held-out nats/token, the three costs, shares and entropy under one policy.

    classes: per batch the token class [B, T] (values index CLASS_NAMES of `data/recall.py`);
    with them the result also holds "class_nats", the nats/token of each class.
    """
    net, mc = model.net, model.net.config
    cost = cost_model.normalised().to(batches[0][0].device)
    M = len(MECHANISMS)
    nll, tokens, routed, dense = 0.0, 0, 0.0, 0.0
    counts = torch.zeros(M + 1, dtype=torch.float64)  # hard per mechanism, then soft
    argmax_total = torch.zeros(M, dtype=torch.float64)
    entropy_sum, pairs = 0.0, 0
    n_classes = len(CLASS_NAMES)
    class_nll = torch.zeros(n_classes, dtype=torch.float64)
    class_tokens = torch.zeros(n_classes, dtype=torch.float64)
    for i, (x, y) in enumerate(batches):
        alphas, assignments = policy_assignments(guide, x, policy, cost)
        logits = net(x, alphas, assignments)
        token_nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        nll += float(token_nll.sum())
        tokens += y.numel()
        if classes is not None:
            c = classes[i].flatten().long().cpu()
            class_nll += torch.bincount(c, token_nll.double().cpu(), minlength=n_classes)
            class_tokens += torch.bincount(c, minlength=n_classes).double()
        for alpha, a in zip(alphas, assignments, strict=True):
            routed += routed_flops(
                a, n_head=mc.n_head, head_dim=mc.head_dim, window=mc.window, chunk=mc.chunk
            )["total"]
            dense += dense_full_flops(x.shape[0], x.shape[1], mc.n_head, mc.head_dim)
            counts += torch.bincount((a + 1).flatten().cpu(), minlength=M + 1).roll(-1).double()
            argmax_total += argmax_counts(alpha)
            entropy_sum += float(normalised_entropy(alpha.double()).sum())
            pairs += alpha.shape[0] * alpha.shape[1]
    shares = argmax_total / argmax_total.sum()
    x0 = batches[0][0]
    alphas0, assignments0 = policy_assignments(guide, x0, policy, cost)
    full = [torch.zeros_like(a) for a in assignments0]  # every token hard-routed to full
    fns = {
        "routed": lambda: net(x0, alphas0, assignments0),
        "dense": lambda: net(x0, alphas0, full),
    }
    med = time_interleaved(fns, repeats, warmup=1, device=x0.device)
    hard_s, dense_s = med["routed"], med["dense"]
    return {
        "policy": str(policy),
        "val_nats_per_token": nll / tokens,
        "val_tokens": tokens,
        "hard_fraction": float(counts[:M].sum() / counts.sum()),
        "assignment_share": dict(
            zip([*MECHANISMS, "soft"], (counts / counts.sum()).tolist(), strict=True)
        ),
        "routing_share": shares.tolist(),
        "routing_entropy": entropy_sum / pairs,
        "projected_cost": cost_model.projected_cost(shares),
        "counted_cost": routed / dense,
        "wall_ratio": hard_s / dense_s,
        "wall_ms": {"routed": 1000 * hard_s, "dense_full": 1000 * dense_s},
    } | (
        {}
        if classes is None
        else {
            "class_nats": {
                name: float(class_nll[c] / class_tokens[c]) if class_tokens[c] else None
                for c, name in enumerate(CLASS_NAMES)
            }
        }
    )


def transition_curve(
    model: RoutingModel,
    guide: RoutingGuide,
    batches: Batches,
    cost_model: CostModel,
    thresholds: list[float],
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """`evaluate_policy` over threshold policies: fraction hard, costs and loss per threshold."""
    return [
        evaluate_policy(model, guide, batches, Policy("threshold", t), cost_model, repeats)
        | {"threshold": t}
        for t in thresholds
    ]
