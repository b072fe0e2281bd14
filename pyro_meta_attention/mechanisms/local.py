"""Sliding-window causal softmax attention, computed block by block without a T x T mask."""

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_qkv, check_size


def _block_mask(n_blocks: int, w: int, device: torch.device) -> Tensor:
    """Boolean [n_blocks, w, 2w] mask: True where query row r of block i may see key column c.

    Keys of block i are block i-1 (columns 0..w-1) then block i (columns w..2w-1), so query
    t = i*w + r and key s = (i-1)*w + c. Allowed: t - w < s <= t, and s >= 0 (block 0 has no
    previous block; its first w columns are padding).
    """
    i = torch.arange(n_blocks, device=device)[:, None, None]  # [n, 1, 1]
    r = torch.arange(w, device=device)[:, None]  # [w, 1]
    c = torch.arange(2 * w, device=device)  # [2w]
    s_minus_t = c - w - r  # [w, 2w], the same for every block
    return (s_minus_t <= 0) & (s_minus_t > -w) & ((i - 1) * w + c >= 0)  # [n, w, 2w]


def local_attention(q: Tensor, k: Tensor, v: Tensor, window: int) -> Tensor:
    """Causal softmax attention where token t sees keys t-window+1 .. t (inclusive).

    q, k, v: [B, H, T, D]. Returns [B, H, T, D]. Scale 1/sqrt(D).
    """
    check_qkv(q, k, v)
    check_size("window", window)
    B, H, T, D = q.shape
    w = min(window, max(T, 1))  # a window covering the whole sequence is plain causal attention
    n = -(-T // w)
    pad = n * w - T

    # Queries in blocks; keys/values get one leading padding block so block i can see block i-1.
    qb = F.pad(q, (0, 0, 0, pad)).reshape(B * H, n, w, D)  # [BH, n, w, D]
    kp = F.pad(k, (0, 0, w, pad)).reshape(B * H, n + 1, w, D)  # [BH, n+1, w, D]
    vp = F.pad(v, (0, 0, w, pad)).reshape(B * H, n + 1, w, D)
    kb = torch.cat([kp[:, :-1], kp[:, 1:]], dim=2)  # [BH, n, 2w, D]: previous block, own block
    vb = torch.cat([vp[:, :-1], vp[:, 1:]], dim=2)

    # Every row keeps its diagonal (c = r + w), so no row is fully masked, even in padding.
    mask = _block_mask(n, w, q.device)  # [n, w, 2w], broadcast over B*H
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)  # [BH, n, w, D]
    return out.reshape(B, H, n * w, D)[:, :, :T]
