"""Schedules of the SVI loop, each a pure function of the 0-based step.

- `kl_beta`: the KL weight beta rises linearly from kl_weight / anneal to kl_weight over
  `anneal` steps;
- `lr_factor`: the learning rate warms up linearly, then decays by cosine to 10%;
- `hardening_tau`: the soft-to-hard schedule raises the entropy threshold tau under which
  sampled alpha are routed hard (`bayes.model.harden`) linearly from 0 to `final`.
"""

from __future__ import annotations

import math


def kl_beta(step: int, kl_weight: float, anneal: int) -> float:
    """KL weight at 0-based `step`: linear from kl_weight / anneal up to kl_weight."""
    if anneal <= 0:
        return kl_weight
    return kl_weight * min(1.0, (step + 1) / anneal)


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """Multiplier of the peak learning rate: linear warm-up, then cosine decay to 0.1."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def hardening_tau(step: int, start: int, end: int, final: float) -> float:
    """Linear schedule: 0 before `start`, `final` from `end` on."""
    if final <= 0 or step < start:
        return 0.0
    if step >= end:
        return final
    return final * (step - start) / max(1, end - start)
