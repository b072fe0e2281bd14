"""FLOPs executed by `routed_attention`, and the dense causal baseline they are compared to.

Counts are of matrix products only, 2 FLOPs per multiply-add, every computed entry counted:
padding slots, masked-but-computed scores and the linear running state included. Gathers,
scatters, masks, feature maps, exponentials, sums and the prefix sum over chunk states are not
matrix products and count 0. An attention call with L queries and S keys counts as the full
L x S square, 4 * D * L * S per (batch, head), which is what executes for a masked kernel.
"""

from __future__ import annotations

from torch import Tensor

from .routed import FULL_TILE, N_MECHANISMS, full_tiles, pack_blocks


def routed_flops(
    assignment: Tensor,
    *,
    n_head: int,
    head_dim: int,
    window: int,
    chunk: int,
    tile: int = FULL_TILE,
) -> dict[str, int]:
    """FLOPs `routed_attention` executes for assignment [B, T] (values -1..2; -1 is soft).

    Returns {"full", "linear", "local", "total"}; "linear" includes the running state over all
    tokens. `tile` must match the tile size `routed_attention` uses (`FULL_TILE`).
    """
    if assignment.dim() != 2:
        raise ValueError(f"assignment must be [B, T], got shape {tuple(assignment.shape)}")
    B, T = assignment.shape
    H, D = n_head, head_dim
    flops = dict.fromkeys(("full", "linear", "local"), 0)
    if T == 0:
        return {**flops, "total": 0}
    soft = assignment == -1
    members = [(assignment == m) | soft for m in range(N_MECHANISMS)]

    if bool(members[0].any()):
        pos, _, bounds = full_tiles(members[0], tile)
        rows = [min(tile, pos.shape[1] - j * tile) for j in range(len(bounds))]
        pairs = sum(L * (p1 + 1) for L, (_, p1) in zip(rows, bounds, strict=True))
        flops["full"] = 4 * D * pairs * B * H  # prefix and diagonal parts: keys 0..p1

    if bool(members[1].any()):
        c = min(chunk, T)
        n, P = pack_blocks(members[1], c)[0].shape[1:]
        state = 2 * (n - 1) * c * D * (D + 1)  # phi(K)^T [V, 1] of every chunk but the last
        query = 2 * n * P * (c * D + c * (D + 1) + D * (D + 1))  # scores, @ [V, 1], @ state
        flops["linear"] = (state + query) * B * H

    if bool(members[2].any()):
        w = min(window, T)
        n, P = pack_blocks(members[2], w)[0].shape[1:]
        flops["local"] = 4 * D * n * P * 2 * w * B * H

    return {**flops, "total": sum(flops.values())}


def dense_full_flops(B: int, T: int, n_head: int, head_dim: int) -> int:
    """FLOPs of dense causal softmax attention: T(T+1)/2 query-key pairs x 4 D, per head.

    This is what a flash kernel executes with is_causal (it skips blocks above the diagonal).
    It is not measured with `torch.utils.flop_counter.FlopCounterMode`, which counts SDPA with
    is_causal as the full T x T square (the CUDA kernels) or not at all (the CPU kernel,
    torch 2.13).
    """
    return B * n_head * 4 * head_dim * T * (T + 1) // 2

