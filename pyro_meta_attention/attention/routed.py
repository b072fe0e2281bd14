"""Hard-routed attention: each query runs only the mechanism it is routed to.

`routed_attention(q, k, v, assignment, alpha)` gives every token exactly what the dense soft
mixture `sum_m alpha'_m * run_mechanism(m, q, k, v)` gives it, with alpha' one-hot for hard
tokens (assignment m in 0..2) and alpha itself for soft tokens (assignment -1), but computes
each mechanism only for its own queries. Keys and values of every token stay visible to every
mechanism. Per mechanism:

- full:   the routed queries, in position order, are cut into tiles of `FULL_TILE`. A tile whose
          queries span positions p0..p1 attends to keys 0..p1 in two parts merged by their
          log-sum-exp: the keys before p0 (every query sees all of them, so no mask) and the
          diagonal keys p0..p1 (a small per-query causal mask).
- local:  per key block of `window` positions, the block's local queries are packed (padded to
          the fullest block) and attend to that block and the previous one (2w keys, masked).
- linear: the chunk states phi(K_c)^T [V_c, 1] of all tokens (their exclusive prefix sum over
          chunks is the running state), then per chunk the packed linear queries read the state
          of the chunks before theirs and attend, quadratically, to their own chunk's keys.

A mechanism no token uses costs nothing. `routed_flops.py` counts the FLOPs executed here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .full import check_qkv
from .linear import feature_map

N_MECHANISMS = 3  # full, linear, local: the order of `MECHANISMS`
FULL_TILE = 128  # routed queries per full-attention tile
LINEAR_EPS = 1e-6  # as in `linear_attention`


def routed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    assignment: Tensor,
    alpha: Tensor | None = None,
    *,
    window: int,
    chunk: int,
) -> Tensor:
    """Attention where each token runs only its routed mechanism.

    q, k, v: [B, H, T, D]. assignment: int64 [B, T], m in {0, 1, 2} (index into `MECHANISMS`)
    routes the token to that mechanism alone; -1 makes it soft: it runs all three and mixes them
    with alpha [B, T, M] (required iff some token is soft; read only at soft tokens).
    Returns [B, H, T, D].
    """
    check_routing(q, k, v, assignment, alpha, window=window, chunk=chunk)
    B, H, T, D = q.shape
    out = q.new_zeros(B, H, T, D)
    if T == 0:
        return out
    soft = assignment == -1  # [B, T]
    if alpha is not None and bool(soft.any()):
        alpha = alpha.to(q.dtype)
    else:
        alpha = None
    bidx = torch.arange(B, device=q.device)
    hidx = torch.arange(H, device=q.device)

    def add(m: int, o: Tensor, pos: Tensor, valid: Tensor) -> None:
        """out[b, :, pos] += weight * o for o [B, H, *S, D] at positions pos [B, *S]."""
        weight = valid.to(q.dtype)  # [B, *S]: padding slots add nothing
        if alpha is not None:
            alpha_m = alpha[..., m].gather(1, pos.flatten(1)).view_as(pos)
            weight = weight * torch.where(soft.gather(1, pos.flatten(1)).view_as(pos), alpha_m, 1)
        extra = (None,) * (pos.dim() - 1)
        index = (bidx[(...,) + (None,) * pos.dim()], hidx[(None, ...) + extra], pos[:, None])
        out.index_put_(index, o * weight[:, None, ..., None], accumulate=True)

    for m, run in enumerate((_full_part, _linear_part, _local_part)):
        member = (assignment == m) | soft  # [B, T]
        if bool(member.any()):
            add(m, *run(q, k, v, member, window=window, chunk=chunk))
    return out


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
    for name, size in (("window", window), ("chunk", chunk)):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"{name} must be an int >= 1, got {size!r}")
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


def full_tiles(member: Tensor, tile: int) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
    """Full-routed positions in order, cut into tiles of `tile` queries.

    member: bool [B, T]. Returns pos [B, N] (N the largest member count over the batch), valid
    [B, N] and, per tile, (p0, p1): the first and last position any of its queries has. Padding
    queries take their tile's last position, so they stay inside the tile's key range.
    """
    pos, valid = (x[:, 0] for x in pack_blocks(member, member.shape[1]))  # [B, N]
    B, N = pos.shape
    n_tiles = -(-N // tile)
    pad = n_tiles * tile - N
    last = F.pad(torch.where(valid, pos, -1), (0, pad), value=-1).view(B, n_tiles, tile)
    last = last.amax(dim=(0, 2))  # [n_tiles]
    pos = torch.where(valid, pos, last.repeat_interleave(tile)[:N])
    first = F.pad(pos, (0, pad), value=member.shape[1]).view(B, n_tiles, tile).amin(dim=(0, 2))
    return pos, valid, list(zip(first.tolist(), last.tolist(), strict=True))


class _AttentionLSE(torch.autograd.Function):
    """Softmax attention that also returns the log-sum-exp of each query's scores.

    Forward runs the fused kernel where one exists; backward recomputes the (tile-sized)
    probabilities so that the log-sum-exp output is differentiable too.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        if q.device.type == "cpu":
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, attn_mask=bias
            )
        elif q.device.type == "cuda" and bias is None and q.dtype in (torch.float16, torch.bfloat16):
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[:2]
        else:
            scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
            scores = scores if bias is None else scores + bias
            lse = scores.float().logsumexp(-1)
            out = torch.exp(scores - lse[..., None].to(q.dtype)) @ v
        ctx.save_for_backward(q, k, v, bias, out, lse)
        return out, lse

    @staticmethod
    def backward(ctx, g_out: Tensor, g_lse: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        q, k, v, bias, out, lse = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        scores = (q @ k.transpose(-1, -2)) * scale  # [B, H, L, S]
        scores = scores if bias is None else scores + bias
        p = torch.exp(scores - lse[..., None].to(q.dtype))
        row = (g_out * out).sum(-1, keepdim=True) - g_lse[..., None].to(q.dtype)  # [B, H, L, 1]
        ds = p * (g_out @ v.transpose(-1, -2) - row) * scale
        return ds @ k, ds.transpose(-1, -2) @ q, p.transpose(-1, -2) @ g_out, None


def _attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    out, lse = _AttentionLSE.apply(q, k, v, bias)
    return out, lse


def _full_part(q: Tensor, k: Tensor, v: Tensor, member: Tensor, **_: int) -> tuple[Tensor, ...]:
    """Causal softmax attention for the full-routed queries. Returns o [B, H, N, D], pos, valid."""
    B, H, T, D = q.shape
    pos, valid, bounds = full_tiles(member, FULL_TILE)  # [B, N]
    qg = q[torch.arange(B, device=q.device)[:, None, None], torch.arange(H)[:, None], pos[:, None]]
    outs = []
    for j, (p0, p1) in enumerate(bounds):
        rows = slice(j * FULL_TILE, (j + 1) * FULL_TILE)
        qt, pt = qg[:, :, rows], pos[:, rows]  # [B, H, L, D], [B, L]
        keys = torch.arange(p0, p1 + 1, device=q.device)  # the tile's diagonal key positions
        bias = torch.zeros(pt.shape + keys.shape, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill_(keys > pt[..., None], float("-inf"))[:, None]  # [B, 1, L, S]
        o, lse = _attend(qt, k[:, :, p0 : p1 + 1], v[:, :, p0 : p1 + 1], bias)
        if p0 > 0:  # merge with the keys before the tile, which every query sees whole
            o_pre, lse_pre = _attend(qt, k[:, :, :p0], v[:, :, :p0])
            total = torch.logaddexp(lse, lse_pre)
            o = o * torch.exp(lse - total)[..., None] + o_pre * torch.exp(lse_pre - total)[..., None]
        outs.append(o.to(q.dtype))
    return torch.cat(outs, dim=2), pos, valid


def _local_part(
    q: Tensor, k: Tensor, v: Tensor, member: Tensor, *, window: int, **_: int
) -> tuple[Tensor, ...]:
    """Sliding-window attention for the local queries, packed per key block.

    Returns o [B, H, n, P, D], pos [B, n, P], valid [B, n, P].
    """
    B, H, T, D = q.shape
    w = min(window, T)
    pos, valid = pack_blocks(member, w)  # [B, n, P]
    n, P = pos.shape[1:]
    # Keys of all batch elements back to back, after one block of zeros: block i of element b
    # and the block before it are rows (b*n + i)*w .. +2w, an overlapping strided view.
    buf_k, buf_v = (x.new_zeros((B * n + 1) * w, H, D) for x in (k, v))
    for buf, x in ((buf_k, k), (buf_v, v)):
        buf[w:].view(B, n * w, H, D)[:, :T] = x.transpose(1, 2)
    stride = (w * H * D, D, H * D, 1)
    kb, vb = (buf.as_strided((B * n, H, 2 * w, D), stride) for buf in (buf_k, buf_v))
    qb = q.transpose(1, 2)[torch.arange(B, device=q.device)[:, None, None], pos]  # [B, n, P, H, D]
    qb = qb.view(B * n, P, H, D).transpose(1, 2)  # [B*n, H, P, D]
    # Key c of block i sits at position (i - 1) * w + c; query t may see t - w < s <= t, s >= 0.
    s = (torch.arange(n, device=q.device)[:, None] - 1) * w + torch.arange(2 * w, device=q.device)
    t = pos[..., None]  # [B, n, P, 1]
    allowed = (s[:, None] <= t) & (s[:, None] > t - w) & (s[:, None] >= 0)  # [B, n, P, 2w]
    o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=allowed.view(B * n, 1, P, 2 * w))
    return o.view(B, n, H, P, D).transpose(1, 2), pos, valid  # [B, H, n, P, D]


def _linear_part(
    q: Tensor, k: Tensor, v: Tensor, member: Tensor, *, chunk: int, **_: int
) -> tuple[Tensor, ...]:
    """Causal linear attention for the linear queries, packed per chunk.

    Returns o [B, H, n, P, D], pos [B, n, P], valid [B, n, P].
    """
    B, H, T, D = q.shape
    c = min(chunk, T)
    pos, valid = pack_blocks(member, c)  # [B, n, P]
    n, P = pos.shape[1:]
    pad = n * c - T
    kf = F.pad(feature_map(k), (0, 0, 0, pad)).view(B, H, n, c, D)  # padded keys are 0
    va = F.pad(torch.cat([v, torch.ones_like(v[..., :1])], -1), (0, 0, 0, pad))
    va = va.view(B, H, n, c, D + 1)  # values with a ones column: the normaliser rides along

    # Running state before chunk i: sum of the states of chunks < i (the last one is unused).
    states = kf[:, :, :-1].transpose(-1, -2) @ va[:, :, :-1]  # [B, H, n-1, D, D+1]
    prev = F.pad(states.cumsum(2), (0, 0, 0, 0, 1, 0))  # [B, H, n, D, D+1]

    bidx = torch.arange(B, device=q.device)[:, None, None, None]
    qf = feature_map(q[bidx, torch.arange(H)[:, None, None], pos[:, None]])  # [B, H, n, P, D]
    scores = qf @ kf.transpose(-1, -2)  # [B, H, n, P, c]
    key_pos = torch.arange(n * c, device=q.device).view(n, 1, c)
    scores = scores.masked_fill((key_pos > pos[..., None])[:, None], 0.0)
    num = scores @ va + qf @ prev  # [B, H, n, P, D+1]
    return num[..., :D] / (num[..., D:] + LINEAR_EPS), pos, valid
