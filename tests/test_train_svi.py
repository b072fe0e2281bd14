"""experiments/train_svi.py: a preset's settings survive the flags the user did not give; a
torchrun launch with --distributed writes one run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from train_svi import config_from_args, parse_args

from pyro_meta_attention.config import PRESETS

ROOT = Path(__file__).resolve().parents[1]


def test_the_routing_recipe_preset_keeps_its_prior_and_schedule():
    config = config_from_args(parse_args(["--preset", "mqar-routing"]))
    assert config == PRESETS["mqar-routing"]()
    assert config.prior.strength == 0.5 and config.train.full_warmup == 1000
    assert (config.train.harden_final, config.train.harden_start) == (1.0, 1000)


def test_the_default_preset_is_the_routing_recipe():
    config = config_from_args(parse_args([]))
    assert config == PRESETS["default"]()
    assert (config.prior.name, config.prior.strength) == ("hierarchical-budget", 0.5)
    assert (config.train.full_until, config.train.harden_final) == ("evidence", 1.0)
    assert config.model == PRESETS["default"]().model and config.data.path is None
    smoke = config_from_args(parse_args(["--smoke"]))  # the smoke network, the recipe's routing
    assert smoke.prior == config.prior and smoke.train.full_until == "evidence"


def test_flags_and_set_override_the_preset():
    config = config_from_args(
        parse_args(["--preset", "mqar-routing", "--strength", "2", "--set", "train.kl_weight=0.5"])
    )
    assert config.prior.strength == 2.0 and config.train.kl_weight == 0.5
    assert config_from_args(parse_args([])) == PRESETS["default"]()


def test_the_text_preset_is_long_context_with_a_narrow_window(tmp_path):
    corpus = tmp_path / "c.txt"
    config = config_from_args(parse_args(["--preset", "text512", "--data", str(corpus)]))
    assert config.data.path == str(corpus) and config.model.token_shift
    assert (config.model.block_size, config.model.window) == (512, 32)
    assert config.override(data={"path": None}) == PRESETS["text512"]()


def test_torchrun_two_processes_write_one_run(tmp_path):
    """`torchrun --nproc_per_node 2 train_svi.py --distributed`: one run folder, one summary."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    command += ["2", str(ROOT / "experiments" / "train_svi.py"), "--distributed", "--smoke"]
    command += ["--no-progress", "--out", str(out)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("== summary") == 1 and "processes (DDP)         2" in proc.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "backend": "gloo"}
    steps = config["config"]["train"]["steps"]
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == steps - 1 and len({r["step"] for r in rows}) == len(rows)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == steps
