"""Multi-process SVI (training/distributed.py): two gloo ranks started by torchrun hold the same
parameters after every step, and train exactly as one process on their concatenated batches.

float64 throughout, so that the only difference from the single process is the order of
floating-point sums (DDP averages two half-batch gradients; the reference differentiates the
whole-batch loss): losses and parameters agree to 1e-9, far below a step's change (~1e-3).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
from ddp_reference import PRIORS, WORLD, config_for, recorder
from test_tensorboard import scalar_tags

import pyro_meta_attention.training.svi as svi
from pyro_meta_attention.data.batches import Batch
from pyro_meta_attention.training.distributed import World, mean_across, rank_seed, shard

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(WORLD), str(HERE / "ddp_worker.py"), str(out)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def load(out: Path, prior: str, rank: int) -> dict:
    return torch.load(out / f"{prior}-rank{rank}.pt", weights_only=True)


@pytest.mark.parametrize("prior", PRIORS)
def test_both_ranks_hold_identical_parameters_after_every_step(ranks, prior):
    zero, one = load(ranks, prior, 0), load(ranks, prior, 1)
    steps = config_for(prior, per_rank=True).train.steps
    assert len(zero["params"]) == len(one["params"]) == steps
    for a, b in zip(zero["params"], one["params"], strict=True):
        assert torch.equal(a, b)
    assert zero["history"] == one["history"]  # the reduced loss and global statistics


def test_the_loss_is_one_process_on_the_concatenated_batch(ranks, monkeypatch):
    steps, recorded = recorder(svi._svi_step)
    monkeypatch.setattr(svi, "_svi_step", recorded)
    torch.set_default_dtype(torch.float64)
    try:
        reference = svi.fit(config_for("none", per_rank=False), progress=False)
    finally:
        torch.set_default_dtype(torch.float32)
    ddp = load(ranks, "none", 0)
    losses = [row["loss"] for row in ddp["history"]]
    assert losses == pytest.approx([row["loss"] for row in reference.history], rel=1e-9, abs=0)
    assert losses[0] != pytest.approx(losses[-1], rel=1e-3)  # it trained: the check has bite
    for a, b in zip(ddp["params"], steps, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("prior", PRIORS)
def test_rank_0_alone_writes_the_run_folder(ranks, prior):
    run = ranks / prior
    config = json.loads((run / "config.json").read_text())
    assert config["distributed"] == {"world_size": WORLD, "backend": "gloo"}
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [0, 1, 2, 3]  # once each, not once per rank
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == WORLD
    assert load(ranks, prior, 1)["summary"]["val_nats_per_token"] == summary["val_nats_per_token"]
    (events,) = (ranks / f"{prior}-tensorboard").iterdir()  # one event file: rank 0's
    assert events.name.startswith("events.out.tfevents")
    assert {"train/loss", "routing/local"} <= set(scalar_tags(events.parent))


def test_a_rank_trains_on_its_own_rows_of_the_global_batch():
    x = torch.arange(12).view(6, 2)
    batch = Batch(x, x + 1, x > 3, None)
    parts = [shard(batch, World(r, 3, r, "gloo")) for r in range(3)]
    assert torch.equal(torch.cat([p.x for p in parts]), x)
    assert torch.equal(parts[1].y, x[2:4] + 1) and torch.equal(parts[2].mask, x[4:] > 3)
    assert parts[0].classes is None
    with pytest.raises(ValueError, match="does not split"):
        shard(batch, World(0, 4, 0, "gloo"))


def test_rank_seeds_differ_and_rank_0_keeps_the_seed():
    seeds = {rank_seed(s, r) for s in (0, 1, 2**32 - 1) for r in range(4)}
    assert len(seeds) == 12 and rank_seed(7, 0) == 7
    pyro.set_rng_seed(0)  # leave the global state as the autouse fixture set it


def test_one_process_keeps_its_batch_and_loss():
    batch = Batch(torch.zeros(3, 2), torch.ones(3, 2))
    assert shard(batch, None) is batch
    assert mean_across(torch.tensor(1.25), None) == 1.25
