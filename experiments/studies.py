"""What the routing studies share: models named on the command line, one config per model and
seed, runs reused when finished, mean ± sd cells, earlier studies combined, and a Pareto plot;
the runs go through `runner.py` (a local process pool or Ray, one thread per run).

Used by `mqar_study.py` (answer accuracy on MQAR) and `text_study.py` (nats on text); each owns
its scoring of one run (`score(label, config, out, samples, tensorboard) -> row`), its base config and its
table; `study_parser` + `run_study` are the command line and the train-or-combine flow they share.
"""

from __future__ import annotations

import json
import platform
import shlex
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import (
    ArgumentParser,
    UsageError,
    add_set_flag,
    at_least,
    parse_set,
    tensorboard_folder,
)
from runner import run_calls

from pyro_meta_attention.bayes.priors import PRIORS
from pyro_meta_attention.config import RunConfig
from pyro_meta_attention.training.build import build
from pyro_meta_attention.training.run_dir import (
    CONFIG_FILE,
    SUMMARY_FILE,
    check_writable,
    versions,
    write_json,
    write_text,
)

Row = dict[str, Any]
Score = Callable[..., Row]  # score(label, config, out, samples, tensorboard) -> one run's row


def parse_model(spec: str) -> tuple[str, dict[str, Any]]:
    """'cost-penalised@0.5' -> ('cost-penalised', {'strength': 0.5}); 'fixed-layers@local,full'
    -> ('fixed-layers', {'layers': 'local,full'}); a plain prior name."""
    name, _, value = spec.partition("@")
    if name not in PRIORS:
        raise UsageError(f"--models: unknown prior {name!r}; choose from {sorted(PRIORS)}")
    if name == "fixed-layers":
        if not value:
            raise UsageError(
                f"--models {spec}: name each layer's mechanism: fixed-layers@local,full"
            )
        return name, {"layers": value}
    if not value:
        return name, {}
    try:
        return name, {"strength": float(value)}
    except ValueError:
        raise UsageError(f"--models {spec}: {value!r} is not a number") from None


def network_and_data(changes: dict[str, Any]) -> dict[str, Any]:
    """The --set changes every model takes: the network's (model.*) and the data's (data.*)."""
    return {k: v for k, v in changes.items() if k in ("model", "data")}


def configs_for(a, base: RunConfig) -> list[tuple[str, RunConfig]]:
    """(label, config) for every model x seed; --set applies to the non-fixed models, except
    that network and data changes (the model and data sections) apply to every model."""
    changes = parse_set(a.set, base)
    everyone = network_and_data(changes)
    runs = []
    for spec in a.models:
        name, prior = parse_model(spec)
        fixed = name.startswith("fixed-")
        for seed in range(a.seeds):
            config = base.override(prior={"name": name, **prior}, train={"seed": seed})
            runs.append((spec, config.override(**(everyone if fixed else changes))))
        build(runs[-1][1])  # a bad prior or guide setting fails here, before any run starts
    return runs


