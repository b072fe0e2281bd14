"""The SVI loop and checkpoints: training reduces the loss, a checkpoint round-trips, an
interrupted run keeps what it trained."""

import pytest
import torch

from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.data.batches import sample_batch
from pyro_meta_attention.training.build import build, make_optimizer
from pyro_meta_attention.training.checkpoint import load_checkpoint, save_checkpoint
from pyro_meta_attention.training.svi import fit

B, T = 3, 32


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (2000,), generator=g, dtype=torch.uint8)
    return sample_batch(data, B, T, g)


def test_fifty_seeded_steps_reduce_the_loss():
    config = smoke_config(train={"steps": 50, "log_every": 10, "lr": 1e-2, "warmup": 5})
    result = fit(config, progress=False)
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    # from ~log(256) = 5.5 to the byte unigram regime (< 4 nats) within 50 steps
    assert first > 5.0 and last < first - 1.0
    assert result.summary["val_nats_per_token"] < 4.5


def test_checkpoint_round_trip(tmp_path):
    config = smoke_config(train={"steps": 2})
    result = fit(config, progress=False)
    path = tmp_path / "ck.pt"
    save_checkpoint(path, config, result.model, result.guide, step=2)
    config2, model2, guide2 = load_checkpoint(path)
    assert config2 == config
    x, _ = batch()
    assert torch.equal(guide2.concentration(x), result.guide.concentration(x))
    for p1, p2 in zip(model2.parameters(), result.model.parameters(), strict=True):
        assert torch.equal(p1, p2)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")


def test_interrupted_fit_keeps_a_checkpoint(tmp_path, stop_fit_at):
    stop_fit_at(3)
    with pytest.raises(KeyboardInterrupt):
        fit(smoke_config(), out=tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3
    assert not (tmp_path / "summary.json").exists()


def test_the_guide_learns_at_its_own_rate():
    config = smoke_config(train={"guide_lr_scale": 10.0})
    model, guide = build(config)
    guide_ids = {id(p) for p in guide.parameters()}
    for group in make_optimizer(model, guide, config).param_groups:
        (is_guide,) = {id(p) in guide_ids for p in group["params"]}  # a group is one or the other
        assert group["base_lr"] == config.train.lr * (10.0 if is_guide else 1.0)


def test_a_hierarchical_priors_routing_means_learn_at_their_own_rate():
    config = smoke_config(
        prior={"name": "hierarchical-dirichlet"},
        train={"guide_lr_scale": 2.0, "mean_lr_scale": 5.0},
    )
    model, guide = build(config)
    groups = make_optimizer(model, guide, config).param_groups
    (means,) = [g for g in groups if any(p is guide.mean_logits for p in g["params"])]
    assert means["params"] == [guide.mean_logits] and means["base_lr"] == config.train.lr * 10.0
    others = sum(len(g["params"]) for g in groups if g is not means)
    assert others == len(list(model.parameters())) + len(list(guide.parameters())) - 1


def test_warmup_nats_leave_out_the_penalty_that_the_loss_does_not_hold():
    config = smoke_config(
        prior={"name": "cost-penalised", "strength": 5.0}, train={"full_warmup": 6}
    )  # every smoke step is a warm-up step: the network runs all-full, no penalty in the loss
    rows = fit(config, progress=False).history
    assert rows
    for row in rows:
        assert row["penalty"] > 0  # the router's would-be penalty is still reported
        assert row["nats_per_token"] == pytest.approx(row["loss"])


def test_a_fixed_prior_is_never_warmed_up_on_full_attention():
    short = {"steps": 3, "log_every": 1, "val_batches": 1}
    config = smoke_config(prior={"name": "fixed-local"}, train=short)
    plain = fit(config, progress=False).history
    warmed = fit(config.override(train={"full_warmup": 3}), progress=False).history
    assert [r["loss"] for r in warmed] == [r["loss"] for r in plain]  # the same local model
    routed = smoke_config(train=short)  # a routed model is warmed up: other losses
    warm = fit(routed.override(train={"full_warmup": 3}), progress=False).history
    assert [r["loss"] for r in warm] != [r["loss"] for r in fit(routed, progress=False).history]
