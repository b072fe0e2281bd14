"""Rotary position embedding (RoPE, Su et al. 2021) of queries and keys.

Channel pairs (i, i + D/2) of a head are rotated by the angle t * theta_i at position t, with
theta_i = ROPE_BASE^(-2i / D) (the rotate-half layout of GPT-NeoX and Llama). The score
q_t . k_s of rotated vectors then depends on t - s alone, so softmax attention (full and local)
sees relative positions only and runs at any length: nothing is a table of `block_size` rows.
Positions are absolute token indices; a decoder rotates its one new query and key at position t
exactly as the forward pass rotates them (the angles of a position do not depend on the length).
The float64 twin is `naive.rotary_ref` (complex multiplication).
"""

from __future__ import annotations

import torch
from torch import Tensor

ROPE_BASE = 10_000.0  # theta_i = ROPE_BASE^(-2i / D): wavelengths 2 pi .. 2 pi ROPE_BASE


def rotary_angles(start: int, T: int, D: int, device: torch.device) -> Tensor:
    """Angles t * theta_i for positions start .. start + T - 1: float64 [T, D / 2].

    Computed in float64 from integers, so a position's angles are the same numbers whatever
    range it is computed in (prefill, one decoding step, a longer forward pass)."""
    i = torch.arange(D // 2, device=device, dtype=torch.float64)
    theta = ROPE_BASE ** (-2.0 * i / D)  # [D/2]
    t = torch.arange(start, start + T, device=device, dtype=torch.float64)
    return t[:, None] * theta  # [T, D/2]


def apply_rotary(x: Tensor, start: int = 0) -> Tensor:
    """Rotate x [..., T, D] (D even; e.g. [B, H, T, D]) as positions start .. start + T - 1."""
    D = x.shape[-1]
    if D % 2:
        raise ValueError(f"rotary positions need an even head size, got D = {D}")
    angles = rotary_angles(start, x.shape[-2], D, x.device)  # [T, D/2]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return _Rotate.apply(x, cos, sin)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """(x1 cos - x2 sin, x1 sin + x2 cos) written into one buffer, without temporaries (3.5x
    faster on CPU than two products and a concatenation at [1, 8, 4096, 64]: 2.5 vs 8.5 ms)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    out = torch.empty_like(x)
    torch.mul(x1, cos, out=out[..., :half]).addcmul_(x2, sin, value=-1.0)
    torch.mul(x1, sin, out=out[..., half:]).addcmul_(x2, cos)
    return out


class _Rotate(torch.autograd.Function):
    """A rotation's gradient is the inverse rotation of the incoming gradient (angle -t theta)."""

    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return _rotate(grad.contiguous(), cos, -sin), None, None
