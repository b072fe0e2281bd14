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
    with pytest.raises(ValueError, match="capacity 12"):
        layer.append(*(torch.zeros(B, H, 3, D, dtype=torch.float64),) * 2)


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
