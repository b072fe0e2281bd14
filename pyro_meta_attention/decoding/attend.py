"""Attention of one new token per sequence against a layer's decoding state.

Each row (sequence) runs only the mechanisms its routing executes (`executed`): a hard row its
one mechanism, a soft row every mechanism of non-zero weight, mixed by alpha as the forward
pass mixes them (a zero weight adds exactly 0, so skipping it changes nothing). Rows that run a
mechanism are taken in runs of consecutive rows, so every kernel reads the cache through a view:

- full:   softmax attention over the t cached keys, O(t D) per head;
- local:  softmax attention over the last w cached keys, O(w D);
- linear: phi(q) S / (phi(q) . z + eps) from the running state, O(D^2).

The new token's key and value are in the state before it attends (`LayerState.append`), as in
the causal forward pass, where token t sees itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..mechanisms import MECHANISMS
from ..mechanisms.linear import LINEAR_EPS, feature_map
from .state import LayerState

FULL, LINEAR, LOCAL = (MECHANISMS.index(m) for m in ("full", "linear", "local"))


def executed(assignment: Tensor, alpha: Tensor | None) -> Tensor:
    """Which mechanisms run for each row: bool [B, M].

    assignment: [B] int64 (m = hard, -1 = soft); alpha: [B, M] (needed iff a row is soft).
    """
    M = len(MECHANISMS)
    hard = F.one_hot(assignment.clamp(min=0), M).bool() & (assignment >= 0)[:, None]
    soft = assignment == -1
    if not bool(soft.any()):
        return hard
    if alpha is None:
        raise ValueError("alpha [B, M] is required when some rows are soft (-1)")
    return hard | (soft[:, None] & (alpha != 0))


def row_runs(member: list[bool]) -> list[slice]:
    """Maximal runs of consecutive True rows: [True, True, False, True] -> [0:2, 3:4]."""
    runs, start = [], None
    for i, inside in enumerate([*member, False]):
        if inside and start is None:
            start = i
        elif not inside and start is not None:
            runs.append(slice(start, i))
            start = None
    return runs


def attend_step(
    layer: LayerState,
    q: Tensor,
    assignment: Tensor,
    alpha: Tensor | None,
    *,
    window: int,
    q_linear: Tensor | None = None,
) -> Tensor:
    """q [B, H, 1, D] of the newest position, assignment [B], alpha [B, M] -> [B, H, 1, D];
    the linear mechanism reads q_linear instead of q when given (unrotated under rotary
    positions)."""
    ql = q if q_linear is None else q_linear
    runs = executed(assignment, alpha)  # [B, M]
    soft = (assignment == -1).tolist()
    members = runs.T.tolist()  # M x B
    B = q.shape[0]
    if sum(map(any, members)) == 1 and not any(soft):  # one mechanism, every row hard
        m = next(m for m in range(len(MECHANISMS)) if any(members[m]))
        if all(members[m]):
            return _mechanism(m, layer, ql if m == LINEAR else q, slice(0, B), window)
    out = q.new_zeros(q.shape)
    weight = None
    if any(soft):  # alpha for soft rows, 1 for hard ones: [B, M]
        weight = torch.where(assignment[:, None] == -1, alpha.to(q.dtype), 1.0)
    for m in range(len(MECHANISMS)):
        for rows in row_runs(members[m]):
            qm = ql if m == LINEAR else q
            o = _mechanism(m, layer, qm[rows], rows, window)  # [b, H, 1, D]
            if weight is not None:
                o = o * weight[rows, m, None, None, None]
            out[rows] += o
    return out


def _mechanism(m: int, layer: LayerState, q: Tensor, rows: slice, window: int) -> Tensor:
    """Mechanism m for the query rows q [b, H, 1, D] (the state's `rows`) -> [b, H, 1, D]."""
    if m == LINEAR:
        if layer.state is None:
            raise ValueError("a token was routed linear, but this state keeps no linear state")
        qf = feature_map(q)  # [b, H, 1, D]
        num = qf @ layer.state[rows]  # [b, H, 1, D]
        den = qf @ layer.norm[rows, :, :, None]  # [b, H, 1, 1]
        return num / (den + LINEAR_EPS)
    k, v = layer.cached(rows, last=window if m == LOCAL else None)  # [b, H, t, D] views
    return F.scaled_dot_product_attention(q, k, v)
