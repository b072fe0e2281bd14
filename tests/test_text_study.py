"""experiments/text_study.py: a fixed-full run is scored again, not trained again, under a
config that differs only in what it never runs (the local window)."""

import json

from text_study import main

SMOKE = ["--smoke", "--no-progress", "--seeds", "1"]


def study(out, tag, *flags):
    argv = [*SMOKE, "--tag", tag, "--out", str(out), "--results", str(out), *flags]
    assert main(argv) == 0
    return {r["label"]: r for r in json.loads((out / f"text-{tag}.json").read_text())["runs"]}


def test_a_fixed_full_run_is_not_trained_again_for_another_window(tmp_path):
    models = ["--models", "fixed-full", "fixed-local"]
    first = study(tmp_path, "w8", *models)
    checkpoint = tmp_path / "w8" / "fixed-full" / "seed0" / "checkpoint.pt"
    before = checkpoint.read_bytes()
    second = study(tmp_path, "w4", *models, "--set", "model.window=4")
    full, local = second["fixed-full"], second["fixed-local"]
    assert full["run_dir"] == first["fixed-full"]["run_dir"]  # its weights, scored again
    assert full["nats_hard"] == first["fixed-full"]["nats_hard"]
    assert checkpoint.read_bytes() == before
    config = json.loads((tmp_path / "w4" / "fixed-full" / "seed0" / "config.json").read_text())
    assert config["trained_in"] == first["fixed-full"]["run_dir"]
    assert config["config"]["model"]["window"] == 4
    assert local["run_dir"].endswith("w4/fixed-local/seed0")  # a local model is trained anew
    assert local["nats_hard"] != first["fixed-local"]["nats_hard"]
    assert full["rescored"] and not local["rescored"]
    page = (tmp_path / "text-w4.md").read_text()
    assert '"window": 4' in page  # the preset line shows the network as trained (--set model.*)
    assert "1 runs trained, 0 reused, 1 scored again from another study's weights" in page
    assert json.loads((tmp_path / "text-w4.json").read_text())["config"]["model"]["window"] == 4
