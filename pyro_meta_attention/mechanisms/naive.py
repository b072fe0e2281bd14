"""Naive float64 twins of the mechanisms, with explicit T x T masks: test oracles, O(T^2) memory.

Every fast kernel in this package (`full`, `local`, `linear`, `routed`) is tested against these,
outputs and gradients, at odd lengths (the flash-linear-attention convention).
"""

import math

import torch
from torch import Tensor

from .linear import LINEAR_EPS, feature_map


def _causal_band(T: int, window: int | None, device: torch.device) -> Tensor:
    """Boolean [T, T] mask, True where query t may see key s: s <= t (and t - s < window)."""
    t = torch.arange(T, device=device)[:, None]
    s = torch.arange(T, device=device)[None, :]
    allowed = s <= t
    if window is not None:
        allowed = allowed & (t - s < window)
    return allowed


def _softmax_ref(q: Tensor, k: Tensor, v: Tensor, window: int | None) -> Tensor:
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [B, H, T, T]
    allowed = _causal_band(q.shape[-2], window, q.device)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def full_attention_ref(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal softmax attention in float64. [B, H, T, D] -> [B, H, T, D]."""
    return _softmax_ref(q, k, v, window=None)


def local_attention_ref(q: Tensor, k: Tensor, v: Tensor, window: int) -> Tensor:
    """Sliding-window causal softmax attention in float64 (keys t-window+1 .. t)."""
    return _softmax_ref(q, k, v, window=window)


def linear_attention_ref(q: Tensor, k: Tensor, v: Tensor, eps: float = LINEAR_EPS) -> Tensor:
    """Causal linear attention in float64: A = phi(q) phi(k)^T masked, out = A v / (A 1 + eps)."""
    q, k, v = q.double(), k.double(), v.double()
    A = feature_map(q) @ feature_map(k).transpose(-1, -2)  # [B, H, T, T]
    A = A.masked_fill(~_causal_band(q.shape[-2], None, q.device), 0.0)
    return (A @ v) / (A.sum(-1, keepdim=True) + eps)


def rotary_ref(x: Tensor, start: int = 0) -> Tensor:
    """Rotary positions in float64 as complex multiplication: the channel pair (i, i + D/2) is
    z = x_i + j x_{i+D/2}, multiplied by exp(j t theta_i) at position t. [B, H, T, D] -> same."""
    x = x.double()
    D, T = x.shape[-1], x.shape[-2]
    half = D // 2
    theta = 10_000.0 ** (-2.0 * torch.arange(half, dtype=torch.float64) / D)  # [D/2]
    t = torch.arange(start, start + T, dtype=torch.float64)
    z = torch.complex(x[..., :half], x[..., half:]) * torch.polar(
        torch.ones(T, half, dtype=torch.float64), t[:, None] * theta
    )
    return torch.cat([z.real, z.imag], dim=-1)
