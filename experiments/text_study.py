"""Routing models on natural text, side by side: held-out nats soft and hard, counted cost,
routing per layer, KL and uncertainty — is the Bayesian hard model on the cost–loss front?

    python experiments/text_study.py --tag gate --models fixed-full fixed-local --jobs 2
    python experiments/text_study.py --tag recipe --models compute-dirichlet@0.5 \\
        --set train.full_warmup=750 train.harden_final=1.0 train.harden_start=750 \\
        train.harden_end=750 --jobs 2
    python experiments/text_study.py --smoke --tag smoke --out /tmp/text   # tiny, for tests

Every model trains the `text512` preset (T = 512, w = 32; `config.text_config`) on --data
(default ../shared/data/tinyshakespeare.txt) with SVI, one thread per run, into
OUT/<tag>/<model>/seed<k>/, and is scored on the held-out windows (the corpus's last 10%):
nats per token and bits per byte (nats / ln 2: one token is one byte) under soft routing
(posterior mean mixture) and hard routing (each token runs only its argmax mechanism), counted
hard cost (executed attention FLOPs over all-full), argmax routing shares per layer, KL, the
mean epistemic uncertainty and the `routing_learned` verdict, and per repeat class of the
held-out positions (novel, short-range or long-range repeat: pyro_meta_attention/analysis/
repeats.py) its share, its nats and its argmax routing per layer. Models, `--set`, run reuse and
`--combine` work as in `mqar_study.py` (`studies.py`).

Writes RESULTS/text-<tag>.md, .json and -pareto.png (default experiments/results; smoke: --out).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyro
import torch
from common import UsageError, main_guard
from studies import (
    finished,
    fmt,
    network_line,
    pareto,
    run_study,
    study_parser,
    trained_elsewhere,
    write_study,
)

from pyro_meta_attention.analysis.evaluation import evaluate_policy
from pyro_meta_attention.analysis.repeats import DEFAULT_K, REPEAT_CLASSES, with_repeat_classes
from pyro_meta_attention.analysis.routing_stats import routing_learned, routing_stats
from pyro_meta_attention.analysis.uncertainty import posterior_samples, routing_uncertainty
from pyro_meta_attention.bayes.sites import routing_site
from pyro_meta_attention.config import RunConfig, smoke_config, text_config
from pyro_meta_attention.data.sources import data_for, held_out_batches
from pyro_meta_attention.mechanisms import MECHANISMS
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.policies import Policy
from pyro_meta_attention.training.checkpoint import read_checkpoint, restore
from pyro_meta_attention.training.run_dir import CHECKPOINT_FILE, write_config, write_json
from pyro_meta_attention.training.svi import fit

RUN_FILE = "text_run.json"  # one run's scores, written beside its checkpoint
DEFAULT_DATA = "../shared/data/tinyshakespeare.txt"


def run_one(
    label: str, config: RunConfig, out: Path, samples: int, tensorboard: Path | None = None
) -> dict[str, Any]:
    """Train one (model, seed) and score it on the held-out windows (or reuse a finished run)."""
    done = finished(out, config, RUN_FILE)
    if done is not None:
        return {**done, "label": label, "reused": True}
    (out / RUN_FILE).unlink(missing_ok=True)  # a stale score must never pass for this run's
    t0 = time.perf_counter()
    elsewhere = trained_elsewhere(out, config)
    if elsewhere is None:
        result = fit(
            config, out=out, progress=False, existing="resume", tensorboard=tensorboard
        )  # a stopped run goes on
        model, guide, data = result.model, result.guide, result.data
    else:  # the same weights, scored under this config (its window's repeat classes)
        trained = read_checkpoint(elsewhere / CHECKPOINT_FILE)
        model, guide = restore(replace(trained, config=config))
        data = data_for(config)
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, config, {"trained_in": str(elsewhere)})
    train_s = time.perf_counter() - t0
    model, guide = model.eval(), guide.eval()
    batches = held_out_batches(data, config)
    batches = with_repeat_classes(batches, DEFAULT_K, config.model.window)
    cost = cost_model_for(config.model)
    rows = {
        name: evaluate_policy(model, guide, batches, Policy(name), cost, 1, REPEAT_CLASSES)
        for name in ("soft", "hard")
    }
    x = torch.cat([b.x for b in batches])  # [N, T]
    with torch.no_grad():
        alpha_bar = guide.posterior_mean(x)  # [N, T, L, M]
        stats = routing_stats(guide, x, alpha_bar)
    learned, verdict = routing_learned(stats, model.prior)
    pyro.set_rng_seed(config.train.seed)
    u = routing_uncertainty(posterior_samples(model, guide, x, samples))
    L = alpha_bar.shape[2]
    row = {
        "label": label,
        "model": config.prior.name,
        "strength": config.prior.strength,
        "seed": config.train.seed,
        "steps": config.train.steps,
        "nats_soft": rows["soft"]["val_nats_per_token"],
        "nats_hard": rows["hard"]["val_nats_per_token"],
        "counted_hard_cost": rows["hard"]["counted_cost"],
        "wall_ratio_hard": rows["hard"]["wall_ratio"],
        "layer_share": stats["layer_share"],
        "class_share": rows["hard"]["class_share"],
        "class_nats_soft": rows["soft"]["class_nats"],
        "class_nats_hard": rows["hard"]["class_nats"],
        "class_layer_share": rows["hard"]["class_layer_share"],
        "kl": stats["kl"],
        "argmax_differs": stats["argmax_differs"],
        "data_routed": stats["data_routed"],
        "flipped_tv": stats["flipped_tv"],
        "epistemic": [float(u[routing_site(l)]["epistemic"].mean()) for l in range(L)],
        "routing_learned": learned,
        "verdict": verdict,
        "tokens": rows["hard"]["val_tokens"],
        "train_s": train_s,
        "run_dir": str(out if elsewhere is None else elsewhere),
        "rescored": elsewhere is not None,  # another study's weights, scored under this config
    }
    write_json(out / RUN_FILE, row)
    return row


def table(rows: list[dict[str, Any]], labels: list[str]) -> list[str]:
    keys = {
        "nats_hard": "hard nats/token",
        "bpb_hard": "hard bits/byte",
        "nats_soft": "soft nats/token",
        "counted_hard_cost": "counted hard cost",
        "kl": "KL nats/token",
        "data_routed": "routed by data",
    }
    lines = [
        "| model | seeds | " + " | ".join(keys.values()) + " | learned | hard nats per seed |",
        "|---" * (len(keys) + 4) + "|",
    ]
    for label in labels:
        group = [
            r | {"bpb_hard": r["nats_hard"] / math.log(2)} for r in rows if r["label"] == label
        ]
        cells = [fmt([r.get(k) for r in group]) for k in keys]
        learned = f"{sum(r['routing_learned'] for r in group)}/{len(group)}"
        seeds = ", ".join(f"{r['nats_hard']:.3f}" for r in group)
        lines.append(
            f"| `{label}` | {len(group)} | " + " | ".join(cells) + f" | {learned} | {seeds} |"
        )
    lines += [
        "",
        "Argmax share per layer (%, full / linear / local; mean over seeds) and mean epistemic",
        "",
    ]
    lines += ["| model | layer | argmax share | epistemic |", "|---|---|---|---|"]
    for label in labels:
        group = [r for r in rows if r["label"] == label]
        for layer in range(len(group[0]["layer_share"])):
            share = [
                statistics.fmean(r["layer_share"][layer][m] for r in group)
                for m in range(len(MECHANISMS))
            ]
            epi = max(0.0, statistics.fmean(r["epistemic"][layer] for r in group))  # MI >= 0
            lines.append(
                f"| `{label}` | {layer} | "
                + " / ".join(f"{100 * v:.0f}" for v in share)
                + f" | {epi:.3f} |"
            )
    return lines + class_table(rows, labels)


def class_table(rows: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """Per repeat class (`analysis/repeats.py`, k = DEFAULT_K): hard nats and, per layer, the
    share of the class's positions whose argmax is full. Rows of studies made before the
    classes existed show no values."""
    have = [r for r in rows if "class_nats_hard" in r]
    if not have:
        return []
    share = ", ".join(
        f"{name} {100 * statistics.fmean(r['class_share'][name] for r in have):.1f} %"
        for name in REPEAT_CLASSES
    )
    lines = [
        "",
        f"Held-out positions by repeat class (k = {DEFAULT_K} bytes; analysis/repeats.py): {share}.",
        "Hard nats per class, per layer the share of each class's positions routed full (argmax,",
        "%; for long repeats: the recall of full routing), and per layer the precision: the share",
        "of full-routed positions that are repeats, short or long (—: none routed full):",
        "",
        "| model | " + " | ".join(f"hard nats {n}" for n in REPEAT_CLASSES)
        + " | → full per layer, " + " / ".join(REPEAT_CLASSES) + " | precision per layer |",
        "|---" * (len(REPEAT_CLASSES) + 3) + "|",
    ]  # fmt: skip
    for label in labels:
        group = [r for r in rows if r["label"] == label]
        if "class_nats_hard" not in group[0]:
            lines.append(f"| `{label}` |" + " — |" * (len(REPEAT_CLASSES) + 2))
            continue
        cells = [fmt([r["class_nats_hard"][n] for r in group]) for n in REPEAT_CLASSES]
        full = [
            " / ".join(
                f"{100 * statistics.fmean(r['class_layer_share'][layer][n][0] for r in group):.0f}"
                for n in REPEAT_CLASSES
            )
            for layer in range(len(group[0]["class_layer_share"]))
        ]
        precision = "; ".join(
            full_precision(group, layer) for layer in range(len(group[0]["class_layer_share"]))
        )
        lines.append(
            f"| `{label}` | " + " | ".join(cells) + " | " + "; ".join(full) + f" | {precision} |"
        )
    return lines + gap_by_class(rows, labels)


def gap_by_class(rows: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """Where the fixed-local − fixed-full gap lies: per class, share × (local − full) nats of
    the class, paired by seed (the first fixed-full and fixed-local models shown), in nats per
    held-out position and as a share of the whole gap. Empty without both references."""
    first = {}
    for label in labels:
        group = [r for r in rows if r["label"] == label and "class_nats_hard" in r]
        if group and group[0]["model"] in ("fixed-full", "fixed-local"):
            first.setdefault(group[0]["model"], {r["seed"]: r for r in group})
    if len(first) < 2:
        return []
    seeds = sorted(set(first["fixed-full"]) & set(first["fixed-local"]))
    pairs = [(first["fixed-local"][s], first["fixed-full"][s]) for s in seeds]
    if not pairs:
        return []
    gap = [local["nats_hard"] - full["nats_hard"] for local, full in pairs]
    parts = []
    for n in REPEAT_CLASSES:
        nats = [  # a class with no positions (nats None) holds none of the gap
            full["class_share"][n] * (local["class_nats_hard"][n] - full["class_nats_hard"][n])
            if full["class_share"][n]
            else 0.0
            for local, full in pairs
        ]
        share = [100 * v / g if g else None for v, g in zip(nats, gap, strict=True)]
        parts.append(f"{n} {fmt(nats)} ({fmt(share, 0)} %)")
    return [
        "",
        f"Where the fixed-local − fixed-full gap ({fmt(gap)} nats/position, {len(pairs)} seeds "
        "paired) lies, per class: the class's share of positions × its local − full nats: "
        + "; ".join(parts)
        + ".",
    ]


def full_precision(group: list[dict[str, Any]], layer: int) -> str:
    """Mean over seeds of the share of a layer's full-routed positions that are repeats (short
    or long), in %; "—" when no seed routed any position full."""
    values = []
    for r in group:
        routed = {
            n: r["class_share"][n] * r["class_layer_share"][layer][n][0] for n in REPEAT_CLASSES
        }
        total = sum(routed.values())
        if total > 0:
            values.append((routed["short-repeat"] + routed["long-repeat"]) / total)
    return "—" if not values else f"{100 * statistics.fmean(values):.0f}"


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    p = study_parser(__doc__, "text")
    p.add_argument(
        "--data", help=f"text file, or 'builtin' (default {DEFAULT_DATA}; smoke: built-in)"
    )
    a = p.parse_args(argv)

    def base() -> RunConfig:
        data = a.data if a.data is not None else (None if a.smoke else DEFAULT_DATA)
        data = None if data == "builtin" else data
        if data is not None and not Path(data).is_file():
            raise UsageError(f"--data {data}: no such file")
        return (smoke_config() if a.smoke else text_config()).override(data={"path": data})

    study = run_study(a, "text_study.py", raw, base, run_one)
    c = study.base
    sha = data_for(c).record().get("sha256", "?")[:12]
    lines = [
        f"# Text: {study.title}",
        "",
        f"- {network_line(study, 'text512')}: {json.dumps(c.model.__dict__)}",
        f"- corpus: {c.data.path or 'built-in'} (sha256 {sha}…), held-out: "
        f"{c.train.val_batches} × {c.train.batch_size} windows of the last "
        f"{100 * c.data.val_fraction:.0f}%",
        *study.details,
        "",
        "Regenerate:",
        "",
        "```bash",
        *study.commands,
        "```",
        "",
        *table(study.rows, study.labels),
    ]
    write_study(study, "text", a.tag, lines)
    pareto(
        study.rows,
        study.labels,
        study.results / f"text-{a.tag}-pareto.png",
        f"{Path(c.data.path).name if c.data.path else 'built-in corpus'} ({a.tag}): "
        "cost vs held-out nats",
        "nats_hard",
        "held-out nats/token, hard routing",
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
