"""Every experiments/ script's --smoke path, end to end, as a user runs it (Pyro's convention:
one table of command lines, one parametrised test), and a check that the table is complete.

Each row may name a check of what the run wrote; "{out}" in a command is a fresh folder.
"""

import json
import math
import re
import shlex
from pathlib import Path

import pytest
import torch

from pyro_meta_attention.mechanisms import MECHANISMS

ROOT = Path(__file__).resolve().parents[1]


def check_train_run(out: Path, stdout: str) -> None:
    assert "val nats/token" in stdout
    config = json.loads((out / "run" / "config.json").read_text())
    assert {"config", "seed", "versions", "corpus", "cost_model"} <= set(config)
    assert len(config["corpus"]["sha256"]) == 64
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows
    for row in rows:
        assert {"step", "loss", "nats_per_token", "kl", "routing_share", "routing_entropy"} <= set(
            row
        )
        assert len(row["routing_share"]) == 3 and 0.0 <= row["routing_entropy"] <= 1.0
    summary = json.loads((out / "run" / "summary.json").read_text())
    keys = {"val_nats_per_token", "routing_share", "routing_entropy", "projected_hard_cost"}
    assert keys <= set(summary) and 0.0 < summary["projected_hard_cost"] <= 1.0
    bpb = summary["val_nats_per_token"] / math.log(2)  # a byte-level model: one token, one byte
    assert summary["val_bits_per_byte"] == pytest.approx(bpb, rel=1e-12)
    assert "val bits/byte" in stdout
    state = torch.load(out / "run" / "checkpoint.pt", weights_only=True)
    assert {"model", "guide", "optimizer", "rng", "corpus", "config", "step"} <= set(state)
    assert state["step"] == state["config"]["train"]["steps"]
    assert state["corpus"]["sha256"] == config["corpus"]["sha256"]


def check_evaluation(out: Path, stdout: str) -> None:
    rows = json.loads((out / "evaluation.json").read_text())["rows"]
    assert [r["policy"] for r in rows] == ["soft", "hard", "threshold:0.5", "budget:0.5"]
    keys = {"val_nats_per_token", "projected_cost", "counted_cost", "wall_ratio", "hard_fraction"}
    assert all(keys <= set(r) for r in rows)
    for r in rows:
        assert r["val_bits_per_byte"] == pytest.approx(r["val_nats_per_token"] / math.log(2))
    soft, hard = rows[0], rows[1]
    assert soft["hard_fraction"] == 0.0 and hard["hard_fraction"] == 1.0
    assert hard["counted_cost"] < soft["counted_cost"]  # hard routing executes fewer FLOPs
    for r in rows:  # text: every position classed by repeats (analysis/repeats.py)
        assert set(r["class_nats"]) == {"novel", "short-repeat", "long-repeat"}
        assert sum(r["class_share"].values()) == pytest.approx(1.0)
        assert len(r["class_layer_share"]) == 2  # smoke model: 2 layers
        assert all(sum(v) in (0, pytest.approx(1.0)) for v in r["class_layer_share"][0].values())
    assert "position classes: novel" in stdout
    curve = json.loads((out / "transition.json").read_text())["rows"]
    fractions = [r["hard_fraction"] for r in curve]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (out / "transition.png").stat().st_size > 10_000


def check_uncertainty(out: Path, stdout: str) -> None:
    assert "epistemic" in stdout and "most epistemic" in stdout
    written = json.loads((out / "uncertainty.json").read_text())
    assert written["config"]["samples"] == 4 and written["config"]["seed"] == 0
    assert len(written["report"]["layers"]) == 2
    token = written["report"]["most_epistemic"][0]
    assert "\n" not in token["context"] and len(token["byte"]) == 1


def check_bench_step(out: Path, stdout: str) -> None:
    result = json.loads((out / "bench.json").read_text())
    assert result["ratio_vs_none"] > 0
    names = {"compute-dirichlet", "none", "plain-torch"}
    names |= {"compute-dirichlet [learned]", "none [learned]"}
    assert set(result["median_step_s"]) == names and result["ratio_rotary_vs_learned"] > 0


def check_bench_ddp(out: Path, stdout: str) -> None:
    rows = json.loads((out / "ddp.json").read_text())["rows"]
    # one launch of one process (two processes: tests/test_train_svi.py and training/)
    assert [(r["processes"], r["windows_per_step"]) for r in rows] == [(1, 4)]
    assert all(r["median_step_s"] > 0 for r in rows)


def check_checkpoint_cost(out: Path, stdout: str) -> None:
    result = json.loads((out / "ck.json").read_text())
    assert set(result["median_step_s"]) == {"step", "step+checkpoint"}
    assert result["ratio_checkpoint"] > 0 and result["checkpoint_bytes"] > 10_000


