"""FLOPs that hard-routed execution performs, and those of the dense causal baseline.

Counts are of matrix products only, 2 FLOPs per multiply-add, every computed entry counted:
padding slots, masked-but-computed scores and the linear running state included. Gathers,
scatters, masks, feature maps, exponentials and sums are not matrix products and count 0 (the
linear state's prefix over the chunks of a segment is a triangular matmul and counts; carrying
the state from segment to segment is an addition and does not). An attention call with L
queries and S keys counts as the full L x S square, 4 * D * L * S per (batch, head), which is
what executes for a masked kernel. Tested against `torch.utils.flop_counter.FlopCounterMode`.
"""

from __future__ import annotations

from torch import Tensor

from .plan import LINEAR_SEGMENT, N_MECHANISMS, full_pairs, pack_blocks


def routed_flops(
    assignment: Tensor,
    *,
    n_head: int,
    head_dim: int,
    window: int,
    chunk: int,
) -> dict[str, int]:
    """FLOPs `routed_attention` executes for assignment [B, T] (values -1..2; -1 is soft).

    Returns {"full", "linear", "local", "total"}; "linear" includes the running state over all
    tokens.
    """
    if assignment.dim() != 2:
        raise ValueError(f"assignment must be [B, T], got shape {tuple(assignment.shape)}")
    B, T = assignment.shape
    H, D = n_head, head_dim
    flops = dict.fromkeys(("full", "linear", "local"), 0)
    if T == 0:
        return {**flops, "total": 0}
    if bool((assignment == 0).all()):  # the dense causal kernel
        full = dense_full_flops(B, T, H, D)
        return {**flops, "full": full, "total": full}
    soft = assignment == -1
    members = [(assignment == m) | soft for m in range(N_MECHANISMS)]

    if bool(members[0].any()):
        packed, dense = full_pairs(members[0])
        flops["full"] = 4 * D * H * min(packed, dense)  # the dense kernel when cheaper

    if bool(members[1].any()):
        c = min(chunk, T)
        n, P = pack_blocks(members[1], c)[0].shape[1:]
        # chunk states, then their prefix inside each segment of LINEAR_SEGMENT chunks
        segments = [min(LINEAR_SEGMENT, n - s) for s in range(0, n, LINEAR_SEGMENT)]
        state = 2 * n * c * D * D + sum(2 * ns * ns * (D * D + D) for ns in segments)
        query = 2 * n * P * (2 * c * D + D * D + D)  # scores, @ V, phi(q) @ state, @ norm
        flops["linear"] = (state + query) * B * H

    if bool(members[2].any()):
        w = min(window, T)
        n, P = pack_blocks(members[2], w)[0].shape[1:]
        keys = sum(min(T, (i + 1) * w) - max(0, (i - 1) * w) for i in range(n))  # their windows
        flops["local"] = 4 * D * P * keys * B * H

    return {**flops, "total": sum(flops.values())}


def dense_full_flops(B: int, T: int, n_head: int, head_dim: int) -> int:
    """FLOPs of dense causal softmax attention: T(T+1)/2 query-key pairs x 4 D, per head.

    This is what a flash kernel executes with is_causal (it skips blocks above the diagonal).
    It is not measured with `torch.utils.flop_counter.FlopCounterMode`, which counts SDPA with
    is_causal as the full T x T square (the CUDA kernels) or not at all (the CPU kernel,
    torch 2.13).
    """
    return B * n_head * 4 * head_dim * T * (T + 1) // 2
