"""`fit(tensorboard=DIR)` (training/tensorboard.py): the event file read back holds the metrics
rows as scalars at their steps, routing shares per mechanism and layer, alpha_bar histograms
per layer and mechanism, and the summary."""

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.mechanisms import MECHANISMS
from pyro_meta_attention.training.svi import fit


def accumulator(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return events


def scalar_tags(folder: Path) -> list[str]:
    return accumulator(folder).Tags()["scalars"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    result = fit(smoke_config(), out=root / "run", progress=False, tensorboard=root / "tb")
    return result, accumulator(root / "tb")


def test_every_metrics_row_is_a_scalar_at_its_step(run):
    result, events = run
    steps = [row["step"] for row in result.history]
    for key in ("loss", "nats_per_token", "bits_per_byte", "kl", "beta", "tau"):
        logged = events.Scalars(f"train/{key}")
        assert [e.step for e in logged] == steps
        want = [row[key] for row in result.history]
        assert [e.value for e in logged] == pytest.approx(want, rel=1e-6)  # float32 in the file


def test_routing_shares_per_mechanism_and_layer(run):
    result, events = run
    last = result.history[-1]
    for m, name in enumerate(MECHANISMS):
        assert events.Scalars(f"routing/{name}")[-1].value == pytest.approx(
            last["routing_share"][m], abs=1e-6
        )
        for layer, shares in enumerate(last["layer_share"]):
            logged = events.Scalars(f"routing/layer{layer}/{name}")[-1].value
            assert logged == pytest.approx(shares[m], abs=1e-6)
        assert len(last["layer_prior_mean"]) == result.config.model.n_layer
        for layer, means in enumerate(last["layer_prior_mean"]):
            logged = events.Scalars(f"prior_mean/layer{layer}/{name}")[-1].value
            assert logged == pytest.approx(means[m], abs=1e-6)
    assert len(last["layer_share"]) == result.config.model.n_layer


def test_alpha_histograms_per_layer_and_mechanism(run):
    result, events = run
    tags = set(events.Tags()["histograms"])
    want = {f"alpha/layer{l}/{m}" for l in range(result.config.model.n_layer) for m in MECHANISMS}
    assert tags == want
    tc = result.config.train
    for tag in want:
        histograms = events.Histograms(tag)
        assert [h.step for h in histograms] == [row["step"] for row in result.history]
        values = histograms[-1].histogram_value
        assert values.num == tc.batch_size * result.config.model.block_size  # one per token
        assert 0.0 <= values.min <= values.max <= 1.0  # a point on the simplex


def test_the_summary_is_written_at_the_end(run):
    result, events = run
    logged = events.Scalars("summary/val_nats_per_token")
    assert len(logged) == 1 and logged[0].step == result.config.train.steps
    assert logged[0].value == pytest.approx(result.summary["val_nats_per_token"], rel=1e-6)
