"""Where the information that predicts the next byte lives: the repeat class of every position.

The byte-level form of Zoology's "associative recall hits" (Arora et al. 2023): position t of a
window is a *repeat* when the k bytes ending at t occurred earlier in the window, ending at some
s < t, and were followed there by the byte that follows t (x_{s+1} = x_{t+1}): copying from the
earlier occurrence predicts the next byte. A local window of w keys (t - w + 1 .. t) can read
that earlier x_{s+1} only if t - (s + 1) < w. So:

- `long-repeat`: a repeat whose every earlier occurrence lies beyond the local window (only full
  attention, or linear attention's blurred state, can reach it);
- `short-repeat`: a repeat with an occurrence inside the window;
- `novel`: no earlier occurrence (or t < k - 1: no k bytes yet).

    >>> x = torch.tensor([[1, 2, 3, 9, 9, 9, 9, 1, 2, 3]])  # "1 2 3" again at t = 9
    >>> y = torch.tensor([[2, 3, 9, 9, 9, 9, 1, 2, 3, 9]])  # next bytes: 9 follows both
    >>> repeat_classes(x, y, k=3, window=4)[0, -1].item() == REPEAT_CLASSES.index("long-repeat")
    True

k-grams are compared as packed integers (`data/kgrams.py`). Cost: one [T, T] comparison per
window.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.batches import Batch
from ..data.kgrams import kgram_codes

REPEAT_CLASSES = ("novel", "short-repeat", "long-repeat")  # class c = index
NOVEL, SHORT, LONG = range(3)
DEFAULT_K = 4  # bytes of context that must repeat (docs/design-notes.md: why 4)


def repeat_classes(x: Tensor, y: Tensor, k: int = DEFAULT_K, window: int = 16) -> Tensor:
    """The class of every position: x [B, T] input bytes, y [B, T] next bytes (y_t = x_{t+1})
    -> uint8 [B, T], values index `REPEAT_CLASSES`."""
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"x and y must both be [B, T], got {tuple(x.shape)}, {tuple(y.shape)}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    B, T = x.shape
    codes = kgram_codes(x, k)  # [B, T]
    t = torch.arange(T, device=x.device)
    earlier = t[None, :] < t[:, None]  # [T (t), T (s)]: s < t
    valid = t >= k - 1  # [T]: a k-gram ends at t (a k = 8 code itself may be negative)
    same = (codes[:, :, None] == codes[:, None, :]) & valid[:, None] & valid  # [B, t, s]
    match = same & (y[:, :, None] == y[:, None, :]) & earlier  # x_{s+1} = y_s = y_t
    last = torch.where(match, t, -1).amax(-1)  # [B, T]: the nearest earlier occurrence s
    classes = torch.full((B, T), NOVEL, dtype=torch.uint8, device=x.device)
    found = last >= 0
    inside = (t - (last + 1)) < window  # x_{s+1} lies in t - w + 1 .. t
    classes[found & inside] = SHORT
    classes[found & ~inside] = LONG
    return classes


def with_repeat_classes(batches: list[Batch], k: int, window: int) -> list[Batch]:
    """The batches with `classes` set to each position's repeat class."""
    return [b._replace(classes=repeat_classes(b.x, b.y, k, window)) for b in batches]
