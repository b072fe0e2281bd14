"""The Phase-1 study: smoke budget end to end, resumability, aggregation, the recall task."""

import dataclasses
import json
import math
import subprocess
from pathlib import Path

import pytest
from report import PAPER, aggregate, results_markdown
from study import BUDGETS, MODELS, plan, run_one

from pyro_meta_attention.data.corpus import load_corpus

FIGURES = ("shares", "training", "transition", "pareto", "tokens")


@pytest.fixture(scope="session")
def phase1(run_script):
    """phase1(ARGS) runs experiments/phase1/run.py --no-progress ARGS."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return run_script("phase1/run.py", "--no-progress", *args)

    return run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, phase1) -> Path:
    out = tmp_path_factory.mktemp("phase1")
    proc = phase1("--budget", "smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_smoke_writes_table_json_and_figures(smoke):
    markdown = (smoke / "phase1-builtin.md").read_text()
    for name in MODELS:
        assert f"`{name}`" in markdown
    for numbers in PAPER.values():
        for value in numbers.values():
            assert f"{value:.3f}" in markdown
    assert "paper (projected, soft posterior)" in markdown
    assert "python experiments/phase1/run.py --budget smoke" in markdown
    assert "## Ablation" in markdown
    record = json.loads((smoke / "phase1-builtin.json").read_text())
    assert [r["label"] for r in record["models"]] == list(MODELS)
    assert len(record["ablation"]) == len(BUDGETS["smoke"].strengths)
    for row in record["models"]:
        assert row["n"] == BUDGETS["smoke"].seeds
        assert math.isfinite(row["val_nats_hard"]["mean"])
        assert abs(sum(row["routing_share"]["mean"]) - 1) < 1e-9
    for what in FIGURES:
        assert (smoke / f"phase1-builtin-{what}.png").stat().st_size > 20_000


def test_rewrite_renders_the_page_again_from_the_record(smoke, phase1):
    page = smoke / "phase1-builtin.md"
    written = page.read_text()
    page.unlink()
    proc = phase1("--rewrite", str(smoke / "phase1-builtin.json"))
    assert proc.returncode == 0, proc.stderr
    assert page.read_text() == written
    assert "val bpb, soft" in written and "nats / ln 2" in written


def test_second_run_reuses_every_run(smoke, phase1):
    checkpoints = sorted((smoke / "builtin").rglob("checkpoint.pt"))
    assert len(checkpoints) == len(MODELS) * BUDGETS["smoke"].seeds + 2
    before = {p: p.stat().st_mtime_ns for p in checkpoints}
    proc = phase1("--budget", "smoke", "--out", str(smoke))
    assert proc.returncode == 0, proc.stderr
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before
    runs = json.loads((smoke / "phase1-builtin.json").read_text())["runs"]
    assert {r["source"] for r in runs} == {"cached"}


def test_recall_task_reports_class_shares_with_two_jobs(tmp_path, phase1):
    args = ("--data", "synthetic:recall", "--no-ablation", "--out", str(tmp_path), "--jobs", "2")
    proc = phase1("--budget", "smoke", *args)
    assert proc.returncode == 0, proc.stderr
    assert "Routing by token class" in proc.stdout
    record = json.loads((tmp_path / "phase1-recall.json").read_text())
    assert record["ablation"] == []
    for row in record["models"]:
        shares = row["class_share"]
        assert set(shares) == {"other", "filler", "recall"}
        assert all(abs(sum(s["mean"]) - 1) < 1e-9 for s in shares.values() if s["tokens"])
    fixed = {r["label"]: r for r in record["models"]}["fixed-full"]["class_share"]
    assert fixed["recall"]["mean"] == [1.0, 0.0, 0.0]
    assert fixed["recall"]["nats_soft"]["mean"] == fixed["recall"]["nats_hard"]["mean"] > 0
    assert [(r["label"], r["seed"]) for r in record["runs"]] == [
        (label, seed) for label in MODELS for seed in range(BUDGETS["smoke"].seeds)
    ]


def test_a_custom_study_gets_its_own_names(tmp_path, phase1):
    args = ("--steps", "3", "--seeds", "1", "--models", "none", "fixed-full", "--no-ablation")
    proc = phase1("--budget", "smoke", "--out", str(tmp_path), *args)
    assert proc.returncode == 0, proc.stderr
    tag = "builtin-3steps-1seeds-none-fixed-full"
    record = json.loads((tmp_path / f"phase1-{tag}.json").read_text())
    assert [r["label"] for r in record["models"]] == ["none", "fixed-full"]
    assert "3 SVI steps" in record["meta"]["training"]
    assert sorted(p.parent.name for p in (tmp_path / tag).rglob("checkpoint.pt")) == ["seed0"] * 2
    assert (tmp_path / f"phase1-{tag}-transition.png").is_file()
    assert not (tmp_path / f"phase1-{tag}-tokens.png").exists()  # needs compute-dirichlet
    proc = phase1("--budget", "smoke", "--out", str(tmp_path), "--models", "bogus")
    assert proc.returncode == 2 and "unknown model" in proc.stderr


def test_a_run_on_other_data_is_not_reused(tmp_path, phase1):
    budget = BUDGETS["smoke"]
    config = budget.config(MODELS["none"], seed=0, data=None)
    corpus = load_corpus(None, budget.model.block_size, budget.max_bytes)
    other = dataclasses.replace(corpus, train=corpus.train.flip(0), sha256="0" * 64)
    sources = [
        run_one(config, tmp_path, corpus=c, samples=2, repeats=1)["source"]
        for c in (corpus, corpus, other)
    ]
    assert sources == ["trained", "cached", "trained"]


@pytest.mark.parametrize("content", [None, b""])
def test_bad_data_is_one_line_exit_2(tmp_path, content, phase1, corpus_file, one_line_error):
    path = corpus_file(content)
    proc = phase1("--budget", "smoke", "--data", str(path), "--out", str(tmp_path / "o"))
    one_line_error(proc)
    assert not (tmp_path / "o").exists()


def test_aggregate_mean_and_sample_sd():
    rows = [
        {
            "label": "a",
            "model": "a",
            "seed": s,
            "val_nats_soft": v,
            "kl": None,
            "routing_share": share,
            "layer_share": [share, share],
        }
        for s, v, share in (
            (0, 1.0, [1.0, 0.0, 0.0]),
            (1, 2.0, [0.0, 1.0, 0.0]),
            (2, 3.0, [0.5, 0.5, 0.0]),
        )
    ] + [{"label": "b", "model": "b", "seed": 0, "val_nats_soft": 4.0, "kl": 0.5}]
    a, b = aggregate(rows)
    assert (a["label"], a["n"], a["seeds"]) == ("a", 3, [0, 1, 2])
    assert a["val_nats_soft"] == {"mean": 2.0, "sd": 1.0, "n": 3}
    assert a["kl"] == {"mean": None, "sd": None, "n": 0}
    assert a["routing_share"]["mean"] == pytest.approx([0.5, 0.5, 0.0])
    assert a["routing_share"]["sd"] == pytest.approx([0.5, 0.5, 0.0])
    assert len(a["layer_share"]["mean"]) == 2
    assert b["val_nats_soft"] == {"mean": 4.0, "sd": None, "n": 1}
    assert b["kl"]["mean"] == 0.5 and b["routing_share"]["mean"] is None


def test_cpu_plan_skips_priors_below_the_floor():
    runs, skipped = plan(BUDGETS["cpu"], None)
    budget = BUDGETS["cpu"]
    assert len([r for r in runs if not r.ablation]) == len(MODELS) * budget.seeds
    # lambda = 4 with kappa = 0.5 puts full attention's concentration below the 0.03 floor
    assert [(s["strength"], s["concentration"]) for s in skipped] == [(4.0, 0.5)]
    assert all("floor" in s["skipped"] for s in skipped)
    grid = len(budget.strengths) * len(budget.concentrations)
    assert len({r.label for r in runs if r.ablation}) + len(skipped) == grid
    paths = [r.path for r in runs]
    assert len(set(paths)) == len(paths) and "ablation/lam0.5-kap3/seed0" in paths
    meta = {k: "x" for k in ("title", "model", "data", "training", "seeds", "machine", "command")}
    markdown = results_markdown([], skipped, meta)
    assert markdown.count("skipped:") == len(skipped)


def test_an_unfinished_checkpoint_is_resumed_and_gives_the_same_numbers(
    tmp_path, monkeypatch, stop_fit_at
):
    import shutil

    import pyro

    import pyro_meta_attention.training.svi as svi
    from pyro_meta_attention.training.checkpoint import read_checkpoint

    budget = BUDGETS["smoke"]
    config = budget.config(MODELS["compute-dirichlet"], seed=0, data=None)
    corpus = load_corpus(None, budget.model.block_size, budget.max_bytes)
    whole = run_one(config, tmp_path / "whole", corpus=corpus, samples=2, repeats=1)
    stop_fit_at(3)
    with pytest.raises(KeyboardInterrupt):
        svi.fit(config, out=tmp_path / "cut", progress=False, data=corpus)
    monkeypatch.undo()
    shutil.copy(tmp_path / "whole" / "summary.json", tmp_path / "cut")  # an older run's summary
    cut = run_one(config, tmp_path / "cut", corpus=corpus, samples=2, repeats=1)
    assert cut["source"] == "trained"
    assert read_checkpoint(tmp_path / "cut" / "checkpoint.pt").finished
    (tmp_path / "whole" / "phase1_eval.json").unlink()
    pyro.set_rng_seed(123)  # whatever the random state, the evaluation draws the same
    again = run_one(config, tmp_path / "whole", corpus=corpus, samples=2, repeats=1)
    assert again["source"] == "checkpoint"
    for key in ("val_nats_soft", "val_nats_hard", "epistemic", "kl", "routing_share"):
        assert cut[key] == whole[key] == again[key], key


def test_table_shows_bits_per_byte_beside_nats():
    ln2 = math.log(2)
    rows = [
        {"label": "m", "model": "m", "seed": s, "val_nats_soft": v * ln2}
        for s, v in ((0, 2.0), (1, 4.0))
    ]
    meta = {k: "x" for k in ("title", "model", "data", "training", "seeds", "machine", "command")}
    markdown = results_markdown(aggregate(rows), [], meta)
    # nats 2 ln 2 ± sqrt(2) ln 2 -> 3 ± sqrt(2) bits per byte
    assert f"| {3 * ln2:.3f} ± {math.sqrt(2) * ln2:.3f} | 3.000 ± 1.414 |" in markdown
