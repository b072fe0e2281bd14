"""Causal attention mechanisms: full softmax, linear (kernel) and sliding-window local.

`MECHANISMS` fixes the mechanism index m = 0, 1, 2 used across the library. Each mechanism has
a fast kernel here and a float64 twin in `naive.py`; `routed/` runs each token on the one
mechanism it is assigned to (hard-routed execution); `cost.py` counts their FLOPs.
"""

from torch import Tensor

from .checks import check_qkv
from .full import full_attention
from .linear import feature_map, linear_attention
from .local import local_attention

MECHANISMS: tuple[str, ...] = ("full", "linear", "local")


def run_mechanism(name: str, q: Tensor, k: Tensor, v: Tensor, *, window: int, chunk: int) -> Tensor:
    """Run mechanism `name` on q, k, v ([B, H, T, D]); `window`/`chunk` go to local/linear."""
    if name == "full":
        return full_attention(q, k, v)
    if name == "linear":
        return linear_attention(q, k, v, chunk)
    if name == "local":
        return local_attention(q, k, v, window)
    raise ValueError(f"unknown mechanism {name!r}; valid names are {MECHANISMS}")


__all__ = [
    "MECHANISMS",
    "check_qkv",
    "feature_map",
    "full_attention",
    "linear_attention",
    "local_attention",
    "run_mechanism",
]
