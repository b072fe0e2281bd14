"""The naive twin of `routed_attention`: the dense mixture of the float64 naive mechanisms.

Every mechanism runs on every query (O(T^2) memory) and is weighted by alpha', one-hot for hard
tokens and alpha for soft ones. A test oracle only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..naive import full_attention_ref, linear_attention_ref, local_attention_ref
from .plan import N_MECHANISMS


def routed_attention_ref(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    assignment: Tensor,
    alpha: Tensor | None = None,
    *,
    window: int,
    linear_qk: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """sum_m alpha'_m * mechanism_m(q, k, v) in float64: [B, H, T, D]; the linear mechanism
    reads linear_qk instead of q, k when given."""
    ql, kl = (q, k) if linear_qk is None else linear_qk
    weights = F.one_hot(assignment.clamp(min=0), N_MECHANISMS).double()  # [B, T, M]
    if alpha is not None:
        weights = torch.where((assignment == -1)[..., None], alpha.double(), weights)
    outs = (
        full_attention_ref(q, k, v),
        linear_attention_ref(ql, kl, v),
        local_attention_ref(q, k, v, window),
    )  # MECHANISMS order, each [B, H, T, D]
    return sum(weights[:, None, :, m, None] * o for m, o in enumerate(outs))
