"""Every experiments/ script's --smoke path, end to end, in a subprocess like a user runs it."""

import json

import pytest
import torch
from scripts import assert_one_line_error, corpus_file, run_script


@pytest.mark.parametrize("prior", ["compute-dirichlet", "none"])
def test_train_svi_smoke_writes_every_file(tmp_path, prior):
    out = tmp_path / prior
    proc = run_script(
        "train_svi.py", "--smoke", "--prior", prior, "--out", str(out), "--no-progress"
    )
    assert proc.returncode == 0, proc.stderr
    assert "val nats/token" in proc.stdout
    config = json.loads((out / "config.json").read_text())
    assert {"config", "seed", "versions", "corpus", "cost_model"} <= set(config)
    assert len(config["corpus"]["sha256"]) == 64
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows
    for row in rows:
        assert {"step", "loss", "nats_per_token", "kl", "routing_share", "routing_entropy"} <= set(
            row
        )
        assert len(row["routing_share"]) == 3 and 0.0 <= row["routing_entropy"] <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    keys = {"val_nats_per_token", "routing_share", "routing_entropy", "projected_hard_cost"}
    assert keys <= set(summary)
    assert 0.0 < summary["projected_hard_cost"] <= 1.0
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert {"model", "guide", "param_store", "config"} <= set(state)


@pytest.mark.parametrize("content", [None, b"", b"too short"])
def test_train_svi_bad_data_is_one_line_exit_2(tmp_path, content):
    path = corpus_file(tmp_path, content)
    proc = run_script("train_svi.py", "--smoke", "--data", str(path), "--out", str(tmp_path / "o"))
    assert_one_line_error(proc)
    assert "Traceback" not in proc.stderr


def test_train_svi_bad_kappa_is_one_line_exit_2(tmp_path):
    proc = run_script(
        "train_svi.py",
        "--smoke",
        "--prior",
        "sparse-dirichlet",
        "--kappa",
        "9",
        "--out",
        str(tmp_path / "o"),
    )
    assert proc.returncode == 2 and "kappa / M < 1" in proc.stderr


def test_bench_step_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script(
        "bench_step.py", "--smoke", "--steps", "2", "--warmup", "1", "--json", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["ratio_vs_none"] > 0 and set(result["median_step_s"]) == {
        "compute-dirichlet",
        "none",
        "plain-torch",
    }


def test_elbo_variance_smoke(tmp_path):
    out = tmp_path / "var.json"
    proc = run_script("elbo_variance.py", "--smoke", "--repeats", "3", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {(r["guide_init"], r["elbo"]) for r in rows} == {
        (i, e) for i in ("prior", "random") for e in ("trace", "meanfield")
    }
    assert all(r["total_variance"] >= 0 for r in rows)


def test_evaluate_smoke_with_sweep(tmp_path):
    out = tmp_path / "eval"
    proc = run_script(
        "evaluate.py",
        "--smoke",
        "--policy",
        "soft",
        "hard",
        "threshold:0.5",
        "budget:0.5",
        "--sweep",
        "--repeats",
        "1",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "evaluation.json").read_text())["rows"]
    assert [r["policy"] for r in rows] == ["soft", "hard", "threshold:0.5", "budget:0.5"]
    keys = {"val_nats_per_token", "projected_cost", "counted_cost", "wall_ratio", "hard_fraction"}
    for r in rows:
        assert keys <= set(r)
    soft, hard = rows[0], rows[1]
    assert soft["hard_fraction"] == 0.0 and hard["hard_fraction"] == 1.0
    assert hard["counted_cost"] < soft["counted_cost"]  # hard routing executes fewer FLOPs
    curve = json.loads((out / "transition.json").read_text())["rows"]
    fractions = [r["hard_fraction"] for r in curve]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (out / "transition.png").stat().st_size > 10_000


def test_evaluate_bad_inputs_exit_2(tmp_path):
    proc = run_script("evaluate.py", "--checkpoint", str(tmp_path / "missing.pt"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    proc = run_script("evaluate.py", "--smoke", "--policy", "sometimes")
    assert proc.returncode == 2 and "bad policy" in proc.stderr
