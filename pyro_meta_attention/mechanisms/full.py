"""Full causal softmax attention."""

import torch.nn.functional as F
from torch import Tensor

from .checks import check_qkv


def full_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal softmax attention with scale 1/sqrt(D).

    q, k, v: [B, H, T, D]. Returns [B, H, T, D]; token t attends to keys 0..t.
    """
    check_qkv(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)
