"""Inference-time routing policies: which tokens run one mechanism, which stay mixed.

A policy turns the posterior mean alpha_bar [B, T, M] and a per-token uncertainty [B, T] (in
[0, 1]; by default the normalised entropy H(alpha_bar) / log M, which the prior-free router has
too) into an assignment [B, T] int64: m in 0..M-1 = hard, only mechanism m runs (the argmax of
alpha_bar); -1 = soft, every mechanism runs and is mixed with alpha_bar.

- `soft`: every token soft (the training-time mixture);
- `hard`: every token hard;
- `threshold:X`: hard where uncertainty < X (X = 0 is all soft, X > 1 all hard);
- `budget:Y`: harden the most confident tokens first until the projected attention cost per
  token, sum over hard tokens of c_argmax plus sum over soft tokens of sum_m c_m, averaged,
  is <= Y (relative to full attention = 1). A soft token costs more than full attention, so
  budgets below 1 are reached only by hardening; if even all-hard exceeds Y, all go hard.

The training-time counterpart (hardening confident *samples* with a straight-through one-hot)
is `bayes.model.harden`, scheduled by `training.schedules.hardening_tau`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .mechanisms import MECHANISMS
from .simplex import normalised_entropy

SOFT = -1


@dataclass(frozen=True)
class Policy:
    kind: str  # "soft", "hard", "threshold" or "budget"
    value: float | None = None  # threshold X or budget Y

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value:g}"


def parse_policy(text: str) -> Policy:
    """'soft', 'hard', 'threshold:X' or 'budget:Y' -> Policy (ValueError otherwise)."""
    kind, _, arg = text.partition(":")
    if kind in ("soft", "hard") and not arg:
        return Policy(kind)
    if kind in ("threshold", "budget") and arg:
        try:
            value = float(arg)
        except ValueError:
            raise ValueError(f"policy {text!r}: {arg!r} is not a number") from None
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"policy {text!r}: the value must be finite and >= 0")
        return Policy(kind, value)
    raise ValueError(f"bad policy {text!r}; use soft, hard, threshold:X or budget:Y")


def one_mechanism(
    x: torch.Tensor, name: str, n_layer: int, dtype: torch.dtype
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every token of x [B, T] routed hard to mechanism `name` in every layer, as the network
    takes it: (n_layer x one-hot alpha [B, T, M], n_layer x assignment [B, T])."""
    assignment = torch.full_like(x, MECHANISMS.index(name))
    alpha = F.one_hot(assignment, len(MECHANISMS)).to(dtype)
    return [alpha] * n_layer, [assignment] * n_layer


def assign(
    policy: Policy,
    alpha_bar: torch.Tensor,
    cost: torch.Tensor,
    uncertainty: torch.Tensor | None = None,
) -> torch.Tensor:
    """alpha_bar [B, T, M], cost c [M], uncertainty [B, T] -> assignment [B, T] int64 (-1 soft).

    `uncertainty` defaults to the normalised entropy of alpha_bar.
    """
    if uncertainty is None:
        uncertainty = normalised_entropy(alpha_bar)
    if uncertainty.shape != alpha_bar.shape[:-1]:
        raise ValueError(
            f"uncertainty {tuple(uncertainty.shape)} must match alpha_bar {tuple(alpha_bar.shape[:-1])}"
        )
    top = alpha_bar.argmax(-1)
    soft = torch.full_like(top, SOFT)
    if policy.kind == "soft":
        return soft
    if policy.kind == "hard":
        return top
    if policy.kind == "threshold":
        return torch.where(uncertainty < policy.value, top, soft)
    if policy.kind == "budget":
        return _budget(policy.value, top, uncertainty, cost.to(alpha_bar.device))
    raise ValueError(f"unknown policy kind {policy.kind!r}")


def _budget(budget: float, top: torch.Tensor, uncertainty: torch.Tensor, cost: torch.Tensor):
    """Harden the fewest most-confident tokens that bring the mean projected cost to <= budget."""
    flat_top, flat_u = top.flatten(), uncertainty.flatten()
    n = flat_top.numel()
    order = torch.argsort(flat_u, stable=True)  # most confident first
    saving = cost.sum() - cost.double()[flat_top[order]]  # cost drop when that token hardens
    mean_cost = (n * cost.sum() - torch.cat([saving.new_zeros(1), saving.cumsum(0)])) / n
    reached = (mean_cost <= budget + 1e-12).nonzero()
    k = int(reached[0]) if reached.numel() else n  # tokens to harden
    hard = torch.zeros(n, dtype=torch.bool, device=top.device)
    hard[order[:k]] = True
    return torch.where(hard, flat_top, torch.full_like(flat_top, SOFT)).view_as(top)
