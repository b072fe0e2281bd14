"""experiments/text_study.py: a fixed-full run is scored again, not trained again, under a
config that differs only in what it never runs (the local window); where the references' gap
lies by repeat class."""

import json

import pytest
from text_study import gap_by_class, main

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


def reference(model, seed, nats, novel, long):
    """A scored row: 3/4 of the positions novel, 1/4 long repeats, none short."""
    share = {"novel": 0.75, "short-repeat": 0.0, "long-repeat": 0.25}
    per_class = {"novel": novel, "short-repeat": None, "long-repeat": long}  # None: no positions
    return {"label": model, "model": model, "seed": seed, "nats_hard": nats} | {
        "class_share": share,
        "class_nats_hard": per_class,
    }


def test_the_gap_splits_by_class_share_times_class_gap():
    # local − full: novel 0.2 (× 0.75 = 0.15), long 0.6 (× 0.25 = 0.15): half each; the totals
    # are the class-weighted sums (local 1.5 / 1.6, full 1.2 / 1.3)
    rows = [
        reference("fixed-local", 0, 1.5, 1.7, 0.9),
        reference("fixed-local", 1, 1.6, 1.8, 1.0),
        reference("fixed-full", 0, 1.2, 1.5, 0.3),
        reference("fixed-full", 1, 1.3, 1.6, 0.4),
    ]
    (line,) = [x for x in gap_by_class(rows, ["fixed-full", "fixed-local"]) if x]
    assert "gap (0.300 ± 0.000 nats/position, 2 seeds paired)" in line
    assert "novel 0.150 ± 0.000 (50 ± 0 %)" in line
    assert "short-repeat 0.000 ± 0.000 (0 ± 0 %)" in line
    assert "long-repeat 0.150 ± 0.000 (50 ± 0 %)" in line
    assert gap_by_class(rows[:2], ["fixed-local"]) == []  # one reference: nothing to split


@pytest.mark.parametrize("seeds", [(0,), (1,)])
def test_the_gap_pairs_only_seeds_both_references_have(seeds):
    rows = [reference("fixed-local", 0, 1.5, 1.7, 0.9), reference("fixed-local", 1, 1.6, 1.8, 1.0)]
    rows += [reference("fixed-full", s, 1.2, 1.5, 0.3) for s in seeds]
    (line,) = [x for x in gap_by_class(rows, ["fixed-full", "fixed-local"]) if x]
    assert "1 seeds paired" in line