def check_elbo_variance(out: Path, stdout: str) -> None:
    rows = json.loads((out / "var.json").read_text())["rows"]
    assert {(r["guide_init"], r["elbo"]) for r in rows} == {
        (i, e) for i in ("prior", "random") for e in ("trace", "meanfield")
    }
    assert all(r["total_variance"] >= 0 for r in rows)


def check_bench_hard_routing(out: Path, stdout: str) -> None:
    rows = json.loads((out / "bench.json").read_text())
    got = [(row["positions"], row["mix"], row["B"]) for row in rows]
    assert got == [(p, m, 2) for p in ("learned", "rope") for m in ("25/50/25", "0/50/50")]
    for row in rows:
        assert {"device", "T", "mix", "counted_cost_ratio", "wall_ratio", "efficiency"} <= set(row)
        assert row["efficiency"] == pytest.approx(row["counted_cost_ratio"] / row["wall_ratio"])
        assert all(f"ms_{m}" in row for m in MECHANISMS)
    assert rows[3]["ms_full"] == 0.0 and rows[3]["counted_full"] == 0.0
    assert (out / "bench.png").stat().st_size > 10_000


def check_bench_decode(out: Path, stdout: str) -> None:
    rows = json.loads((out / "bench.json").read_text())
    assert [(r["B"], r["variant"]) for r in rows] == [
        (B, v) for B in (1, 2) for v in ("dense", "25/50/25")
    ]
    for row in rows:
        assert row["efficiency"] == pytest.approx(
            row["counted_ratio"] / row["attention_wall_ratio"]
        )
        assert row["tokens_per_s"] > 0 and row["kv_cache_mb"] > 0
    dense, routed = rows[0], rows[1]
    assert dense["counted_ratio"] == 1.0 and dense["linear_state_mb"] == 0.0
    assert routed["linear_state_mb"] > 0 and routed["counted_ratio"] < 1.0
    assert (out / "bench.png").stat().st_size > 10_000


def check_phase1(out: Path, stdout: str) -> None:
    tag = "builtin-1seeds-fixed-local-none"
    record = json.loads((out / f"phase1-{tag}.json").read_text())
    assert [r["label"] for r in record["models"]] == ["none", "fixed-local"]
    assert (out / f"phase1-{tag}-shares.png").is_file()
    for model in ("fixed-local", "none"):  # --tensorboard: one event file per run
        assert list((out / "tb" / tag / model / "seed0").glob("events.out.tfevents.*"))


def check_bench_runner(out: Path, stdout: str) -> None:
    result = json.loads((out / "runner.json").read_text())
    assert result["runs"] == 2 and result["rows_identical"]
    assert result["local_wall_s"] > 0 and result["ray_wall_s"] > result["ray_startup_s"] > 0
    assert result["ray_worker_peak_mib"] > 50 and result["ray_processes_mib"] > 0


def check_mqar_study(out: Path, stdout: str) -> None:
    record = json.loads((out / "mqar-smoke.json").read_text())
    runs = record["runs"]
    assert [(r["label"], r["seed"]) for r in runs] == [
        ("fixed-local", 0),
        ("cost-penalised@0.5", 0),
    ]
    assert runs[1]["strength"] == 0.5 and runs[0]["counted_hard_cost"] < 1.0
    for run in runs:
        assert 0.0 <= run["accuracy_hard"] <= 1.0 and run["answers"] > 0
        assert set(run["class_layer_share"][0]) == {"other", "key", "value", "query"}
    assert record["config"]["train"]["full_warmup"] == 0  # --set touches non-fixed models only
    assert "Chance accuracy" in (out / "mqar-smoke.md").read_text()
    assert (out / "mqar-smoke-pareto.png").stat().st_size > 10_000


def check_text_study(out: Path, stdout: str) -> None:
    record = json.loads((out / "text-smoke.json").read_text())
    runs = record["runs"]
    assert [(r["label"], r["seed"]) for r in runs] == [("fixed-local", 0), ("compute-dirichlet", 0)]
    local, bayes = runs
    assert local["kl"] is None and local["counted_hard_cost"] < 1.0
    assert local["class_layer_share"][0]["novel"] == [0.0, 0.0, 1.0]  # local: every class local
    assert set(bayes["class_nats_hard"]) == {"novel", "short-repeat", "long-repeat"}
    assert "hard nats long-repeat" in (out / "text-smoke.md").read_text()
    assert bayes["kl"] >= 0 and bayes["model"] == "compute-dirichlet"
    for run in runs:
        assert run["nats_hard"] > 0 and run["tokens"] > 0 and len(run["layer_share"]) == 2
        assert abs(sum(run["layer_share"][0]) - 1) < 1e-9
    assert record["config"]["train"]["full_warmup"] == 0  # --set touches non-fixed models only
    assert runs[1]["run_dir"].endswith("seed0") and "hard bits/byte" in stdout
    assert (out / "text-smoke-pareto.png").stat().st_size > 10_000