def finished(out: Path, config: RunConfig, run_file: str) -> Row | None:
    """The scores (`out/run_file`) of a finished run in `out` trained from `config`, else None
    (a config.json written before a field was added reads with the field's default)."""
    try:
        row = json.loads((out / run_file).read_text())
        trained = RunConfig.from_dict(json.loads((out / CONFIG_FILE).read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return row if trained == config else None  # parsed: a field added since has its default


def _training_key(config: RunConfig) -> dict[str, Any]:
    """What a run's training depends on: a fixed-full network never runs local or linear
    attention, so neither the local window nor the linear chunk changes one bit of it."""
    key = config.to_dict()
    if config.prior.name == "fixed-full":
        key["model"] = {**key["model"], "window": None, "chunk": None}
    return key


def trained_elsewhere(out: Path, config: RunConfig) -> Path | None:
    """A finished run folder of any study beside this one (OUT/<tag>/<model>/seed<k>) whose
    training is `config`'s (`_training_key`), to be scored again rather than trained again."""
    want = _training_key(config)
    for path in sorted(out.parents[2].glob(f"*/*/seed*/{CONFIG_FILE}")):
        folder = path.parent
        if folder == out or not (folder / SUMMARY_FILE).is_file():
            continue
        try:
            trained = RunConfig.from_dict(json.loads(path.read_text())["config"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if trained != config and _training_key(trained) == want:
            return folder
    return None


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


def study_parser(doc: str, prefix: str) -> ArgumentParser:
    """The flags every study takes; a study adds its own before parsing."""
    p = ArgumentParser(doc)
    p.add_argument("--tag", required=True, help=f"names the output files {prefix}-<tag>.*")
    p.add_argument("--models", nargs="+", default=["fixed-full", "fixed-local"])
    add_set_flag(p, "SECTION.FIELD=VALUE: non-fixed models; model.* and data.* all")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per model")
    p.add_argument("--steps", type=int, default=None, help="SVI steps (default: the preset's)")
    p.add_argument("--samples", type=int, default=8, help="posterior draws for the epistemic MI")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, one thread each")
    p.add_argument("--out", default=f"runs/{prefix}", help="run folders go to OUT/<tag>/")
    p.add_argument("--results", default=None, help="table folder (default experiments/results)")
    p.add_argument("--combine", nargs="+", metavar="TAG", help="tabulate earlier studies' rows")
    p.add_flags("smoke", "progress", "tensorboard", "runner")
    return p


@dataclass
class Study:
    """What a study trained (or combined), ready for its table and files."""

    base: RunConfig  # the config every model trained from: the preset with --set model.* data.*
    rows: list[Row]  # one per (model, seed), labelled
    labels: list[str]  # the models, in order
    title: str  # the table's title
    details: list[str]  # Markdown bullets: training and machine, or the studies combined
    commands: list[str]  # the commands that regenerate the table
    results: Path  # where RESULTS/<prefix>-<tag>.* go
    combined: bool = False  # rows taken from earlier studies (--combine), none trained here


def run_study(a, script: str, raw: list[str], base: Callable[[], RunConfig], score: Score) -> Study:
    """Check the shared flags, then train every (model, seed) from base() or --combine."""
    for flag in ("seeds", "steps", "jobs", "samples"):
        at_least(getattr(a, flag), 1, f"--{flag}")
    if not a.tag.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"--tag {a.tag!r}: use letters, digits, '-' and '_'")
    results = check_writable(
        a.results or (a.out if a.smoke else "experiments/results"), "--results"
    )
    results.mkdir(parents=True, exist_ok=True)
    prefix = script.removesuffix("_study.py")
    command = f"python experiments/{script} " + shlex.join(raw)
    if a.combine:
        rows, records = combine(a.combine, results, prefix)
        config = RunConfig.from_dict(next(iter(records.values()))["config"])
        title = f"{', '.join(a.combine)} combined ({a.tag})"
        details = [f"- from `{prefix}-{t}.md`: {r['command']}" for t, r in records.items()]
        commands = [r["command"] for r in records.values()] + [command]
    else:
        config = base()
        if a.steps:
            config = config.override(train={"steps": a.steps})
        root, board = Path(a.out) / a.tag, tensorboard_folder(a.tensorboard)
        runs = [(label, c, f"{label}/seed{c.train.seed}") for label, c in configs_for(a, config)]
        args = [
            (label, c, root / run, a.samples, None if board is None else board / a.tag / run)
            for label, c, run in runs
        ]
        t0 = time.perf_counter()
        rows = run_calls(
            score,
            args,
            a.jobs,
            a.backend,
            a.address,
            not a.no_progress,
            f"{prefix} runs",
            names=[run for *_, run in runs],
        )
        reused = sum(bool(r.get("reused")) for r in rows)
        rescored = sum(bool(r.get("rescored")) and not r.get("reused") for r in rows)
        trained = len(rows) - reused - rescored
        config = config.override(**network_and_data(parse_set(a.set, config)))  # as trained
        title = f"{', '.join(dict.fromkeys(a.models))} ({a.tag})"
        details = [
            f"- training: {config.train.steps} SVI steps, batch {config.train.batch_size}, "
            f"lr {config.train.lr}; --set {a.set or 'none'} (model.* and data.* for every "
            "model, the rest for the non-fixed ones)",
            f"- machine: CPU, {platform.machine()}, torch {torch.__version__}, one thread per "
            f"run; {trained} runs trained, {reused} reused, {rescored} scored again from another "
            f"study's weights, in "
            f"{(time.perf_counter() - t0) / 60:.1f} min with --jobs {a.jobs}"
            + ("" if a.backend == "local" else f" on {a.backend}"),
        ]
        commands = [command]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    return Study(config, rows, labels, title, details, commands, results, bool(a.combine))


def network_line(study: Study, preset: str) -> str:
    """What the header's network settings are: the preset as trained, or, for a combined
    study, the first study's (the others may differ: their --set is in their commands)."""
    if study.combined:
        return "network of the first study combined (each study's --set is in its command)"
    return f"preset `{preset}` with --set, as trained"


def write_study(study: Study, prefix: str, tag: str, lines: list[str]) -> None:
    """RESULTS/<prefix>-<tag>.md (the lines) and .json (command, config, versions, rows)."""
    write_text(study.results / f"{prefix}-{tag}.md", "\n".join(lines) + "\n")
    record = {
        "command": study.commands[-1],
        "config": study.base.to_dict(),
        "versions": versions(),
        "runs": study.rows,
    }
    write_json(study.results / f"{prefix}-{tag}.json", record)
