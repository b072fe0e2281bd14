"""Hard-routed attention against its naive twin (the dense float64 mixture), its FLOP count, and
its errors."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from pyro_meta_attention.mechanisms import MECHANISMS
from pyro_meta_attention.mechanisms.routed import dense_full_flops, routed_attention, routed_flops
from pyro_meta_attention.mechanisms.routed.naive import routed_attention_ref
from pyro_meta_attention.mechanisms.routed.plan import full_pairs

B, H, D = 2, 3, 8
LENGTHS = (1, 63, 100, 257)  # 100 and 257 span 2 and 3 key blocks of the full mechanism
BLOCKS = ((16, 16), (32, 64))  # (window, chunk)
M = len(MECHANISMS)

# Both sides run in float64 and differ only in summation order (packed, blocked and merged
# pieces vs the dense kernels), so they agree to a few ulps of values of order 1; 1e-10 leaves
# ample room yet catches any wrong key, mask, padding slot or state, which shows up at 1e-3+.
TOL = 1e-10


def qkv(T: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=gen, dtype=dtype).requires_grad_() for _ in range(3)]


def random_routing(T: int, probs: tuple[float, ...], seed: int = 1) -> tuple[torch.Tensor, ...]:
    """assignment [B, T] with P(-1, 0, 1, 2) = probs, and alpha [B, T, M] on the simplex."""
    gen = torch.Generator().manual_seed(seed)
    draws = torch.multinomial(
        torch.tensor(probs, dtype=torch.float64), B * T, replacement=True, generator=gen
    )
    alpha = torch.rand(B, T, M, generator=gen, dtype=torch.float64)
    return draws.view(B, T) - 1, alpha / alpha.sum(-1, keepdim=True)


def assert_matches_dense(T, window, chunk, assignment, alpha, seed=0) -> None:
    q, k, v = qkv(T, seed)
    got = routed_attention(q, k, v, assignment, alpha, window=window, chunk=chunk)
    want = routed_attention_ref(q, k, v, assignment, alpha, window=window)
    assert got.shape == (B, H, T, D) and got.dtype == q.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)


@pytest.mark.parametrize("window,chunk", BLOCKS)
@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("soft", [0.0, 0.2])
def test_matches_dense_mixture(soft: float, T: int, window: int, chunk: int) -> None:
    hard = (1 - soft) / M
    assignment, alpha = random_routing(T, (soft, hard, hard, hard), seed=T)
    assert_matches_dense(T, window, chunk, assignment, alpha if soft else None)


@pytest.mark.parametrize(
    "probs",
    [
        (0, 1, 0, 0),  # all full
        (0, 0, 1, 0),  # all linear
        (0, 0, 0, 1),  # all local
        (1, 0, 0, 0),  # all soft
        (0, 0.5, 0, 0.5),  # no linear
        (0.1, 0, 0.9, 0),  # no local, a few soft
        (0, 0.02, 0.49, 0.49),  # very few full queries: empty key blocks
        (0.05, 0.85, 0.05, 0.05),  # mostly full: the dense kernel, rows of the others dropped
    ],
)
def test_corner_cases_match_dense(probs) -> None:
    assignment, alpha = random_routing(257, probs, seed=7)
    for window, chunk in BLOCKS:
        assert_matches_dense(257, window, chunk, assignment, alpha)


def test_batch_elements_route_differently() -> None:
    # Element 0 all full, element 1 all local: every group of one element is padding in the other.
    assignment = torch.stack([torch.zeros(100, dtype=torch.long), torch.full((100,), 2)])
    assert_matches_dense(100, 16, 16, assignment, None)


@pytest.mark.parametrize("T", [63, 257])
@pytest.mark.parametrize("soft", [0.0, 0.2])
def test_gradients_match_dense_mixture(soft: float, T: int) -> None:
    window, chunk = 32, 64
    hard = (1 - soft) / M
    assignment, alpha = random_routing(T, (soft, hard, hard, hard), seed=3)
    alpha.requires_grad_()
    inputs = qkv(T, seed=4) + [alpha] * (soft > 0)
    grad_out = torch.randn(
        B, H, T, D, generator=torch.Generator().manual_seed(5), dtype=alpha.dtype
    )
    got = routed_attention(*inputs[:3], assignment, alpha, window=window, chunk=chunk)
    want = routed_attention_ref(*inputs[:3], assignment, alpha, window=window)
    got_grads = torch.autograd.grad(got, inputs, grad_out)
    want_grads = torch.autograd.grad(want, inputs, grad_out)
    for name, g, w in zip(["q", "k", "v", "alpha"], got_grads, want_grads, strict=False):
        torch.testing.assert_close(g, w, rtol=0, atol=TOL, msg=f"grad {name}")


@pytest.mark.parametrize("T", [63, 257])
def test_linear_reads_its_own_queries_and_keys(T: int) -> None:
    """linear_qk (unrotated queries and keys under rotary positions): outputs and gradients of
    all five inputs against the naive mixture given the same pairs."""
    assignment, alpha = random_routing(T, (0.2, 0.3, 0.2, 0.3), seed=13)
    inputs = qkv(T, seed=14) + qkv(T, seed=15)[:2]  # q, k, v, q_linear, k_linear
    q, k, v, ql, kl = inputs
    got = routed_attention(q, k, v, assignment, alpha, window=16, chunk=32, linear_qk=(ql, kl))
    want = routed_attention_ref(q, k, v, assignment, alpha, window=16, linear_qk=(ql, kl))
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)
    plain = routed_attention_ref(q, k, v, assignment, alpha, window=16)
    assert (got - plain).abs().max() > 1e-3  # the linear tokens read the other pair
    grad_out = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(16)).double()
    got_grads = torch.autograd.grad(got, inputs, grad_out)
    want_grads = torch.autograd.grad(want, inputs, grad_out)
    for name, g, w in zip(
        ["q", "k", "v", "q_linear", "k_linear"], got_grads, want_grads, strict=True
    ):
        torch.testing.assert_close(g, w, rtol=0, atol=TOL, msg=f"grad {name}")
    with pytest.raises(ValueError, match="linear_qk"):
        routed_attention(q, k, v, assignment, alpha, window=16, chunk=32, linear_qk=(ql[:1], kl))


def test_causal() -> None:
    # Changing q, k, v after position t leaves every output at positions <= t unchanged.
    T, t, window, chunk = 257, 150, 32, 64
    assignment, alpha = random_routing(T, (0.1, 0.3, 0.3, 0.3), seed=9)
    q, k, v = (x.detach() for x in qkv(T))
    before = routed_attention(q, k, v, assignment, alpha, window=window, chunk=chunk)
    gen = torch.Generator().manual_seed(10)
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t + 1 :] = torch.randn(B, H, T - t - 1, D, generator=gen, dtype=x.dtype)
    after = routed_attention(q2, k2, v2, assignment, alpha, window=window, chunk=chunk)
    torch.testing.assert_close(after[:, :, : t + 1], before[:, :, : t + 1], rtol=0, atol=1e-12)
    assert (after[:, :, t + 1 :] - before[:, :, t + 1 :]).abs().max() > 1e-3


@pytest.mark.parametrize("T", [1, 16, 64, 100])
def test_inference_mode_matches_and_leaves_inputs_alone(T: int) -> None:
    # Without autograd the engine works in place on buffers of its own (the feature map of
    # the gathered linear queries, the linear numerators); T = 1, 16, 64 are one chunk.
    assignment, alpha = random_routing(T, (0.1, 0.3, 0.3, 0.3), seed=11)
    q, k, v = (x.detach() for x in qkv(T, seed=12))
    copies = [x.clone() for x in (q, k, v)]
    with torch.inference_mode():
        got = routed_attention(q, k, v, assignment, alpha, window=16, chunk=64)
        want = routed_attention_ref(q, k, v, assignment, alpha, window=16)
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)
    for x, copy in zip((q, k, v), copies, strict=True):
        assert torch.equal(x, copy)


def counted_by_torch(q, k, v, assignment, alpha, window, chunk) -> int:
    """FLOPs FlopCounterMode counts for one routed_attention call.

    FlopCounterMode (torch 2.13) counts matmuls and the CUDA SDPA kernels (as the full L x S
    square) but not the CPU flash kernel; we give that one the same L x S formula, which is
    what a masked or unmasked flash call executes, or with is_causal the T(T+1)/2 pairs.
    """
    cpu_sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu

    def cpu_sdpa_flops(q_shape, k_shape, v_shape, dropout_p=0.0, is_causal=False, **kw) -> int:
        if is_causal:  # the dense kernel skips the key blocks above the diagonal
            B, H, T, D = q_shape
            return B * H * 4 * D * T * (T + 1) // 2
        return sdpa_flop_count(q_shape, k_shape, v_shape)

    with FlopCounterMode(display=False, custom_mapping={cpu_sdpa: cpu_sdpa_flops}) as counter:
        routed_attention(q, k, v, assignment, alpha, window=window, chunk=chunk)
    return counter.get_total_flops()


@pytest.mark.parametrize("window,chunk", BLOCKS)
@pytest.mark.parametrize("T", [1, 100, 257, 700])
def test_flops_match_flop_counter(T: int, window: int, chunk: int) -> None:
    assignment, alpha = random_routing(T, (0.1, 0.3, 0.3, 0.3), seed=T + window)
    q, k, v = (x.detach() for x in qkv(T, dtype=torch.float32))
    flops = routed_flops(assignment, n_head=H, head_dim=D, window=window, chunk=chunk)
    assert flops["total"] == flops["full"] + flops["linear"] + flops["local"]
    assert flops["total"] == counted_by_torch(q, k, v, assignment, alpha, window, chunk)


@pytest.mark.parametrize("T", [1, 257])
def test_all_full_runs_the_dense_kernel(T: int) -> None:
    all_full = torch.zeros(B, T, dtype=torch.long)
    q, k, v = (x.detach() for x in qkv(T, dtype=torch.float32))
    flops = routed_flops(all_full, n_head=H, head_dim=D, window=32, chunk=64)
    assert flops["total"] == flops["full"] == dense_full_flops(B, T, H, D)
    assert counted_by_torch(q, k, v, all_full, None, 32, 64) == flops["total"]


@pytest.mark.parametrize("unused", range(M))
def test_unused_mechanism_costs_nothing(unused: int) -> None:
    T, window, chunk = 257, 32, 64
    probs = [0.0] + [0.0 if m == unused else 0.5 for m in range(M)]
    assignment, _ = random_routing(T, tuple(probs), seed=11)
    flops = routed_flops(assignment, n_head=H, head_dim=D, window=window, chunk=chunk)
    assert flops[MECHANISMS[unused]] == 0
    assert all(flops[MECHANISMS[m]] > 0 for m in range(M) if m != unused)
    q, k, v = (x.detach() for x in qkv(T, dtype=torch.float32))
    assert counted_by_torch(q, k, v, assignment, None, window, chunk) == flops["total"]


def test_flops_shrink_with_the_routed_share() -> None:
    T = 1024
    all_full = torch.zeros(1, T, dtype=torch.long)
    quarter = torch.where(torch.arange(T) % 4 == 0, 0, 2)[None]
    dense = dense_full_flops(1, T, H, D)
    assert dense == H * 4 * D * T * (T + 1) // 2
    assert routed_flops(all_full, n_head=H, head_dim=D, window=32, chunk=64)["total"] == dense
    one_local = all_full.index_fill(1, torch.tensor([T - 1]), 2)
    packed, _ = full_pairs(one_local == 0)
    assert dense < 4 * D * H * packed < 1.3 * dense  # the masked halves of the diagonal blocks
    full = routed_flops(one_local, n_head=H, head_dim=D, window=32, chunk=64)["full"]
    assert full == dense  # so the dense kernel runs: never more than dense full attention
    assert routed_flops(quarter, n_head=H, head_dim=D, window=32, chunk=64)["full"] < full / 3


@pytest.mark.parametrize("share", [0.5, 0.7, 0.9, 0.99])
def test_full_part_never_costs_more_than_dense(share: float) -> None:
    T = 257
    assignment, _ = random_routing(T, (0, share, 0, 1 - share), seed=3)
    flops = routed_flops(assignment, n_head=H, head_dim=D, window=16, chunk=16)
    assert flops["full"] <= dense_full_flops(B, T, H, D)
    q, k, v = (x.detach() for x in qkv(T, dtype=torch.float32))
    assert counted_by_torch(q, k, v, assignment, None, 16, 16) == flops["total"]
    assert_matches_dense(T, 16, 16, assignment, None)


def test_bad_inputs_raise() -> None:
    T = 20
    q, k, v = (x.detach() for x in qkv(T))
    good = torch.zeros(B, T, dtype=torch.long)
    alpha = torch.full((B, T, M), 1 / M, dtype=torch.float64)

    def call(assignment=good, alpha=None, q=q, window=8, chunk=8):
        return routed_attention(q, k, v, assignment, alpha, window=window, chunk=chunk)

    cases = [
        (dict(assignment=good.float()), "int64"),
        (dict(assignment=good[:, :-1]), "shape"),
        (dict(assignment=good.index_fill(1, torch.tensor([3]), 3)), "values"),
        (dict(assignment=torch.full((B, T), -2)), "values"),
        (dict(assignment=torch.full((B, T), -1)), "alpha"),
        (dict(assignment=torch.full((B, T), -1), alpha=alpha[:, :-1]), "alpha must have shape"),
        (dict(assignment=torch.full((B, T), -1), alpha=alpha.long()), "floating"),
        (dict(q=q[:, :, :-1]), "same shape"),
        (dict(window=0), "window"),
        (dict(chunk=1.5), "chunk"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            call(**kwargs)


def test_non_contiguous_inputs_as_the_network_passes_them() -> None:
    # MixedAttention splits one [B, T, 3, H, D] projection with a permute: strided q, k, v.
    gen = torch.Generator().manual_seed(3)
    qkv_packed = torch.randn(B, 100, 3, H, D, generator=gen, dtype=torch.float64)
    q, k, v = qkv_packed.permute(2, 0, 3, 1, 4)
    assert not q.is_contiguous()
    assignment, alpha = random_routing(100, (0.2, 0.3, 0.3, 0.2), seed=4)
    got = routed_attention(q, k, v, assignment, alpha, window=16, chunk=16)
    want = routed_attention_ref(q, k, v, assignment, alpha, window=16)
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)
