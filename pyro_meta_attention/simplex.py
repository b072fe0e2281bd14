"""Statistics of points on the M-simplex (routing weights alpha [..., M]): the one entropy and
the one argmax-share helper of the package, and the ternary-plot coordinates of M = 3."""

from __future__ import annotations

import math

import torch


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) over the last dim of probabilities p [..., M] -> [...].

    Log-safe: p hits exact 0 in float32 and 0 · log 0 counts as 0.
    """
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


def normalised_entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) / log M over the last dim: [..., M] -> [...] in [0, 1]."""
    return entropy(p) / math.log(p.shape[-1])


def argmax_counts(alpha: torch.Tensor) -> torch.Tensor:
    """How many rows of alpha [..., M] have their argmax at each m: [M] float64, on the CPU."""
    M = alpha.shape[-1]
    return torch.bincount(alpha.argmax(-1).flatten().cpu(), minlength=M).double()


def argmax_share(alpha: torch.Tensor) -> torch.Tensor:
    """Share of the rows of alpha [..., M] whose argmax is m: [M] float64 summing to 1."""
    counts = argmax_counts(alpha)
    return counts / counts.sum().clamp_min(1)


TRIANGLE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])  # corner m -> (x, y)


def ternary_xy(alpha: torch.Tensor) -> torch.Tensor:
    """Points of the 3-simplex alpha [..., 3] in the plane of an equilateral triangle [..., 2]:
    mechanism m's corner at TRIANGLE[m] (full bottom left, linear bottom right, local top)."""
    if alpha.shape[-1] != 3:
        raise ValueError(f"a ternary plot needs 3 mechanisms, got {alpha.shape[-1]}")
    return alpha @ TRIANGLE.to(alpha)
