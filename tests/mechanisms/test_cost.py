import pytest
import torch

from pyro_meta_attention.mechanisms.cost import CostModel


def test_full_cost_counts_causal_pairs_exactly():
    # T=4, D=2, H=1: queries see 1+2+3+4 = 10 keys; 4·D FLOPs per pair -> 80 / 4 queries = 20.
    c = CostModel(T=4, window=2, head_dim=2, n_head=1, n_embd=2)
    assert c.full == pytest.approx(20.0)
    # local w=2: keys seen 1+2+2+2 = 7 -> 7 · 8 / 4 = 14.
    assert c.local == pytest.approx(14.0)
    # linear: query 2·D² + 2·D = 12, state 2·D² + D = 10.
    assert c.linear_query == pytest.approx(12.0) and c.linear_state == pytest.approx(10.0)
    assert c.projection == pytest.approx(8 * 4)


def test_normalised_vector_and_projected_cost():
    c = CostModel(T=128, window=16, head_dim=32, n_head=4, n_embd=128)
    v = c.normalised()
    assert v.dtype == torch.float64 and v[0] == 1.0  # full first
    assert c.projected_cost(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert c.projected_cost(torch.tensor([0.0, 0.0, 1.0])) == pytest.approx(float(v[2]))
    with pytest.raises(ValueError, match="shape"):
        c.projected_cost(torch.tensor([1.0, 0.0]))


def test_window_longer_than_sequence_costs_like_full():
    c = CostModel(T=64, window=1000, head_dim=8, n_head=2, n_embd=16)
    assert c.local == pytest.approx(c.full)


def test_bad_cost_inputs():
    with pytest.raises(ValueError, match="window"):
        CostModel(T=8, window=0, head_dim=2, n_head=1, n_embd=2)
