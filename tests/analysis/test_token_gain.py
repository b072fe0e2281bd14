"""analysis/token_gain.py: per-position gains, their classes and the oracle router."""

import doctest

import pytest
import torch

from pyro_meta_attention.analysis import token_gain as module
from pyro_meta_attention.analysis.evaluation import evaluate_policy
from pyro_meta_attention.analysis.token_gain import (
    auc,
    gain_by_class,
    hard_position_nats,
    oracle_curve,
    precision_at_recall,
    predictability,
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


def test_auc_counts_ordered_pairs_and_ties_half():
    label = torch.tensor([True, False, True, False])
    assert auc(torch.tensor([0.9, 0.1, 0.8, 0.2]), label) == 1.0
    assert auc(torch.tensor([0.1, 0.9, 0.2, 0.8]), label) == 0.0
    assert auc(torch.ones(4), label) == 0.5  # every pair tied
    # positives 0.9 and 0.2 against negatives 0.5 and 0.1: 3 of the 4 pairs ordered right
    assert auc(torch.tensor([0.9, 0.5, 0.2, 0.1]), label) == pytest.approx(0.75)
    assert torch.isnan(torch.tensor(auc(torch.ones(3), torch.zeros(3, dtype=torch.bool))))


def test_precision_at_recall_takes_tied_scores_together():
    score = torch.tensor([3.0, 2.0, 2.0, 2.0, 1.0])
    label = torch.tensor([True, True, False, False, True])
    # half of 3 positives: the top score holds one (recall 1/3 < 0.5), the tied 2.0s two more
    assert precision_at_recall(score, label, 0.5) == pytest.approx(2 / 4)
    assert precision_at_recall(score, label, 0.3) == 1.0
    assert precision_at_recall(score, label, 1.0) == pytest.approx(3 / 5)


def test_predictability_finds_a_feature_that_marks_the_paying_positions():
    torch.manual_seed(1)
    P = 4000
    marker = (torch.rand(P) < 0.2).double()  # a causal bit that marks where full pays
    noise = (torch.rand(P) < 0.5).double()  # and one that says nothing
    gain = torch.where(marker.bool(), 3.0, 0.0) + 0.1 * torch.randn(P, dtype=torch.float64)
    half = torch.arange(P) < P // 2
    found = predictability(gain, torch.stack([marker, noise], 1), half, price=1.5)
    assert found["auc"] > 0.99 and found["precision_at_half_recall"] > 0.99
    assert found["base_rate"] == pytest.approx(0.2, abs=0.03)  # 2,000 draws: sd ~0.009
    blind = predictability(gain, noise[:, None], half, price=1.5)
    assert abs(blind["auc"] - 0.5) < 0.05  # sd of a null AUC here ~0.013