def check_decision_price(out: Path, stdout: str) -> None:
    assert "ln 128 = 4.85 nats" in stdout
    (row,) = json.loads((out / "price.json").read_text())["rows"]
    assert (row["strength"], row["kappa"]) == (2.0, 3.0)
    low, high = (p["kl"] for p in row["prices"])
    assert 0 < low < high < 10  # routing with probability 0.9 costs more than with 0.5


def check_decision_price_layers(out: Path, stdout: str) -> None:
    """A trained smoke model's compute prior: the same price in both layers."""
    record = json.loads((out / "layers.json").read_text())
    assert [row["layer"] for row in record["rows"]] == [0, 1]
    first, second = ([p["kl"] for p in row["prices"]] for row in record["rows"])
    assert first == second and 0 < first[0] < first[1] < 10
    assert "prior compute-dirichlet (lambda 2)" in stdout


def check_generate(out: Path, stdout: str) -> None:
    """100 bytes from a model trained at block_size 32, keeping 16 keys."""
    assert stdout.startswith("import ") and "[100 bytes in" in stdout
    assert "route per token" in stdout and "epistemic mean" in stdout
    assert "after 106 positions" in stdout and "16 positions kept, max_context 16" in stdout
    assert (out / "stats.png").stat().st_size > 5_000


def check_bench_decode_trained(out: Path, stdout: str) -> None:
    """A smoke model (block_size 32) decodes at 64 and 128: routed and dense rows side by side."""
    record = json.loads((out / "trained.json").read_text())
    rows = record["rows"]
    assert [(r["context"], r["variant"]) for r in rows] == [
        (T, v) for T in (64, 128) for v in ("routed", "dense")
    ]
    for routed, dense in zip(rows[::2], rows[1::2], strict=True):
        assert dense["speedup"] == 1.0 and dense["step_route_share"] == [1.0, 0.0, 0.0]
        assert routed["speedup"] == pytest.approx(routed["tokens_per_s"] / dense["tokens_per_s"])
        assert 0 < routed["nats"] < 8 and 0 < dense["nats"] < 8
        assert abs(sum(routed["step_route_share"]) - 1) < 1e-9
    assert (out / "trained.png").stat().st_size > 10_000


def check_length_curve(out: Path, stdout: str) -> None:
    """Smoke: 2 windows of 2 x block_size; every variant has a bucket per 16 positions."""
    (curve,) = json.loads((out / "curve.json").read_text())["curves"]
    assert (curve["block_size"], curve["length"], curve["bucket"]) == (32, 64, 16)
    assert curve["starts"] == [0, 16, 32, 48]
    assert set(curve["variants"]) == {"soft", "hard", "all-full", "all-local", "full-windowed"}
    for v in curve["variants"].values():
        assert len(v["nats"]) == 4 and all(0 < n < 8 for n in v["nats"])
        assert v["beyond_training_length"] > 0
    assert "beyond" in stdout and (out / "curve.png").stat().st_size > 10_000


def check_token_gain(out: Path, stdout: str) -> None:
    """Smoke: two pairs of smoke models, the full seeds against each other, one router."""
    record = json.loads((out / "gain.json").read_text())
    assert record["price"]["gain"] > 0 and record["price"]["probability"] >= 0.5
    assert len(record["reference"]) == 2 and len(record["noise"]) == 1
    assert len(record["averaged"]) == 1 and len(record["within"]) == 1
    for block in ("reference", "noise", "averaged", "within"):
        for r in record[block]:
            routed = [o["routed"] for o in r["oracle"]]
            assert routed == sorted(routed, reverse=True)  # a higher tau routes fewer positions
            shares = [c["share"] for c in r["classes"].values()]
            assert sum(shares) == pytest.approx(1.0)
            assert set(r["predict"]) == {"auc", "base_rate", "precision_at_half_recall"}
    assert "break-even gain" in stdout and (out / "gain.png").stat().st_size > 10_000


def check_train_set(out: Path, stdout: str) -> None:
    check_train_run(out, stdout)
    config = json.loads((out / "run" / "config.json").read_text())["config"]
    assert config["train"]["full_warmup"] == 2 and config["train"]["kl_weight"] == 0.5


