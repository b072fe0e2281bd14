"""The decoding state (views, capacity, bytes), which mechanisms a step runs, and its FLOPs."""

import pytest
import torch
from routed_models import decode, routed_model, tokens

from pyro_meta_attention.decoding import Decoder, LayerState, MixRouter
from pyro_meta_attention.decoding.attend import attend_step, executed, row_runs
from pyro_meta_attention.decoding.flops import dense_step_flops, step_flops

B, H, D = 3, 2, 4


def filled(T: int = 10, capacity: int = 12, linear: bool = True) -> LayerState:
    layer = LayerState.empty(B, H, D, capacity, linear, torch.zeros((), dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    k, v = (torch.randn(B, H, T, D, generator=gen, dtype=torch.float64) for _ in range(2))
    layer.append(k, v)
    return layer


def test_full_and_local_read_the_cache_in_place():
    layer = filled()
    for last, length in ((None, 10), (4, 4), (40, 10)):
        k, v = layer.cached(slice(1, 3), last)
        assert k.shape == (2, H, length, D)
        assert k.untyped_storage().data_ptr() == layer.keys.untyped_storage().data_ptr()
        assert torch.equal(k, layer.keys[1:3, :, 10 - length : 10])


def test_capacity_and_bytes():
    layer = filled(T=10, capacity=12)
    position = 2 * H * D * 8  # keys and values of one position, float64, per sequence
    assert layer.nbytes() == {
        "kv_cache": 12 * B * position,
        "kv_used": 10 * B * position,
        "linear_state": B * H * (D * D + D) * 8,
    }
    assert filled(linear=False).nbytes()["linear_state"] == 0


def one_by_one(layer: LayerState, n: int) -> tuple[torch.Tensor, int]:
    """Append n random positions one at a time: (all keys appended [B, H, n, D], re-allocations)."""
    gen = torch.Generator().manual_seed(1)
    keys, moves = [], 0
    for _ in range(n):
        k = torch.randn(B, H, 1, D, generator=gen, dtype=torch.float64)
        before = layer.keys.data_ptr()
        layer.append(k, k)
        keys.append(k)
        moves += layer.keys.data_ptr() != before
    return torch.cat(keys, 2), moves


def test_the_cache_grows_by_doubling():
    """1,000 positions from room for 4: re-allocated 8 times (4 -> 8 -> ... -> 1024), not once
    per token, and every key is where it was appended."""
    layer = LayerState.empty(B, H, D, 4, False, torch.zeros((), dtype=torch.float64))
    keys, moves = one_by_one(layer, 1000)
    assert (moves, layer.capacity, layer.length) == (8, 1024, 1000)
    assert torch.equal(layer.cached(slice(None))[0], keys)


def test_max_context_keeps_the_last_keys_in_one_buffer():
    """N = 5: the buffer stays 10 rows (never re-allocated), reads see the last 5 positions."""
    like = torch.zeros((), dtype=torch.float64)
    layer = LayerState.empty(B, H, D, 4, False, like, max_context=5)
    keys, moves = one_by_one(layer, 37)
    assert (moves, layer.capacity, layer.length) == (0, 10, 37)
    assert torch.equal(layer.cached(slice(None))[0], keys[:, :, -5:])
    assert torch.equal(layer.cached(slice(None), last=3)[0], keys[:, :, -3:])


def test_soft_rows_skip_mechanisms_of_zero_weight():
    assignment = torch.tensor([0, -1, 2, -1])
    alpha = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0, 0, 1], [0.2, 0.3, 0.5]])
    runs = executed(assignment, alpha)
    assert runs.tolist() == [
        [True, False, False],
        [True, True, False],
        [False, False, True],
        [True, True, True],
    ]
    assert row_runs(runs[:, 1].tolist()) == [slice(1, 2), slice(3, 4)]
    with pytest.raises(ValueError, match="alpha"):
        executed(assignment, None)


def test_a_linear_token_needs_the_linear_state():
    layer = filled(linear=False)
    q = torch.zeros(B, H, 1, D, dtype=torch.float64)
    with pytest.raises(ValueError, match="no linear state"):
        attend_step(layer, q, torch.tensor([0, 1, 2]), None, window=4)


def test_step_flops_count_each_row_once():
    runs = torch.tensor([[True, False, False], [True, True, True], [False, False, True]])
    got = step_flops(runs, 100, n_head=H, head_dim=D, window=8, linear_state=True)
    assert got == {
        "full": 2 * H * 4 * D * 100,
        "linear": 1 * H * (2 * D * D + 2 * D),
        "local": 2 * H * 4 * D * 8,
        "state": B * H * (2 * D * D + D),
        "total": got["full"] + got["linear"] + got["local"] + got["state"],
    }


def test_the_dense_decoder_counts_dense_flops_and_keeps_no_linear_state():
    config, model, _ = routed_model()
    c = config.model
    decoder = Decoder(model.net, MixRouter((1.0, 0.0, 0.0), c.n_layer))
    decode(decoder, tokens(2, 20), prompt=5)
    want = sum(dense_step_flops(2, t, c.n_head, c.head_dim) for t in range(6, 21)) * c.n_layer
    assert decoder.meter.flops == {"full": want, "linear": 0, "local": 0, "state": 0}
    assert decoder.meter.steps == 15 and decoder.meter.attention_s > 0
    assert decoder.state.nbytes()["linear_state"] == 0
