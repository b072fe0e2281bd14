"""The packing plan of `routed_attention`, the FLOPs it executes, and the dense baseline.

The plan (`full_block`, `pack_blocks`, `pack_groups`) depends on the assignment alone, so the
executed FLOPs are known before anything runs.

Counts are of matrix products only, 2 FLOPs per multiply-add, every computed entry counted:
padding slots, masked-but-computed scores and the linear running state included. Gathers,
scatters, masks, feature maps, exponentials and sums are not matrix products and count 0 (the
linear state's prefix over the chunks of a segment is a triangular matmul and counts; carrying
the state from segment to segment is an addition and does not). An attention call with L queries and S keys counts as the full
L x S square, 4 * D * L * S per (batch, head), which is what executes for a masked kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

N_MECHANISMS = 3  # full, linear, local: the order of `MECHANISMS`
# Chunks per segment of the routed linear part (`routed.py`): 4 keeps its temporaries
# cache-sized and its prefix over chunks O(n) instead of O(n^2). The part alone (what `ms_linear`
# of `experiments/bench_hard_routing.py --T 4096 --mix 25/50/25` times; 1 CPU thread, chunk 64),
# timed interleaved for 2, 4, 8, 16, 32 chunks and one segment of all: 32, 28, 32, 33, 39 and
# 38 ms; at chunk 16: 51 ms for 4 against 157 ms for one segment. To rerun, set this constant
# (and the benchmark's CHUNK) and read ms_linear.
LINEAR_SEGMENT = 4


def full_block(T: int) -> int:
    """Key block of the full mechanism at sequence length T: a power of two near 8 sqrt(T).

    Masked work on the diagonal blocks grows with the block, merging the per-block parts of
    each query with the number of blocks; 8 sqrt(T) (256 at T = 1024, 512 at T = 4096) was
    fastest on CPU.
    """
    return max(64, 1 << round(math.log2(8 * math.sqrt(max(T, 1)))))


def pack_blocks(member: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Positions of the members of each block of `size` positions, packed to the front.

    member: bool [B, T]. Returns pos [B, n, P] (int64 positions, n = ceil(T / size), P the
    largest member count of any block) and valid [B, n, P]; padding slots hold the block's
    first position.
    """
    B, T = member.shape
    n = -(-T // size)
    blocks = F.pad(member, (0, n * size - T)).view(B, n, size)  # [B, n, size]
    count = blocks.sum(-1)  # [B, n]
    P = int(count.max())
    rank = blocks.cumsum(-1) - 1  # [B, n, size]: slot of each member within its block
    slot = torch.where(blocks, rank, P)  # non-members go to a spill column, dropped below
    offset = torch.arange(size, device=member.device).expand(B, n, size)
    packed = offset.new_zeros(B, n, P + 1).scatter_(2, slot, offset)[..., :P]  # [B, n, P]
    start = torch.arange(n, device=member.device)[:, None] * size  # [n, 1]
    valid = torch.arange(P, device=member.device) < count[..., None]  # [B, n, P]
    return torch.where(valid, packed, 0) + start, valid


def pack_groups(member: Tensor, size: int) -> tuple[Tensor, Tensor, list[int]]:
    """Members in position order, grouped by blocks of `size` positions, groups padded to the
    batch's fullest block (ragged: no padding at all when B = 1).

    member: bool [B, T]. Returns pos [B, R] (R = sum of the group sizes), valid [B, R] and the
    group sizes; padding rows hold their block's first position.
    """
    B, T = member.shape
    n = -(-T // size)
    blocks = F.pad(member, (0, n * size - T)).view(B, n, size)  # [B, n, size]
    count = blocks.sum(-1)  # [B, n]
    sizes = count.amax(0)  # [n]
    first_row = sizes.cumsum(0) - sizes  # [n]
    R = int(sizes.sum())
    rank = blocks.cumsum(-1) - 1  # [B, n, size]
    slot = torch.where(blocks, first_row[:, None] + rank, R).flatten(1)  # [B, n*size]
    block_start = torch.arange(n, device=member.device) * size
    pos = block_start.repeat_interleave(sizes, output_size=R).expand(B, R)
    pos = F.pad(pos, (0, 1)).scatter(
        1, slot, torch.arange(n * size, device=member.device).expand(B, -1)
    )
    group = torch.arange(n, device=member.device).repeat_interleave(sizes, output_size=R)  # [R]
    in_group = torch.arange(R, device=member.device) - first_row[group]  # [R]
    return pos[:, :R], in_group < count[:, group], sizes.tolist()


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
        size = min(full_block(T), T)
        sizes = pack_groups(members[0], size)[2]
        later = sum(sizes)  # queries from block j on: block j's own, then all later ones
        for j, own in enumerate(sizes):
            pairs = later * (min(T, (j + 1) * size) - j * size)
            flops["full"] += 4 * D * pairs * B * H
            later -= own

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
