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
from ..data.batches import Batch
from ..mechanisms import MECHANISMS
from ..mechanisms.cost import CostModel
from ..mechanisms.routed import dense_full_flops, routed_flops
from ..policies import Policy, assign
from ..simplex import argmax_counts, normalised_entropy
from .bits import bits_per_byte
from .timing import time_interleaved

Batches = list[Batch]


def scored(batch: Batch, token_values: torch.Tensor) -> torch.Tensor:
    """The values [B * T] of the positions whose target is scored (all, or batch.mask)."""
    return token_values if batch.mask is None else token_values[batch.mask.flatten()]


@torch.no_grad()
def soft_val_metrics(
    model: RoutingModel, guide: RoutingGuide, batches: Batches
) -> dict[str, float]:
    """Held-out nats per scored token and accuracy (argmax = target) with every layer mixed by
    the posterior mean alpha_bar."""
    nll, correct, count = 0.0, 0, 0
    for b in batches:
        mean = guide.posterior_mean(b.x)  # [B, T, L, M]
        logits = model.net(b.x, list(mean.unbind(2))).flatten(0, 1)  # [B * T, V]
        y = b.y.flatten()
        nll += float(scored(b, F.cross_entropy(logits, y, reduction="none")).sum())
        correct += int(scored(b, logits.argmax(-1) == y).sum())
        count += int(scored(b, y).numel())
    return {"nats": nll / count, "accuracy": correct / count}


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
    class_names: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Held-out nats per scored token (and in bits per byte), accuracy, the three costs, shares
    and entropy under one policy.

    class_names: the names of the values of `Batch.classes`; with them the result also holds
    "class_nats", the nats/token of each class (every position of that class), "class_share",
    each class's share of the positions, and "class_layer_share", per layer and class the
    argmax routing shares [M] of alpha_bar.
    """
    net, mc = model.net, model.net.config
    cost = cost_model.normalised().to(batches[0].x.device)
    M = len(MECHANISMS)
    nll, correct, tokens, routed, dense = 0.0, 0, 0, 0.0, 0.0
    counts = torch.zeros(M + 1, dtype=torch.float64)  # hard per mechanism, then soft
    argmax_total = torch.zeros(M, dtype=torch.float64)
    entropy_sum, pairs = 0.0, 0
    n_classes = len(class_names or ())
    class_nll = torch.zeros(n_classes, dtype=torch.float64)
    class_tokens = torch.zeros(n_classes, dtype=torch.float64)
    class_argmax = torch.zeros(mc.n_layer, n_classes, M, dtype=torch.float64)
    for b in batches:
        x = b.x
        alphas, assignments = policy_assignments(guide, x, policy, cost)
        logits = net(x, alphas, assignments).flatten(0, 1)  # [B * T, V]
        token_nll = F.cross_entropy(logits, b.y.flatten(), reduction="none")
        nll += float(scored(b, token_nll).sum())
        correct += int(scored(b, logits.argmax(-1) == b.y.flatten()).sum())
        tokens += int(scored(b, token_nll).numel())
        if class_names is not None:
            c = b.classes.flatten().long().cpu()
            class_nll += torch.bincount(c, token_nll.double().cpu(), minlength=n_classes)
            class_tokens += torch.bincount(c, minlength=n_classes).double()
            for layer, alpha in enumerate(alphas):  # argmax per (class, mechanism)
                pair = c * M + alpha.argmax(-1).flatten().cpu()
                counts_cm = torch.bincount(pair, minlength=n_classes * M).double()
                class_argmax[layer] += counts_cm.view(n_classes, M)
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
    x0 = batches[0].x
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
        "val_bits_per_byte": bits_per_byte(nll / tokens),
        "val_accuracy": correct / tokens,
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
        if class_names is None
        else {
            "class_nats": {
                name: float(class_nll[c] / class_tokens[c]) if class_tokens[c] else None
                for c, name in enumerate(class_names)
            },
            "class_share": dict(
                zip(class_names, (class_tokens / class_tokens.sum()).tolist(), strict=True)
            ),
            "class_layer_share": [
                {
                    name: (layer[c] / layer[c].sum().clamp(min=1)).tolist()
                    for c, name in enumerate(class_names)
                }
                for layer in class_argmax
            ],
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
