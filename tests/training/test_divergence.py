"""Divergence: a non-finite loss, or nats/token far above uniform prediction, stops the run
naming the step, keeps the last good checkpoint, and never claims that routing was learned."""

import math

import pytest
import torch

from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.training.checkpoint import read_checkpoint
from pyro_meta_attention.training.divergence import TrainingDiverged, Watchdog, limit
from pyro_meta_attention.training.run_dir import load_history
from pyro_meta_attention.training.summary import summarise
from pyro_meta_attention.training.svi import fit


def test_a_non_finite_loss_stops_at_its_step():
    with pytest.raises(TrainingDiverged, match="at step 7: loss is nan"):
        Watchdog(256).check_loss(math.nan, 7)


def test_a_loss_far_above_uniform_for_several_logged_steps_stops():
    watch = Watchdog(256)
    watch.check_row(20.0, 0, last=False)
    watch.check_row(4.0, 2, last=False)  # back below: the count starts again
    watch.check_row(20.0, 4, last=False)
    watch.check_row(20.0, 6, last=False)
    with pytest.raises(TrainingDiverged, match="at step 8: 20 nats/token at 3 logged step"):
        watch.check_row(20.0, 8, last=False)
    with pytest.raises(TrainingDiverged, match="at step 9"):
        Watchdog(256).check_row(20.0, 9, last=True)


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp_path):
    config = smoke_config(train={"lr": 10.0, "steps": 20, "log_every": 1})
    with pytest.raises(TrainingDiverged, match=r"diverged at step \d+") as error:
        fit(config, out=tmp_path, progress=False, checkpoint_every=1)
    assert not (tmp_path / "summary.json").exists()
    kept = read_checkpoint(tmp_path / "checkpoint.pt").step
    assert f"last good checkpoint: step {kept} kept" in str(error.value)
    high = [r["step"] for r in load_history(tmp_path) if r["nats_per_token"] > limit(256)]
    assert kept <= high[0]  # no checkpoint of a model already above the limit


def test_a_diverged_model_never_claims_learned_routing():
    result = fit(smoke_config(train={"steps": 2}), progress=False)
    with torch.no_grad():
        for p in result.model.parameters():
            p.mul_(1e3)
    summary = summarise(result.config, result.model, result.guide, result.data, [])
    assert summary["diverged"] and not summary["routing_learned"]
    assert summary["verdict"].startswith("DIVERGED")
