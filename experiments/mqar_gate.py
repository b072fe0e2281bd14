"""The MQAR sizing gate: do the reference models separate on the `mqar` preset?

    python experiments/mqar_gate.py                      # fixed-full and fixed-local, 3 seeds
    python experiments/mqar_gate.py --models fixed-full fixed-local fixed-linear --jobs 2
    python experiments/mqar_gate.py --smoke --out /tmp/gate   # tiny, for tests

Before any router is studied on MQAR the task must separate the references: `fixed-full` should
answer (query accuracy >= 0.99 in every seed) and `fixed-local` should stay near chance
(1 / value_vocab), since every query lies beyond the local window. Each (model, seed) trains the
preset with SVI (`training.svi.fit`) into OUT/<model>/seed<k>/ and is scored on the fixed
held-out sequences under hard routing (`analysis.evaluation.evaluate_policy`). The table goes
to RESULTS/mqar-gate.md and .json (default experiments/results; smoke: --out).
"""

from __future__ import annotations

import json
import multiprocessing
import platform
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from common import ArgumentParser, at_least, main_guard

from pyro_meta_attention.analysis.evaluation import evaluate_policy
from pyro_meta_attention.bayes.priors import PRIORS
from pyro_meta_attention.config import RunConfig, mqar_config, smoke_config
from pyro_meta_attention.data.mqar import MQAR_TASK
from pyro_meta_attention.data.sources import data_for, held_out_batches
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.policies import Policy
from pyro_meta_attention.training.run_dir import versions, write_json
from pyro_meta_attention.training.svi import fit


def run_one(config: RunConfig, out: Path) -> dict[str, Any]:
    """Train one (model, seed) and score it on the held-out sequences, soft and hard."""
    t0 = time.perf_counter()
    result = fit(config, out=out, progress=False)
    train_s = time.perf_counter() - t0
    model, guide = result.model.eval(), result.guide.eval()
    batches = held_out_batches(result.data, config)
    cost = cost_model_for(config.model)
    rows = {
        name: evaluate_policy(model, guide, batches, Policy(name), cost, repeats=1)
        for name in ("soft", "hard")
    }
    return {
        "model": config.prior.name,
        "seed": config.train.seed,
        "steps": config.train.steps,
        "accuracy_soft": rows["soft"]["val_accuracy"],
        "accuracy_hard": rows["hard"]["val_accuracy"],
        "answer_nats_hard": rows["hard"]["val_nats_per_token"],
        "counted_hard_cost": rows["hard"]["counted_cost"],
        "answers": rows["hard"]["val_tokens"],
        "train_s": train_s,
        "run_dir": str(out),
    }


def _one_thread_run(config: RunConfig, out: Path) -> dict[str, Any]:
    torch.set_num_threads(1)  # two processes with two threads each ran ~20x slower here
    return run_one(config, out)


def table(rows: list[dict[str, Any]], models: list[str], chance: float) -> list[str]:
    lines = [
        "| model | seeds | hard accuracy, mean ± sd | per seed | counted hard cost | train s/run |",
        "|---|---|---|---|---|---|",
    ]
    for m in models:
        group = [r for r in rows if r["model"] == m]
        acc = [r["accuracy_hard"] for r in group]
        sd = f" ± {statistics.stdev(acc):.3f}" if len(acc) > 1 else ""
        lines.append(
            f"| `{m}` | {len(group)} | {statistics.fmean(acc):.3f}{sd} | "
            + ", ".join(f"{a:.3f}" for a in acc)
            + f" | {statistics.fmean(r['counted_hard_cost'] for r in group):.3f} | "
            f"{statistics.fmean(r['train_s'] for r in group):.0f} |"
        )
    return lines + ["", f"Chance accuracy: 1 / value_vocab = {chance:.4f}."]


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    p = ArgumentParser(__doc__)
    p.add_argument("--models", nargs="+", default=["fixed-full", "fixed-local"])
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per model")
    p.add_argument("--steps", type=int, default=None, help="SVI steps (default: the preset's)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, one thread each")
    p.add_argument("--out", default="runs/mqar-gate", help="run folders")
    p.add_argument("--results", default=None, help="table folder (default experiments/results)")
    p.add_flags("smoke")
    a = p.parse_args(argv)
    unknown = sorted(set(a.models) - set(PRIORS))
    if unknown:
        p.error(f"--models: unknown prior(s) {unknown}; choose from {sorted(PRIORS)}")
    for flag in ("seeds", "steps", "jobs"):
        at_least(getattr(a, flag), 1, f"--{flag}")
    base = mqar_config()
    if a.smoke:
        base = smoke_config(data={"path": MQAR_TASK}, model={"token_shift": True})
    if a.steps:
        base = base.override(train={"steps": a.steps})
    configs = [
        base.override(prior={"name": m}, train={"seed": s})
        for m in a.models
        for s in range(a.seeds)
    ]
    outs = [Path(a.out) / c.prior.name / f"seed{c.train.seed}" for c in configs]
    t0 = time.perf_counter()
    if a.jobs == 1:
        rows = [run_one(c, o) for c, o in zip(configs, outs, strict=True)]
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(a.jobs, context) as pool:
            rows = list(pool.map(_one_thread_run, configs, outs))
    task = data_for(base)
    command = "python experiments/mqar_gate.py " + shlex.join(raw)
    lines = [
        "# MQAR sizing gate: do the reference models separate?",
        "",
        f"- preset: `mqar` — {json.dumps(base.model.__dict__)}",
        f"- task: {json.dumps(task.record()['mqar'])}",
        f"- training: {base.train.steps} SVI steps, batch {base.train.batch_size}, "
        f"lr {base.train.lr}; held-out: {base.train.val_batches} × {base.train.batch_size} "
        "fixed sequences, accuracy at the query positions",
        f"- machine: CPU, {platform.machine()}, torch {torch.__version__}; {len(rows)} runs in "
        f"{(time.perf_counter() - t0) / 60:.1f} min with --jobs {a.jobs}",
        "",
        "Regenerate:",
        "",
        "```bash",
        command.strip(),
        "```",
        "",
        *table(rows, a.models, task.config.chance),
    ]
    results = Path(a.results or (a.out if a.smoke else "experiments/results"))
    results.mkdir(parents=True, exist_ok=True)
    (results / "mqar-gate.md").write_text("\n".join(lines) + "\n")
    record = {"command": command, "config": base.to_dict(), "versions": versions(), "runs": rows}
    write_json(results / "mqar-gate.json", record)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
