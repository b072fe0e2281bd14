"""Causal linear (kernel) attention with feature map elu(x) + 1, computed chunk by chunk."""

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_qkv, check_size

LINEAR_EPS = 1e-6  # added to the normaliser phi(q) . z so that it is never 0


def feature_map(x: Tensor, inplace: bool = False) -> Tensor:
    """phi(x) = elu(x) + 1, a positive feature map.

    inplace=True overwrites x, unless autograd needs x (then a new tensor is returned anyway).
    """
    if inplace and not (torch.is_grad_enabled() and x.requires_grad):
        return F.elu_(x).add_(1.0)
    return F.elu(x).add_(1.0)


def linear_attention(
    q: Tensor, k: Tensor, v: Tensor, chunk: int, eps: float = LINEAR_EPS
) -> Tensor:
    """Causal linear attention: out_t = phi(q_t) S_t / (phi(q_t) . z_t + eps).

    S_t = sum_{s<=t} phi(k_s) v_s^T and z_t = sum_{s<=t} phi(k_s). q, k, v: [B, H, T, D].
    Returns [B, H, T, D]. Within a chunk the sum is a masked quadratic; across chunks it is an
    exclusive prefix sum of per-chunk states, so nothing of size T x D x D is built.
    """
    check_qkv(q, k, v)
    check_size("chunk", chunk)
    B, H, T, D = q.shape
    c = min(chunk, max(T, 1))
    n = -(-T // c)
    pad = n * c - T

    # Padding sits at the end: phi(0) = 1, so padded keys are non-zero, but they only reach
    # later positions of the last chunk (excluded by the causal mask) and its own chunk state,
    # which no later chunk reads. Padded query rows are cropped off.
    qf = feature_map(F.pad(q, (0, 0, 0, pad))).reshape(B, H, n, c, D)  # [B, H, n, c, D]
    kf = feature_map(F.pad(k, (0, 0, 0, pad))).reshape(B, H, n, c, D)
    vc = F.pad(v, (0, 0, 0, pad)).reshape(B, H, n, c, D)

    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()  # [c, c]
    scores = (qf @ kf.transpose(-1, -2)).masked_fill(~causal, 0.0)  # [B, H, n, c, c]
    num = scores @ vc  # [B, H, n, c, D]
    den = scores.sum(-1)  # [B, H, n, c]

    # Exclusive prefix sum over chunks as a matmul by a strictly lower-triangular [n, n] ones
    # matrix: on CPU this beat torch.cumsum (forward + backward) at n = 64 chunks.
    states = (kf.transpose(-1, -2) @ vc).flatten(-2)  # [B, H, n, D*D]
    norms = kf.sum(-2)  # [B, H, n, D]
    before = torch.ones(n, n, dtype=q.dtype, device=q.device).tril(-1)  # [n, n]
    prev_states = (before @ states).view(B, H, n, D, D)  # sum of states of chunks < i
    prev_norms = before @ norms  # [B, H, n, D]

    num = num + qf @ prev_states  # [B, H, n, c, D]
    den = den + (qf @ prev_norms.unsqueeze(-1)).squeeze(-1)  # [B, H, n, c]
    out = num / (den.unsqueeze(-1) + eps)
    return out.reshape(B, H, n * c, D)[:, :, :T]
