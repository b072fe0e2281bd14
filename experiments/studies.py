"""What the routing studies share: models named on the command line, one config per model and
seed, runs reused when finished, one thread per run in a process pool, mean ± sd cells, earlier
studies combined, and a Pareto plot.

Used by `mqar_study.py` (answer accuracy on MQAR) and `text_study.py` (nats on text); each owns
its scoring of one run (`score(label, config, out, samples) -> row`) and its table.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from common import UsageError, parse_set
from tqdm.auto import tqdm

from pyro_meta_attention.bayes.priors import PRIORS
from pyro_meta_attention.config import RunConfig
from pyro_meta_attention.training.run_dir import CONFIG_FILE

Row = dict[str, Any]
Score = Callable[..., Row]  # score(label, config, out, samples) -> one run's row


def parse_model(spec: str) -> tuple[str, dict[str, Any]]:
    """'cost-penalised@0.5' -> ('cost-penalised', {'strength': 0.5}); a plain prior name."""
    name, _, strength = spec.partition("@")
    if name not in PRIORS:
        raise UsageError(f"--models: unknown prior {name!r}; choose from {sorted(PRIORS)}")
    if not strength:
        return name, {}
    try:
        return name, {"strength": float(strength)}
    except ValueError:
        raise UsageError(f"--models {spec}: {strength!r} is not a number") from None


def configs_for(a, base: RunConfig) -> list[tuple[str, RunConfig]]:
    """(label, config) for every model x seed; --set applies to the non-fixed models."""
    changes = parse_set(a.set, base)
    runs = []
    for spec in a.models:
        name, prior = parse_model(spec)
        fixed = name.startswith("fixed-")
        for seed in range(a.seeds):
            config = base.override(prior={"name": name, **prior}, train={"seed": seed})
            runs.append((spec, config if fixed else config.override(**changes)))
    return runs


def finished(out: Path, config: RunConfig, run_file: str) -> Row | None:
    """The scores (`out/run_file`) of a finished run in `out` trained from `config`, else None."""
    try:
        row = json.loads((out / run_file).read_text())
        trained = json.loads((out / CONFIG_FILE).read_text())["config"]
    except (OSError, ValueError, KeyError):
        return None
    return row if trained == config.to_dict() else None


def _one_thread(score: Score, *args) -> Row:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two processes with two threads each ran ~20x slower here
    try:
        return score(*args)
    finally:
        torch.set_num_threads(threads)


def train_all(score: Score, args: list[tuple], jobs: int, progress: bool, desc: str) -> list[Row]:
    """score(*arg) for every arg, `jobs` at a time, one thread each; rows in input order."""
    rows: list[Row] = [{} for _ in args]
    with tqdm(total=len(args), desc=desc, disable=not progress) as bar:
        if jobs == 1:
            for i, arg in enumerate(args):
                rows[i] = _one_thread(score, *arg)
                bar.update()
            return rows
        with ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_one_thread, score, *arg): i for i, arg in enumerate(args)}
            for future in as_completed(futures):
                rows[futures[future]] = future.result()
                bar.update()
    return rows


def fmt(values: list[float | None], digits: int = 3) -> str:
    """'mean ± sd' over the values that are not None ('—' when none are)."""
    v = [x for x in values if x is not None]
    if not v:
        return "—"
    sd = f" ± {statistics.stdev(v):.{digits}f}" if len(v) > 1 else ""
    return f"{statistics.fmean(v):.{digits}f}" + sd


def combine(specs: list[str], results: Path, prefix: str) -> tuple[list[Row], dict[str, Any]]:
    """Rows of earlier studies (RESULTS/<prefix>-<tag>.json) with labels made unique, and records.

    A spec is a tag, or `tag:label,label` to take only those models of that study.
    """
    records, wanted = {}, {}
    for spec in specs:
        tag, _, labels = spec.partition(":")
        path = results / f"{prefix}-{tag}.json"
        try:
            records[tag] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"--combine {spec}: cannot read {path} ({type(e).__name__})") from None
        held = {r["label"] for r in records[tag]["runs"]}
        wanted[tag] = set(labels.split(",")) if labels else held
        if wanted[tag] - held:
            raise UsageError(f"--combine {spec}: {tag} holds only {sorted(held)}")
    picked = {t: [r for r in rec["runs"] if r["label"] in wanted[t]] for t, rec in records.items()}
    studies = Counter(label for t in picked for label in wanted[t])
    rows = [
        {**row, "label": row["label"] if studies[row["label"]] == 1 else f"{row['label']} ({tag})"}
        for tag, runs in picked.items()
        for row in runs
    ]
    return rows, records


def pareto(
    rows: list[Row], labels: list[str], path: Path, title: str, y: str, y_label: str, ylim=None
) -> None:
    """Counted hard cost vs row[y], one point per model (mean ± sd over seeds), seeds faint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def sd(v: list[float]) -> float:
        return statistics.stdev(v) if len(v) > 1 else 0.0

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in labels:
        group = [r for r in rows if r["label"] == label]
        xs = [r["counted_hard_cost"] for r in group]
        ys = [r[y] for r in group]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        ax.errorbar(mx, my, xerr=sd(xs), yerr=sd(ys), fmt="o", capsize=3, label=label)
        ax.scatter(xs, ys, s=8, alpha=0.4)
    ax.set_xlabel("counted hard cost (executed attention FLOPs / all-full)")
    ax.set_ylabel(y_label)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
