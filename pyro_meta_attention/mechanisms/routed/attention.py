"""Hard-routed attention: each query runs only the mechanism it is assigned to.

`routed_attention(q, k, v, assignment, alpha)` gives every token exactly what the dense soft
mixture `sum_m alpha'_m * run_mechanism(m, q, k, v)` gives it (`naive.py`), with alpha' one-hot
for hard tokens (assignment m in 0..2) and alpha itself for soft tokens (assignment -1), but
computes each mechanism only for its own queries (`kernels.py`). Keys and values of every token
stay visible to every mechanism. Each kernel's pieces are copied to their rows of the output in
the pieces' own memory order: nothing is concatenated. A mechanism no token uses costs nothing;
when every token is full, the dense causal kernel runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import MECHANISMS
from ..checks import check_qkv, check_size
from ..full import full_attention
from .kernels import routed_mechanism
from .plan import N_MECHANISMS, row_index

LINEAR = MECHANISMS.index("linear")


def routed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    assignment: Tensor,
    alpha: Tensor | None = None,
    *,
    window: int,
    chunk: int,
    linear_qk: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Attention where each token runs only its routed mechanism.

    q, k, v: [B, H, T, D]. assignment: int64 [B, T], m in {0, 1, 2} (index into `MECHANISMS`)
    routes the token to that mechanism alone; -1 makes it soft: it runs all three and mixes them
    with alpha [B, T, M] (required iff some token is soft; read only at soft tokens).
    linear_qk: the queries and keys the linear mechanism reads instead of q, k (each
    [B, H, T, D]; unrotated ones under rotary positions). Returns [B, H, T, D].
    """
    check_routing(q, k, v, assignment, alpha, window=window, chunk=chunk)
    if linear_qk is not None and any(x.shape != q.shape for x in linear_qk):
        raise ValueError(f"linear_qk must be two tensors of q's shape {tuple(q.shape)}")
    soft = assignment == -1  # [B, T]
    mix = alpha is not None and bool(soft.any())
    if not mix and bool((assignment == 0).all()):  # every token full: the dense causal kernel
        return full_attention(q, k, v)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # the packing below views memory
    ql, kl = (q, k) if linear_qk is None else (x.contiguous() for x in linear_qk)
    B, H, T, D = q.shape
    # Output rows (b, h, t) flattened, plus one spare row that padding slots write to. With
    # only hard tokens every row is written exactly once, so no zero fill or accumulation.
    rows = (q.new_zeros if mix else q.new_empty)(B * H * T + 1, D)

    for m in range(N_MECHANISMS):
        member = (assignment == m) | soft  # [B, T]
        if not bool(member.any()):
            continue
        qm, km = (ql, kl) if m == LINEAR else (q, k)
        for o, pos, valid in routed_mechanism(m, qm, km, v, member, window=window, chunk=chunk):
            target = torch.where(valid[:, None], row_index(pos, H, T), B * H * T)  # [B, H, *S]
            if mix:
                flat = pos.flatten(1)
                alpha_m = alpha[..., m].to(q.dtype).gather(1, flat).view_as(pos)
                weight = torch.where(soft.gather(1, flat).view_as(pos), alpha_m, 1.0)  # [B, *S]
                o = o * weight[:, None, ..., None]
            _scatter_rows(rows, o, target, accumulate=mix)
    return rows[:-1].view(B, H, T, D)


def _scatter_rows(rows: Tensor, o: Tensor, target: Tensor, *, accumulate: bool) -> None:
    """rows[target] = o (or += o): o [B, H, *S, D] in any dense layout, target [B, H, *S].

    Both are walked in o's memory order, so the rows are copied without first making o
    contiguous in [B, H, *S] order.
    """
    order = sorted(range(target.dim()), key=o.stride, reverse=True)
    src = o.permute(*order, -1).reshape(-1, o.shape[-1])  # [N, D]
    index = target.permute(*order).reshape(-1)  # [N]
    if accumulate:
        rows.index_add_(0, index, src)
    else:
        rows.index_copy_(0, index, src)


def check_routing(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    assignment: Tensor,
    alpha: Tensor | None,
    *,
    window: int,
    chunk: int,
) -> None:
    """Raise ValueError unless the arguments of `routed_attention` are consistent."""
    check_qkv(q, k, v)
    check_size("window", window)
    check_size("chunk", chunk)
    B, _, T, _ = q.shape
    if not isinstance(assignment, Tensor) or assignment.dtype != torch.int64:
        raise ValueError("assignment must be an int64 tensor [B, T]")
    if assignment.shape != (B, T) or assignment.device != q.device:
        raise ValueError(
            f"assignment must have shape [B, T] = {(B, T)} on {q.device}, "
            f"got {tuple(assignment.shape)} on {assignment.device}"
        )
    if assignment.numel() and bool(((assignment < -1) | (assignment >= N_MECHANISMS)).any()):
        raise ValueError(f"assignment values must be -1 (soft) or 0..{N_MECHANISMS - 1}")
    if alpha is None:
        if bool((assignment == -1).any()):
            raise ValueError("alpha [B, T, M] is required when some tokens are soft (-1)")
        return
    if alpha.shape != (B, T, N_MECHANISMS) or alpha.device != q.device:
        raise ValueError(
            f"alpha must have shape [B, T, M] = {(B, T, N_MECHANISMS)} on {q.device}, "
            f"got {tuple(alpha.shape)} on {alpha.device}"
        )
    if not alpha.is_floating_point():
        raise ValueError(f"alpha must be floating point, got {alpha.dtype}")
