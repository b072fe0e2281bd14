"""Phase 1: every routing model, same network, data, steps and seeds; table, ablation, figures.

    python experiments/phase1/run.py                               # cpu budget, built-in corpus
    python experiments/phase1/run.py --data synthetic:recall       # routing-validity task
    python experiments/phase1/run.py --data ../shared/data/tinyshakespeare.txt
    python experiments/phase1/run.py --budget gpu --jobs 8         # larger model on a CUDA device
    python experiments/phase1/run.py --budget smoke --out /tmp/p1  # tiny, a few minutes
    python experiments/phase1/run.py --backend ray --address auto  # runs as tasks on a Ray cluster
    python experiments/phase1/run.py --rewrite results/phase1-recall.json  # its .md, no training

Runs go to OUT/<corpus-tag>/<model>/seed<k>/ and OUT/<corpus-tag>/ablation/lam<λ>-kap<κ>/seed<k>/
(each: config.json, metrics.jsonl, checkpoint.pt, summary.json, phase1_eval.json); a finished
run is reused, so an interrupted study resumes. The table goes to RESULTS/phase1-<tag>.md and
.json, the figures to FIGURES/phase1-<tag>-{shares,training,transition,pareto,tokens}.png
(default: results/ and figures/ beside this script). --rewrite renders the Markdown page of a
study again from its JSON record (after a change of report.py), training nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # experiments/: the scripts' shared `common` module

import torch
from common import ArgumentParser, at_least, main_guard, tensorboard_folder
from plots import pareto_figure, shares_figure, token_figure, training_figure, transition_figure
from report import PAPER, aggregate, results_markdown
from runner import run_calls
from study import (
    BUDGETS,
    MODELS,
    Budget,
    Run,
    corpus_tag,
    plan,
    run_one,
    token_map,
    transition_rows,
)

from pyro_meta_attention.data.corpus import Corpus
from pyro_meta_attention.data.sources import data_for
from pyro_meta_attention.training.run_dir import load_history, versions, write_text

DEFAULT_OUT = "runs/phase1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(__doc__)
    p.add_argument("--budget", default="cpu", choices=sorted(BUDGETS))
    p.add_argument(
        "--data", default=None, help="corpus file or synthetic:recall (default: built-in)"
    )
    p.add_argument("--out", default=DEFAULT_OUT, help="root of the run folders")
    p.add_argument(
        "--results", default=None, help="table folder (default: results/ here; smoke: --out)"
    )
    p.add_argument(
        "--figures", default=None, help="figure folder (default: figures/ here; smoke: --out)"
    )
    p.add_argument("--no-ablation", action="store_true", help="skip the λ × κ grid")
    p.add_argument(
        "--rewrite", default=None, metavar="JSON", help="only rewrite this record's .md beside it"
    )
    p.add_argument("--steps", type=int, default=None, help="override the budget's SVI steps")
    p.add_argument("--seeds", type=int, default=None, help="override the budget's seeds")
    p.add_argument("--models", nargs="+", default=None, help=f"a subset of {', '.join(MODELS)}")
    p.add_flags("progress", "tensorboard", "runner")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at once, one thread each (default 1; wall-clock ratios are then "
        "measured under each other's load)",
    )
    return p.parse_args(argv)


def machine(budget: Budget) -> str:
    if budget.device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"CPU, one thread per run, {platform.machine()}, torch {torch.__version__}"


def describe(
    budget: Budget, corpus: Corpus, command: str, rows: list[dict[str, Any]], wall_s: float
) -> dict[str, Any]:
    m = budget.model
    trained = sum(r.get("source") == "trained" for r in rows)
    return {
        "title": f"Phase 1 — routing models on `{corpus.name}` ({budget.name} budget)",
        "model": f"byte-level, T = {m.block_size}, C = {m.n_embd}, {m.n_layer} layers, "
        f"{m.n_head} heads, window {m.window}, linear chunk {m.chunk}",
        "data": f"`{corpus.name}`, {corpus.n_bytes:,} bytes (sha256 {corpus.sha256[:12]}…), "
        f"last 10% held out; evaluation on {budget.val_batches} × {budget.batch_size} windows",
        "training": f"{budget.steps} SVI steps, batch {budget.batch_size}, TraceMeanField_ELBO, "
        f"KL warm-up {budget.kl_anneal} steps",
        "seeds": f"{budget.seeds} per model, {budget.ablation_seeds} per ablation point",
        "machine": f"{machine(budget)}; {len(rows)} runs ({trained} trained now, the others "
        f"reused) in {wall_s / 60:.1f} min",
        "command": command,
    }


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    a = parse_args(raw)
    if a.rewrite is not None:
        return rewrite(Path(a.rewrite))
    budget = BUDGETS[a.budget]
    for flag in ("jobs", "steps", "seeds"):
        at_least(getattr(a, flag), 1, f"--{flag}")
    budget = replace(budget, steps=a.steps or budget.steps, seeds=a.seeds or budget.seeds)
    runs, skipped = plan(budget, a.data, ablation=not a.no_ablation, models=a.models)
    if budget.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("the gpu budget needs CUDA, but torch.cuda.is_available() is False")
    corpus = data_for(budget.config(MODELS["none"], 0, a.data))
    # A study that differs from the preset gets its own folders and file names.
    parts = [corpus_tag(a.data)]
    parts += [f"{a.steps}steps"] if a.steps else []
    parts += [f"{a.seeds}seeds"] if a.seeds else []
    tag = "-".join(parts + (a.models or []))
    smoke = a.budget == "smoke"
    root = Path(a.out) / tag
    results = Path(a.results or (a.out if smoke else HERE / "results"))
    figures = Path(a.figures or (a.out if smoke else HERE / "figures"))
    t0 = time.perf_counter()
    rows = run_all(runs, root, corpus, budget, a, f"phase1 {tag}")
    models = aggregate([r for r in rows if not r["ablation"]])
    ablation = aggregate([r for r in rows if r["ablation"]]) + skipped
    command = "python experiments/phase1/run.py " + shlex.join(
        x for x in raw if x != "--no-progress"
    )
    meta = describe(budget, corpus, command.strip(), rows, time.perf_counter() - t0)
    markdown = results_markdown(models, ablation, meta)
    results.mkdir(parents=True, exist_ok=True)
    write_text(results / f"phase1-{tag}.md", markdown)
    record = {
        "meta": meta,
        "versions": versions(),
        "budget": budget.name,
        "paper": PAPER,
        "models": models,
        "ablation": ablation,
        "runs": rows,
    }
    write_text(results / f"phase1-{tag}.json", json.dumps(record, indent=2) + "\n")
    make_figures(figures, tag, root, corpus, budget, models, ablation, a.models or list(MODELS))
    print(markdown)
    return 0


def rewrite(record_path: Path) -> int:
    """Render a study's Markdown page again from its JSON record, beside it."""
    try:
        record = json.loads(record_path.read_text())
        models, ablation, meta = record["models"], record["ablation"], record["meta"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--rewrite {record_path}: not a Phase-1 record ({e})") from None
    write_text(record_path.with_suffix(".md"), results_markdown(models, ablation, meta))
    print(f"rewrote {record_path.with_suffix('.md')}")
    return 0


def run_all(
    runs: list[Run], root: Path, corpus: Corpus, budget: Budget, a: argparse.Namespace, desc: str
) -> list[dict[str, Any]]:
    """`run_one` for every run through `runner.run_calls` (a local pool or Ray, one thread per
    run), rows in plan order. A failed run stops the study; finished runs stay reusable."""
    board = tensorboard_folder(a.tensorboard)
    calls = [
        (
            run.config,
            root / run.path,
            run.label,
            corpus,
            False,
            budget.samples,
            budget.repeats,
            None if board is None else board / root.name / run.path,
        )
        for run in runs
    ]
    names = [run.path for run in runs]
    rows = run_calls(
        run_one, calls, a.jobs, a.backend, a.address, not a.no_progress, desc, names=names
    )
    return [row | {"ablation": run.ablation} for row, run in zip(rows, runs, strict=True)]


def make_figures(
    figures: Path,
    tag: str,
    root: Path,
    corpus: Corpus,
    budget: Budget,
    models: list[dict[str, Any]],
    ablation: list[dict[str, Any]],
    labels: list[str],
) -> None:
    """The Phase-1 figures of the models in `labels` into `figures` as phase1-<tag>-<what>.png
    (the transition curve needs compute-dirichlet or none, the token map compute-dirichlet)."""
    figures.mkdir(parents=True, exist_ok=True)
    name = corpus.name

    def path(what: str) -> Path:
        return figures / f"phase1-{tag}-{what}.png"

    shares_figure(
        models, path("shares"), f"Argmax routing share per layer ({name}, mean over seeds)"
    )
    histories = {
        label: [load_history(root / label / f"seed{s}") for s in range(budget.seeds)]
        for label in MODELS
        if label in labels
    }
    training_figure(histories, path("training"), f"Routing during SVI ({name}, mean over seeds)")
    curves = {
        label: transition_rows(root / label / "seed0", corpus, budget.device)
        for label in ("compute-dirichlet", "none")
        if label in labels
    }
    if curves:
        title = f"Soft-to-hard transition ({name}, seed 0)"
        transition_figure(curves, path("transition"), title)
    pareto_figure(models, ablation, path("pareto"), f"Cost vs loss under hard routing ({name})")
    if "compute-dirichlet" in labels:
        run = root / "compute-dirichlet" / "seed0"
        tokens = token_map(run, corpus, samples=max(32, budget.samples))
        title = f"compute-dirichlet, seed 0: routing of held-out bytes ({name})"
        token_figure(tokens, path("tokens"), title)


if __name__ == "__main__":
    sys.exit(main_guard(main))
