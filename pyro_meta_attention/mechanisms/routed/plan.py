"""The packing plan of hard-routed execution: which queries each kernel call takes, and where.

The plan depends on the assignment alone (`full_block`, `full_pairs`, `packed_pairs`,
`pack_blocks`, `pack_groups`), so the
FLOPs it executes (`flops.py`) are known before anything runs; `row_index` maps positions to
the rows of the flat [B * H * T, D] output that the kernels' pieces are copied to.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import MECHANISMS

N_MECHANISMS = len(MECHANISMS)
# Chunks per segment of the routed linear part (`kernels.py`): 4 keeps its temporaries
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


def full_pairs(member: Tensor) -> tuple[int, int]:
    """Query-key pairs the full mechanism computes for member [B, T]: (packed, dense).

    packed: the blocked kernel's (`packed_pairs` of the `pack_groups` sizes); dense: the causal
    dense kernel's, B T (T + 1) / 2. The diagonal blocks' masked halves make packing cost up to
    1.5x dense when most queries are full, so `full_part` runs the dense kernel, and keeps the
    rows of its members, whenever packed > dense.
    """
    B, T = member.shape
    sizes = pack_groups(member, min(full_block(T), T))[2]
    return B * packed_pairs(sizes, T), B * T * (T + 1) // 2


def packed_pairs(sizes: list[int], T: int) -> int:
    """Pairs per batch element of the blocked full kernel for groups of `sizes` queries per key
    block (`pack_groups`), every padding slot and masked diagonal entry counted: block j is
    attended by the queries of block j on, each against the block's keys."""
    size = min(full_block(T), T)
    pairs, later = 0, sum(sizes)  # queries from block j on: block j's own, then all later ones
    for j, own in enumerate(sizes):
        pairs += later * (min(T, (j + 1) * size) - j * size)
        later -= own
    return pairs


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


def row_index(pos: Tensor, H: int, T: int) -> Tensor:
    """Row (b H + h) T + t of [B * H * T, D] for every head h and position t = pos[b, ...].

    pos: [B, *S] positions. Returns [B, H, *S].
    """
    B = pos.shape[0]
    head_start = torch.arange(B * H, device=pos.device).view((B, H) + (1,) * (pos.dim() - 1)) * T
    return head_start + pos[:, None]
