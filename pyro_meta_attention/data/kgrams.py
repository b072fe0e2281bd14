"""k-grams of a byte sequence and where each one occurred before: the causal evidence that a
position can be predicted by copying (the guide's match feature; the repeat classes of
`analysis/repeats.py`).

The k bytes ending at t are packed into one integer (k <= 8), so equal codes are equal k-grams:
no hashing, no collisions.

    >>> x = torch.tensor([[1, 2, 3, 9, 9, 9, 9, 1, 2, 3]])  # "1 2 3" again at t = 9
    >>> earlier_occurrences(x, k=3)[1][0, -1].item()  # the nearest earlier one ends at s = 2
    2
"""

from __future__ import annotations

import torch
from torch import Tensor


def kgram_codes(x: Tensor, k: int) -> Tensor:
    """x [B, T] bytes -> [B, T] int64: the k bytes ending at t packed into one integer (-1 where
    t < k - 1; at k = 8 a real code can be negative, even -1: tell them apart by position)."""
    if not 1 <= k <= 8:
        raise ValueError(f"k must be in 1 .. 8 (k bytes are packed into 64 bits), got {k}")
    B, T = x.shape
    codes = torch.zeros(B, T, dtype=torch.int64, device=x.device)
    for i in range(k):  # byte t - i goes to bits 8i .. 8i + 7
        shifted = torch.zeros_like(codes)
        shifted[:, i:] = x[:, : T - i].long()
        codes |= shifted << (8 * i)
    codes[:, : k - 1] = -1
    return codes


def earlier_occurrences(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(first [B, T], nearest [B, T]) int64: for each t, the end s < t of the earliest and of the
    latest earlier occurrence of the k bytes ending at t (-1: none). O(T log T): a stable sort
    by code keeps each k-gram's occurrences in position order."""
    B, T = x.shape
    codes = kgram_codes(x, k)
    sorted_codes, where = torch.sort(codes, dim=-1, stable=True)  # [B, T]
    j = torch.arange(T, device=x.device).expand(B, T)
    same = torch.zeros(B, T, dtype=torch.bool, device=x.device)
    valid = where >= k - 1  # [B, T]: a k-gram ends there
    same[:, 1:] = (sorted_codes[:, 1:] == sorted_codes[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    start = torch.cummax(torch.where(same, 0, j), dim=-1).values  # first slot of each group
    minus_one = torch.full_like(where, -1)
    nearest_sorted = torch.where(same, where.roll(1, -1), minus_one)
    first_sorted = torch.where(same, where.gather(-1, start), minus_one)
    nearest, first = torch.empty_like(where), torch.empty_like(where)
    nearest.scatter_(-1, where, nearest_sorted)
    first.scatter_(-1, where, first_sorted)
    return first, nearest


def match_features(x: Tensor, k: int, window: int) -> Tensor:
    """[B, T, 2] of x [B, T]: (the k bytes ending at t occurred earlier with the byte after them
    inside the local window of w keys; ... beyond it), as 0 / 1 in x's float default dtype.

    The byte after an occurrence ending at s is x_{s+1}, which a local window reads at t only
    if t - (s + 1) < window.
    """
    first, nearest = earlier_occurrences(x, k)
    t = torch.arange(x.shape[1], device=x.device)
    near = (nearest >= 0) & (t - (nearest + 1) < window)
    far = (first >= 0) & (t - (first + 1) >= window)
    return torch.stack([near, far], dim=-1).to(torch.get_default_dtype())
