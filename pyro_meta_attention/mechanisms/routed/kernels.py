"""The three kernels of hard-routed execution: each runs one mechanism for its queries only.

- full:   the full queries are grouped by key block of `full_block(T)` positions. Block j is
          attended by its own queries (a causal mask) and, in one unmasked call, by all later
          queries; each query's per-block parts are merged by their log-sum-exp. No mask or
          score matrix is ever larger than (queries) x (one block). When that would compute
          more pairs than the dense causal kernel (most queries full), the dense kernel runs.
- local:  per key block of `window` positions, the block's local queries are packed (padded to
          the fullest block) and attend to that block and the previous one (up to 2w keys,
          masked), read in place from k and v; one call per batch element, so the mask
          broadcasts over heads.
- linear: in segments of LINEAR_SEGMENT chunks: the chunk states phi(K_c)^T V_c and
          normalisers of all tokens (their exclusive prefix sum over chunks, carried across
          segments, is the running state), then per chunk the packed linear queries read the
          state before their chunk and attend, quadratically, to their own chunk's keys.

Each returns its outputs in pieces (one per key block, call or segment): o [B, H, *S, D] with
the positions pos [B, *S] they belong to and valid [B, *S] (False at padding slots).
What was tried instead and measured slower is in docs/design-notes.md.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

from ..full import full_attention
from ..linear import LINEAR_EPS, feature_map
from .plan import LINEAR_SEGMENT, full_block, pack_blocks, pack_groups, packed_pairs, row_index

Piece = tuple[Tensor, Tensor, Tensor]  # o [B, H, *S, D], pos [B, *S], valid [B, *S]


def routed_mechanism(
    m: int, q: Tensor, k: Tensor, v: Tensor, member: Tensor, *, window: int, chunk: int
) -> list[Piece]:
    """Mechanism m (index into `MECHANISMS`) for the queries where member [B, T] is True only.

    q, k, v: [B, H, T, D] (keys and values of every token are used). Returns the outputs in
    pieces (o [B, H, *S, D], pos [B, *S], valid [B, *S]): the packed outputs o of the queries at
    positions pos, valid False at padding slots. Every member position is in exactly one piece.
    """
    if m == 0:
        return full_part(q, k, v, member)
    if m == 1:
        return linear_part(q, k, v, member, chunk)
    return local_part(q, k, v, member, window)


def take(x: Tensor, pos: Tensor) -> Tensor:
    """Rows of x [B, H, T, D] at positions pos [B, *S] -> [B, H, *S, D], contiguous."""
    B, H, T, D = x.shape
    index = row_index(pos, H, T).flatten()  # [B * H * S]
    return x.reshape(B * H * T, D).index_select(0, index).view((B, H) + pos.shape[1:] + (D,))


def _attention_lse(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """Softmax attention (scale 1/sqrt(D), additive bias) -> out [.., L, D], lse [.., L]."""
    if q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=bias)
    if q.device.type == "cuda" and bias is None and q.dtype in (torch.float16, torch.bfloat16):
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[:2]
    # Elsewhere plain matmuls, with the softmax in at least float32.
    scores = (q @ k.transpose(-1, -2)).to(torch.promote_types(q.dtype, torch.float32))
    scores = scores * q.shape[-1] ** -0.5 + (0.0 if bias is None else bias)
    lse = scores.logsumexp(-1)
    return torch.exp(scores - lse[..., None]).to(q.dtype) @ v, lse


class _AttentionLSE(torch.autograd.Function):
    """`_attention_lse` with a backward that also differentiates the log-sum-exp.

    The fused kernels treat their log-sum-exp output as non-differentiable; this backward
    recomputes the probabilities of the call ([.., L, S], one key block) instead.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        out, lse = _attention_lse(q, k, v, bias)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        return out, lse

    @staticmethod
    def backward(ctx, g_out: Tensor, g_lse: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        q, k, v, bias, out, lse = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        scores = (q @ k.transpose(-1, -2)) * scale  # [.., L, S]
        scores = scores if bias is None else scores + bias
        p = torch.exp(scores - lse[..., None].to(q.dtype))
        row = (g_out * out).sum(-1, keepdim=True) - g_lse[..., None].to(q.dtype)  # [.., L, 1]
        ds = p * (g_out @ v.transpose(-1, -2) - row) * scale
        return ds @ k, ds.transpose(-1, -2) @ q, p.transpose(-1, -2) @ g_out, None


def _attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(out, lse) of softmax attention; through `_AttentionLSE` only when autograd needs it."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        return _AttentionLSE.apply(q, k, v, bias)
    return _attention_lse(q, k, v, bias)


def full_part(q: Tensor, k: Tensor, v: Tensor, member: Tensor) -> list[Piece]:
    """Causal softmax attention for the full-routed queries: one piece per key block.

    Keys go in blocks of `full_block(T)`. Block j is attended by its own queries (causal mask)
    and, unmasked, by all later queries in one call; each query's parts are then merged by
    their log-sum-exp. Piece j holds block j's queries (o [B, H, G_j, D]). Where that packing
    would compute more pairs than the dense causal kernel (`packed_pairs`: most queries full),
    the dense kernel runs instead, as one piece of all positions valid at the members only.
    """
    B, H, T, D = q.shape
    size = min(full_block(T), T)
    pos, valid, sizes = pack_groups(member, size)  # [B, R]: queries grouped by block
    if packed_pairs(sizes, T) > T * (T + 1) // 2:  # per batch element, as `full_pairs`
        pos = torch.arange(T, device=q.device).expand(B, T)
        return [(full_attention(q, k, v), pos, member)]
    qg = take(q, pos)  # [B, H, R, D]
    starts = [0, *itertools.accumulate(sizes)]
    parts: list[list[tuple[Tensor, Tensor]]] = [[] for _ in sizes]  # per group: (o, lse)
    for j in range(len(sizes)):
        r0, r1 = starts[j], starts[j + 1]
        keys = torch.arange(j * size, min(T, (j + 1) * size), device=q.device)
        kj, vj = k[:, :, keys[0] : keys[-1] + 1], v[:, :, keys[0] : keys[-1] + 1]
        if r1 > r0:  # the block's own queries: causal mask [B, 1, G, size]
            bias = q.new_zeros(B, 1, r1 - r0, len(keys))
            bias.masked_fill_((keys > pos[:, r0:r1, None])[:, None], float("-inf"))
            parts[j].append(_attend(qg[:, :, r0:r1], kj, vj, bias))
        if r1 < starts[-1]:  # every later query sees the whole block
            o, lse = _attend(qg[:, :, r1:], kj, vj)
            for i in range(j + 1, len(sizes)):
                rows = slice(starts[i] - r1, starts[i + 1] - r1)
                if sizes[i]:
                    parts[i].append((o[:, :, rows], lse[:, :, rows]))
    return [
        (_merge(parts[j]), pos[:, starts[j] : starts[j + 1]], valid[:, starts[j] : starts[j + 1]])
        for j in range(len(sizes))
        if sizes[j]
    ]


def _merge(parts: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Attention over the union of disjoint key sets from each set's (o, lse): [B, H, G, D]."""
    if len(parts) == 1:
        return parts[0][0]
    weights = torch.softmax(torch.stack([lse for _, lse in parts]), dim=0)  # [P, B, H, G]
    return sum(w[..., None].to(o.dtype) * o for w, (o, _) in zip(weights, parts, strict=True))


def local_part(q: Tensor, k: Tensor, v: Tensor, member: Tensor, window: int) -> list[Piece]:
    """Sliding-window attention for the local queries, packed per key block.

    Block i's queries attend keys (i - 1) w .. (i + 1) w, read in place through a strided view
    of k and v (no copies); block 0 and a partial last block, whose windows would leave
    [0, T), get calls of their own. One piece per call: o [B, H, nb, P, D] for its nb blocks.
    """
    B, H, T, D = q.shape
    w = min(window, T)
    pos, valid = pack_blocks(member, w)  # [B, n, P]
    n, P = pos.shape[1:]
    k, v = k.contiguous(), v.contiguous()
    qb = _take_blocks(q, pos)  # [n, B*H, P, D]
    inside = T // w  # blocks 1 .. inside - 1 have both their keys blocks inside [0, T)
    spans = [(0, 1, 0, w if n > 1 else T)]  # (first block, end block, first key, keys per block)
    if inside >= 2:
        spans.append((1, inside, 0, 2 * w))
    if n > max(inside, 1):
        spans.append((n - 1, n, (n - 2) * w, T - (n - 2) * w))
    qb = qb.view(n, B, H, P, D)
    pieces = []
    for i0, i1, start, length in spans:
        s = start + torch.arange(i1 - i0, device=q.device)[:, None] * w
        s = (s + torch.arange(length, device=q.device))[:, None, None]  # [nb, 1, 1, L]
        t = pos[:, i0:i1, :, None].transpose(0, 1)  # [nb, B, P, 1]
        bias = torch.where((s <= t) & (s > t - w), 0.0, float("-inf")).to(q.dtype)
        # One call per batch element, so that the mask [nb, 1, P, L] broadcasts over heads
        # instead of being copied for each of them.
        outs = []
        for b in range(B):
            kb, vb = (_windows(x[b : b + 1], i1 - i0, start, length, w) for x in (k, v))
            outs.append(
                F.scaled_dot_product_attention(
                    qb[i0:i1, b], kb, vb, attn_mask=bias[:, b, None]
                )  # [nb, H, P, D]
            )
        o = torch.stack(outs, dim=1) if B > 1 else outs[0][:, None]  # [nb, B, H, P, D]
        pieces.append((o.permute(1, 2, 0, 3, 4), pos[:, i0:i1], valid[:, i0:i1]))
    return pieces


def _take_blocks(x: Tensor, pos: Tensor) -> Tensor:
    """Rows of x [B, H, T, D] at positions pos [B, n, P] -> [n, B*H, P, D], contiguous."""
    B, H, T, D = x.shape
    index = row_index(pos, H, T).permute(2, 0, 1, 3)  # [n, B, H, P]
    rows = x.reshape(B * H * T, D).index_select(0, index.flatten())
    return rows.view(pos.shape[1], B * H, pos.shape[2], D)


def _windows(x: Tensor, count: int, start: int, length: int, w: int) -> Tensor:
    """[count, B*H, length, D] view of x [B, H, T, D] (contiguous): window j holds rows
    start + j w .. start + j w + length - 1 of every (batch, head); all must lie inside [0, T).
    """
    B, H, T, D = x.shape
    size, stride = (count, B * H, length, D), (w * D, T * D, D, 1)
    return x.as_strided(size, stride, x.storage_offset() + start * D)


def linear_part(q: Tensor, k: Tensor, v: Tensor, member: Tensor, chunk: int) -> list[Piece]:
    """Causal linear attention for the linear queries, packed per chunk.

    Chunks go in segments of LINEAR_SEGMENT. Within a segment the running state before each
    chunk is the carried state plus the states of the segment's earlier chunks (a strictly
    lower-triangular matmul); the segment's queries read it, then the state moves on. One
    piece per segment: o [B, H, ns, P, D]. (Laying k, v and the queries out chunk-major once,
    so that each segment is a contiguous slice, was no faster on CPU at T = 4096.)
    """
    B, H, T, D = q.shape
    c = min(chunk, T)
    pos, valid = pack_blocks(member, c)  # [B, n, P]
    n, P = pos.shape[1:]
    state = q.new_zeros(B, H, 1, D, D)  # sum of phi(k) v^T over the chunks before the segment
    norm = q.new_zeros(B, H, 1, D)  # sum of phi(k) over the same chunks
    pieces = []
    for s0 in range(0, n, LINEAR_SEGMENT):
        s1 = min(n, s0 + LINEAR_SEGMENT)
        ns, t0, t1 = s1 - s0, s0 * c, min(T, s1 * c)
        kf, vc = feature_map(k[:, :, t0:t1]), v[:, :, t0:t1]
        if ns * c > t1 - t0:  # padded keys are 0 in kf, so they add nothing
            kf, vc = (F.pad(x, (0, 0, 0, ns * c - (t1 - t0))) for x in (kf, vc))
        kf, vc = kf.view(B, H, ns, c, D), vc.reshape(B, H, ns, c, D)
        before = torch.ones(ns, ns, dtype=q.dtype, device=q.device).tril(-1)  # [ns, ns]
        states = kf.transpose(-1, -2) @ vc  # [B, H, ns, D, D]: phi(K_c)^T V_c
        sums = kf.sum(-2)  # [B, H, ns, D]
        prev = (before @ states.view(B, H, ns, D * D)).view(B, H, ns, D, D).add_(state)
        prev_norm = (before @ sums).add_(norm)  # [B, H, ns, D]

        p = pos[:, s0:s1]  # [B, ns, P]
        qf = feature_map(take(q, p), inplace=True)  # [B, H, ns, P, D]
        key_pos = torch.arange(t0, t0 + ns * c, device=q.device).view(ns, 1, c)
        causal = (key_pos <= p[..., None]).to(q.dtype)[:, None]  # [B, 1, ns, P, c]
        scores = (qf @ kf.transpose(-1, -2)).mul_(causal)  # [B, H, ns, P, c]
        inter = (qf @ prev).view(-1, P, D)  # [B*H*ns, P, D]
        # + scores @ V_c; in place (out=, which FlopCounterMode counts) unless autograd needs it
        out = None if torch.is_grad_enabled() and inter.requires_grad else inter
        num = torch.baddbmm(inter, scores.view(-1, P, c), vc.reshape(-1, c, D), out=out)
        den = (qf @ prev_norm[..., None]).add_(scores.sum(-1, keepdim=True))  # [B, H, ns, P, 1]
        o = num.view(B, H, ns, P, D).div_(den.add_(LINEAR_EPS))
        pieces.append((o, pos[:, s0:s1], valid[:, s0:s1]))
        state = prev[:, :, -1:] + states[:, :, -1:]
        norm = prev_norm[:, :, -1:] + sums[:, :, -1:]
    return pieces
