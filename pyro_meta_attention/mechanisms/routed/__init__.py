"""Hard-routed execution: each token runs only the mechanism its assignment names.

`attention.py` (the entry point, `routed_attention`), `plan.py` (which queries each call
packs), `kernels.py` (one kernel per mechanism), `flops.py` (the FLOPs executed, known from the
plan), `naive.py` (the dense float64 mixture it is tested against).
"""

from .attention import check_routing, routed_attention
from .flops import dense_full_flops, routed_flops
from .kernels import routed_mechanism

__all__ = [
    "check_routing",
    "dense_full_flops",
    "routed_attention",
    "routed_flops",
    "routed_mechanism",
]
