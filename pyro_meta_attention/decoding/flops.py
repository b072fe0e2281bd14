"""FLOPs of one decode step's attention, counted as `mechanisms/cost.py` counts them.

Per head and row, 2 FLOPs per multiply-add: a full query scores and mixes the t cached keys
(4 D t), a local one min(w, t) of them (4 D min(w, t)), a linear one reads the running state
(2 D^2 + 2 D); the running state takes every token, 2 D^2 + D, whatever its routing, in every
decoder that keeps it. The dense baseline is a full query per row and no running state.
"""

from __future__ import annotations

from torch import Tensor

from .attend import FULL, LINEAR, LOCAL

PARTS = ("full", "linear", "local", "state")


def step_flops(
    runs: Tensor, t: int, *, n_head: int, head_dim: int, window: int, linear_state: bool
) -> dict[str, int]:
    """runs: bool [B, M] (`attend.executed`), t: keys cached, the new one included.

    Returns {"full", "linear", "local", "state", "total"} for one layer.
    """
    B = runs.shape[0]
    count = runs.sum(0).tolist()  # rows running each mechanism
    H, D = n_head, head_dim
    flops = {
        "full": count[FULL] * H * 4 * D * t,
        "linear": count[LINEAR] * H * (2 * D * D + 2 * D),
        "local": count[LOCAL] * H * 4 * D * min(window, t),
        "state": B * H * (2 * D * D + D) if linear_state else 0,
    }
    return flops | {"total": sum(flops.values())}


def dense_step_flops(B: int, t: int, n_head: int, head_dim: int) -> int:
    """FLOPs of dense full attention of one new token per row over t cached keys, one layer."""
    return B * n_head * 4 * head_dim * t