def check_demo_checkpoint(out: Path, stdout: str) -> None:
    """The smoke demo: only weights and config (no optimiser, random states or run id), and a
    record whose sha256 is the file's; `load_demo` reads it (HERE pointed at `out`)."""
    import pyro_meta_attention.demo as demo

    state = torch.load(out / "mqar-routing.pt", weights_only=True)
    assert set(state) == {"config", "step", "model", "guide", "corpus"}
    record = json.loads((out / "mqar-routing.json").read_text())
    assert record["sha256"] == demo.sha256(out / "mqar-routing.pt")
    assert record["command"].endswith("--smoke") and record["seed"] == 0
    assert "wrote" in stdout


EXAMPLES = [
    ("train_svi.py --smoke --no-progress --out {out}/run", check_train_run),
    ("train_svi.py --smoke --no-progress --prior none --out {out}/run", check_train_run),
    (
        "train_svi.py --smoke --no-progress --set train.full_warmup=2 train.kl_weight=0.5 "
        "--out {out}/run",
        check_train_set,
    ),
    (
        "evaluate.py --smoke --policy soft hard threshold:0.5 budget:0.5 --sweep --repeats 1 "
        "--out {out}",
        check_evaluation,
    ),
    ("uncertainty.py --smoke --samples 4 --out {out}", check_uncertainty),
    (
        "mqar_study.py --smoke --tag smoke --seeds 1 --models fixed-local cost-penalised@0.5 "
        "--set train.full_warmup=2 --out {out}",
        check_mqar_study,
    ),
    (
        "text_study.py --smoke --tag smoke --seeds 1 --models fixed-local compute-dirichlet "
        "--set train.full_warmup=2 --out {out}",
        check_text_study,
    ),
    (
        "bench_step.py --smoke --steps 2 --warmup 1 --compare-learned --json {out}/bench.json",
        check_bench_step,
    ),
    (
        "bench_step.py --smoke --checkpoint-cost --steps 2 --warmup 0 --json {out}/ck.json",
        check_checkpoint_cost,
    ),
    ("bench_ddp.py --smoke --processes 1 --steps 2 --json {out}/ddp.json", check_bench_ddp),
    ("bench_runner.py --smoke --json {out}/runner.json", check_bench_runner),
    ("elbo_variance.py --smoke --repeats 3 --json {out}/var.json", check_elbo_variance),
    ("decision_price.py --smoke --json {out}/price.json", check_decision_price),
    (
        "decision_price.py --smoke --checkpoint smoke --json {out}/layers.json",
        check_decision_price_layers,
    ),
    (
        "generate.py --smoke --max-new-tokens 100 --max-context 16 --temperature 0.8 --top-k 5 "
        "--policy budget:0.5 --stats --stats-png {out}/stats.png",
        check_generate,
    ),
    (
        "bench_hard_routing.py --smoke --batch 2 --mix 25/50/25 0/50/50 --positions learned rope "
        "--json {out}/bench.json --plot {out}/bench.png",
        check_bench_hard_routing,
    ),
    (
        "bench_decode.py --smoke --mix 25/50/25 --json {out}/bench.json --plot {out}/bench.png",
        check_bench_decode,
    ),
    (
        "bench_decode.py --smoke --checkpoint smoke --json {out}/trained.json "
        "--plot {out}/trained.png",
        check_bench_decode_trained,
    ),
    ("length_curve.py --smoke --json {out}/curve.json --plot {out}/curve.png", check_length_curve),
    ("token_gain.py --smoke --json {out}/gain.json --plot {out}/gain.png", check_token_gain),
    ("demo_checkpoint.py --smoke --no-progress --out {out}", check_demo_checkpoint),
    (
        "phase1/run.py --budget smoke --seeds 1 --models fixed-local none --no-ablation "
        "--no-progress --out {out} --tensorboard {out}/tb",
        check_phase1,
    ),
]


@pytest.mark.parametrize("command,check", EXAMPLES, ids=[c.split(" --")[0] for c, _ in EXAMPLES])
def test_example_smoke(command, check, tmp_path, run_script):
    script, *args = shlex.split(command.format(out=tmp_path))
    proc = run_script(script, *args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    check(tmp_path, proc.stdout)


def test_every_script_is_in_the_table():
    scripts = {
        str(p.relative_to(ROOT / "experiments"))
        for p in (ROOT / "experiments").rglob("*.py")
        if re.search(r'^if __name__ == "__main__":', p.read_text(), re.M)
    }
    listed = {command.split()[0] for command, _ in EXAMPLES}
    assert scripts == listed, f"missing from EXAMPLES: {sorted(scripts - listed)}"
