"""Rotary positions against their float64 twin, their relative-position property, and the network
with rotary positions against the naive mechanisms on rotated queries and keys."""

import pytest
import torch

from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.mechanisms.naive import (
    full_attention_ref,
    linear_attention_ref,
    local_attention_ref,
    rotary_ref,
)
from pyro_meta_attention.mechanisms.rotary import apply_rotary
from pyro_meta_attention.network import RoutedTransformer

# float64 on both sides, the same angles (computed in float64) applied as real rotate-half
# arithmetic vs complex multiplication: a few ulps of values of order 1. A wrong pairing of
# channels, sign or position is an error of order 1.
TOL = 1e-12


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("T,D,start", [(1, 2, 0), (7, 8, 0), (33, 16, 5), (100, 32, 4093)])
def test_matches_complex_multiplication_outputs_and_gradients(T, D, start):
    x = randn(2, 3, T, D).requires_grad_()
    got, want = apply_rotary(x, start), rotary_ref(x, start)
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)
    g = randn(2, 3, T, D, seed=1)
    torch.testing.assert_close(
        torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], rtol=0, atol=TOL
    )


def test_a_rotation_keeps_norms_and_scores_depend_on_the_offset_only():
    q, k = randn(1, 1, 1, 16), randn(1, 1, 1, 16, seed=1)
    scores = [
        (apply_rotary(q, t) * apply_rotary(k, s)).sum()
        for t, s in ((7, 3), (107, 103), (5004, 5000))
    ]
    for score in scores[1:]:
        torch.testing.assert_close(score, scores[0], rtol=0, atol=1e-10)
    assert (apply_rotary(q, 7) * apply_rotary(k, 2)).sum() != pytest.approx(float(scores[0]))
    torch.testing.assert_close(apply_rotary(q, 123).norm(), q.norm(), rtol=0, atol=TOL)


def test_positions_do_not_depend_on_the_range_they_are_computed_in():
    """What a decoder relies on: rotating positions 40..49 alone gives exactly the rows 40..49 of
    rotating 0..99."""
    x = randn(2, 2, 100, 8)
    assert torch.equal(apply_rotary(x[:, :, 40:50], 40), apply_rotary(x, 0)[:, :, 40:50])


def test_an_odd_head_size_is_refused():
    with pytest.raises(ValueError, match="even head size"):
        apply_rotary(randn(1, 1, 4, 3))
    with pytest.raises(ValueError, match="even head size"):
        smoke_config(model={"n_embd": 30, "n_head": 2})


@pytest.mark.parametrize("rope_linear", [False, True])
def test_the_network_mixes_the_naive_mechanisms_on_rotated_queries_and_keys(rope_linear):
    """One block's attention core at T = 70 (> block_size 32): full and local read rotated q, k;
    linear reads them rotated iff rope_linear."""
    config = smoke_config(model={"rope_linear": rope_linear}).model
    torch.manual_seed(0)
    attn = RoutedTransformer(config).double().blocks[0].attn
    x = randn(2, 70, config.n_embd, seed=3)
    alpha = torch.softmax(randn(2, 70, 3, seed=4), -1)
    got = attn.attend(attn.heads(x), alpha)
    qkv = attn.qkv(x).view(2, 70, 3, config.n_head, config.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv
    qr, kr = rotary_ref(q), rotary_ref(k)
    ql, kl = (qr, kr) if rope_linear else (q, k)
    want = sum(
        alpha[:, None, :, m, None] * o
        for m, o in enumerate(
            (
                full_attention_ref(qr, kr, v),
                linear_attention_ref(ql, kl, v),
                local_attention_ref(qr, kr, v, config.window),
            )
        )
    )
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)


def test_only_learned_positions_end_at_block_size():
    x = torch.randint(0, 256, (1, 100))
    alphas = [torch.full((1, 100, 3), 1 / 3)] * 2
    for positions in ("rope", "learned"):
        net = RoutedTransformer(smoke_config(model={"positions": positions}).model)
        if positions == "rope":
            assert net(x, alphas).shape == (1, 100, 256) and net.pos_emb is None
        else:
            with pytest.raises(ValueError, match="learned positions end"):
                net(x, alphas)
