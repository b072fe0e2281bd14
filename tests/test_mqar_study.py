"""experiments/mqar_study.py: finished runs are reused, not retrained; --combine merges studies."""

import json

import pytest
from common import UsageError
from mqar_study import RUN_FILE, main
from studies import combine, configs_for, finished, study_parser

from pyro_meta_attention.config import mqar_config

SMOKE = ["--smoke", "--no-progress", "--seeds", "1"]


def study(out, tag, *models):
    assert main([*SMOKE, "--tag", tag, "--models", *models, "--out", str(out)]) == 0
    return json.loads((out / f"mqar-{tag}.json").read_text())["runs"]


def test_a_finished_run_is_reused_and_a_changed_config_retrains(tmp_path):
    (first,) = study(tmp_path, "a", "fixed-local")
    run_dir = tmp_path / "a" / "fixed-local" / "seed0"
    assert (run_dir / RUN_FILE).is_file() and "reused" not in first
    (again,) = study(tmp_path, "a", "fixed-local")
    assert again["reused"] and again["accuracy_hard"] == first["accuracy_hard"]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    config["train"]["steps"] += 1  # as if the folder held another config's run
    (run_dir / "config.json").write_text(json.dumps({"config": config}))
    from pyro_meta_attention.config import RunConfig

    assert finished(run_dir, RunConfig.from_dict(config), RUN_FILE) is not None
    assert (
        finished(run_dir, RunConfig.from_dict(config).override(train={"seed": 1}), RUN_FILE) is None
    )
    (retrained,) = study(tmp_path, "a", "fixed-local")
    assert "reused" not in retrained


def test_combine_labels_a_model_by_its_study_when_two_studies_hold_it(tmp_path):
    study(tmp_path, "a", "fixed-local")
    study(tmp_path, "b", "fixed-local", "none")
    rows, records = combine(["a", "b"], tmp_path, "mqar")
    assert [r["label"] for r in rows] == ["fixed-local (a)", "fixed-local (b)", "none"]
    assert set(records) == {"a", "b"}
    assert main(["--tag", "ab", "--combine", "a", "b", "--results", str(tmp_path)]) == 0
    text = (tmp_path / "mqar-ab.md").read_text()
    assert "`fixed-local (a)`" in text and "--tag a " in text and "--tag b " in text
    assert "network of the first study combined" in text  # not passed off as every study's
    assert "preset `mqar` with --set, as trained" in (tmp_path / "mqar-a.md").read_text()
    rows, _ = combine(
        ["a", "b:none"], tmp_path, "mqar"
    )  # only b's `none`: fixed-local is a's alone
    assert [r["label"] for r in rows] == ["fixed-local", "none"]
    with pytest.raises(UsageError, match="--combine c"):
        combine(["c"], tmp_path, "mqar")
    with pytest.raises(UsageError, match="holds only"):
        combine(["b:fixed-full"], tmp_path, "mqar")


def test_set_changes_the_network_of_every_model_and_the_recipe_of_the_routers_only():
    a = study_parser("", "mqar").parse_args(
        ["--tag", "t", "--models", "fixed-linear", "none", "--seeds", "1", "--set"]
        + ["model.rope_linear=true", "train.full_warmup=5"]
    )
    (_, fixed), (_, router) = configs_for(a, mqar_config())
    assert fixed.model.rope_linear and router.model.rope_linear
    assert (fixed.train.full_warmup, router.train.full_warmup) == (0, 5)


def test_a_run_from_before_a_new_config_field_is_still_reused(tmp_path):
    """A field added to the config since a run was trained (here: guide.match_k,
    train.full_until) reads with its default: the run is reused, not retrained (and deleted)."""
    (first,) = study(tmp_path, "a", "fixed-local")
    path = tmp_path / "a" / "fixed-local" / "seed0" / "config.json"
    recorded = json.loads(path.read_text())
    del recorded["config"]["guide"]["match_k"], recorded["config"]["train"]["full_until"]
    path.write_text(json.dumps(recorded))
    (again,) = study(tmp_path, "a", "fixed-local")
    assert again["reused"] and again["accuracy_hard"] == first["accuracy_hard"]
