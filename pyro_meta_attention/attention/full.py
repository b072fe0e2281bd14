"""Full causal softmax attention, plus the input checks shared by every mechanism."""

import torch.nn.functional as F
from torch import Tensor


def check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    """Raise ValueError unless q, k, v are [B, H, T, D] tensors of one shape, dtype and device."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise ValueError(f"{name} must be 4-D [B, H, T, D], got shape {tuple(x.shape)}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(
            "q, k, v must have the same shape [B, H, T, D], got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must share a device, got {q.device}, {k.device}, {v.device}")


def full_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal softmax attention with scale 1/sqrt(D).

    q, k, v: [B, H, T, D]. Returns [B, H, T, D]; token t attends to keys 0..t.
    """
    check_qkv(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)
