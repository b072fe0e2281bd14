"""analysis/token_gain.py: per-position gains, their classes and the oracle router."""

import doctest

import pytest
import torch

from pyro_meta_attention.analysis import token_gain as module
from pyro_meta_attention.analysis.evaluation import evaluate_policy
from pyro_meta_attention.analysis.token_gain import (
    gain_by_class,
    hard_position_nats,
    oracle_curve,
    share_to_close,
)
from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.data.sources import held_out_batches
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.policies import Policy
from pyro_meta_attention.training.svi import fit


def test_docstring_example():
    assert doctest.testmod(module).failed == 0


def test_gain_by_class_counts_each_class_and_its_share_above_the_price():
    gain = torch.tensor([3.0, -1.0, 0.5, 2.0, 0.0, 0.0], dtype=torch.float64)
    classes = torch.tensor([2, 2, 2, 0, 0, 0])
    out = gain_by_class(gain, classes, ("novel", "short-repeat", "long-repeat"), price=1.0)
    assert out["short-repeat"] == {"share": 0.0}  # no position of that class
    long = out["long-repeat"]
    assert long["share"] == pytest.approx(0.5) and long["mean"] == pytest.approx(2.5 / 3)
    assert long["above_price"] == pytest.approx(1 / 3)  # only the 3.0
    assert long["gain_above_price"] == pytest.approx(3.0 / 3.5)  # of the positive gain 3 + 0.5
    assert out["novel"]["gain_above_price"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="\\[P\\]"):
        gain_by_class(gain, classes[:3], ("a", "b", "c"), 1.0)


def test_oracle_curve_and_share_to_close_agree():
    torch.manual_seed(0)
    gain = torch.randn(1000, dtype=torch.float64).exp() - 0.5  # heavy right tail, mean > 0
    half = share_to_close(gain, 0.5)
    # routing every position whose gain is at least the weakest one picked closes >= half
    (row,) = oracle_curve(gain, [half["weakest_gain"] - 1e-12])
    assert row["routed"] == pytest.approx(half["routed"])
    assert row["closed"] >= 0.5
    (just_below,) = oracle_curve(gain, [half["weakest_gain"]])  # one position fewer
    assert just_below["closed"] < 0.5
    (everything,) = oracle_curve(gain, [float("-inf")])
    assert everything["routed"] == 1.0 and everything["closed"] == pytest.approx(1.0)
    assert everything["nats_saved"] == pytest.approx(float(gain.mean()))
    with pytest.raises(ValueError, match="fraction"):
        share_to_close(gain, 0.0)


def test_position_nats_average_to_the_evaluated_hard_nats():
    config = smoke_config()
    result = fit(config, progress=False)
    model, guide = result.model.eval(), result.guide.eval()
    batches = held_out_batches(result.data, config, batches=2)
    cost = cost_model_for(config.model)
    nats, classes = hard_position_nats(model, guide, batches, cost.normalised())
    assert nats.dtype == torch.float64 and classes is None
    assert nats.numel() == sum(b.y.numel() for b in batches)
    hard = evaluate_policy(model, guide, batches, Policy("hard"), cost, repeats=1)
    assert float(nats.mean()) == pytest.approx(hard["val_nats_per_token"], rel=1e-6)
    forced = hard_position_nats(model, guide, batches, cost.normalised(), "full")[0]
    assert forced.shape == nats.shape and not torch.equal(forced, nats)
