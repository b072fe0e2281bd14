"""Routing models on MQAR, side by side: accuracy, counted cost, routing per class, uncertainty.

    python experiments/mqar_study.py --tag gate --models fixed-full fixed-local --seeds 3 --jobs 2
    python experiments/mqar_study.py --tag warmup --models compute-dirichlet cost-penalised@0.5 \\
        --set train.full_warmup=1000 --jobs 2
    python experiments/mqar_study.py --smoke --tag smoke --out /tmp/mqar   # tiny, for tests

Every model trains the `mqar` preset (T = 64, 4 pairs, w = 8; `config.mqar_config`) with SVI,
one thread per run, into OUT/<tag>/<model>/seed<k>/, and is scored on the fixed held-out
sequences: query accuracy soft and hard, counted hard cost (executed attention FLOPs over
all-full), argmax routing shares per token class and layer (key / value / query / other), KL and
epistemic uncertainty per class. A model is a prior name, optionally with its lambda:
`cost-penalised@0.5`. `--set SECTION.FIELD=VALUE` changes the config of every non-fixed model
(one change at a time against the same seeds). The gate (`--tag gate`) checks that the task
separates the references: fixed-full near 1, fixed-local near chance.

Writes RESULTS/mqar-<tag>.md, .json and -pareto.png (default experiments/results; smoke: --out).
A run folder holding `mqar_run.json` from the same config is reused, not retrained, and an
interrupted run continues from its last checkpoint, so an interrupted study resumes where it
stopped. `--combine TAG ...` trains nothing: it puts the rows
of earlier studies' JSON into one table and one Pareto plot (`tag:label,...` takes only those
models of a study; a model taken from two studies is labelled `model (tag)`):

    python experiments/mqar_study.py --tag front --combine gate full-warmup:none penalised
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pyro
import torch
from common import main_guard
from studies import (
    Study,
    finished,
    fmt,
    network_line,
    pareto,
    run_study,
    study_parser,
    write_study,
)

from pyro_meta_attention.analysis.evaluation import evaluate_policy
from pyro_meta_attention.analysis.routing_stats import class_shares, routing_stats
from pyro_meta_attention.analysis.uncertainty import posterior_samples, routing_uncertainty
from pyro_meta_attention.bayes.sites import routing_site
from pyro_meta_attention.config import MQAR_TASK, RunConfig, mqar_config, smoke_config
from pyro_meta_attention.data.mqar import CLASS_NAMES, QUERY
from pyro_meta_attention.data.sources import data_for, held_out_batches
from pyro_meta_attention.mechanisms import MECHANISMS
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.policies import Policy
from pyro_meta_attention.training.run_dir import write_json
from pyro_meta_attention.training.svi import fit

FULL = MECHANISMS.index("full")
RUN_FILE = "mqar_run.json"  # one run's scores, written beside its checkpoint


def class_layer_shares(alpha_bar: torch.Tensor, classes: torch.Tensor) -> list[dict[str, Any]]:
    """Per layer: argmax shares per class (alpha_bar [N, T, L, M], classes [N, T])."""
    L = alpha_bar.shape[2]
    return [class_shares(alpha_bar[:, :, l : l + 1], classes, CLASS_NAMES) for l in range(L)]


def run_one(
    label: str, config: RunConfig, out: Path, samples: int, tensorboard: Path | None = None
) -> dict[str, Any]:
    """Train one (model, seed) and score it on the held-out sequences (or reuse a finished run)."""
    done = finished(out, config, RUN_FILE)
    if done is not None:
        return {**done, "label": label, "reused": True}
    (out / RUN_FILE).unlink(missing_ok=True)  # a stale score must never pass for this run's
    t0 = time.perf_counter()
    result = fit(
        config, out=out, progress=False, existing="resume", tensorboard=tensorboard
    )  # an interrupted run goes on
    train_s = time.perf_counter() - t0
    model, guide = result.model.eval(), result.guide.eval()
    batches = held_out_batches(result.data, config)
    cost = cost_model_for(config.model)
    rows = {
        name: evaluate_policy(model, guide, batches, Policy(name), cost, 1, CLASS_NAMES)
        for name in ("soft", "hard")
    }
    x = torch.cat([b.x for b in batches])  # [N, T]
    classes = torch.cat([b.classes for b in batches]).long()  # [N, T]
    with torch.no_grad():
        stats = routing_stats(guide, x)
        alpha_bar = guide.posterior_mean(x)  # [N, T, L, M]
    top = alpha_bar.argmax(-1)  # [N, T, L]
    query = classes == QUERY
    pyro.set_rng_seed(config.train.seed)
    u = routing_uncertainty(posterior_samples(model, guide, x, samples))
    epistemic = torch.stack([u[routing_site(l)]["epistemic"] for l in range(top.shape[-1])])
    row = {
        "label": label,
        "model": config.prior.name,
        "strength": config.prior.strength,
        "seed": config.train.seed,
        "steps": config.train.steps,
        "accuracy_soft": rows["soft"]["val_accuracy"],
        "accuracy_hard": rows["hard"]["val_accuracy"],
        "answer_nats_hard": rows["hard"]["val_nats_per_token"],
        "counted_hard_cost": rows["hard"]["counted_cost"],
        "query_full_any_layer": float((top[query] == FULL).any(-1).double().mean()),
        "other_not_full": float((top[~query] != FULL).double().mean()),
        "kl": stats["kl"],
        "routing_share": stats["routing_share"],
        "class_layer_share": class_layer_shares(alpha_bar.cpu(), classes),
        "epistemic": {
            name: float(epistemic[:, classes == c].mean()) for c, name in enumerate(CLASS_NAMES)
        },
        "answers": rows["hard"]["val_tokens"],
        "train_s": train_s,
        "run_dir": str(out),
    }
    write_json(out / RUN_FILE, row)
    return row


def table(rows: list[dict[str, Any]], labels: list[str], chance: float) -> list[str]:
    keys = {
        "accuracy_hard": "hard accuracy",
        "accuracy_soft": "soft accuracy",
        "counted_hard_cost": "counted hard cost",
        "query_full_any_layer": "queries → full (any layer)",
        "other_not_full": "non-query pairs → local/linear",
        "kl": "KL nats/token",
    }
    lines = [
        "| model | seeds | " + " | ".join(keys.values()) + " | hard accuracy per seed |",
        "|---" * (len(keys) + 3) + "|",
    ]
    for label in labels:
        group = [r for r in rows if r["label"] == label]
        cells = [fmt([r[k] for r in group]) for k in keys]
        seeds = ", ".join(f"{r['accuracy_hard']:.3f}" for r in group)
        lines.append(f"| `{label}` | {len(group)} | " + " | ".join(cells) + f" | {seeds} |")
    lines += ["", f"Chance accuracy: 1 / value_vocab = {chance:.4f}.", ""]
    lines += ["Argmax share per class and layer (%, full / linear / local; mean over seeds):", ""]
    lines += ["| model | layer | " + " | ".join(CLASS_NAMES) + " | epistemic by class |"]
    lines += ["|---" * (len(CLASS_NAMES) + 3) + "|"]
    for label in labels:
        group = [r for r in rows if r["label"] == label]
        for layer in range(len(group[0]["class_layer_share"])):
            cells = []
            for name in CLASS_NAMES:
                shares = [r["class_layer_share"][layer][name]["argmax_share"] for r in group]
                mean = [statistics.fmean(s[m] for s in shares) for m in range(len(MECHANISMS))]
                cells.append(" / ".join(f"{100 * v:.0f}" for v in mean))
            epi = ", ".join(
                f"{n} {statistics.fmean(r['epistemic'][n] for r in group):.3f}" for n in CLASS_NAMES
            )
            lines.append(f"| `{label}` | {layer} | " + " | ".join(cells) + f" | {epi} |")
    return lines


def header(study: Study, task) -> list[str]:
    base = study.base
    return [
        f"# MQAR: {study.title}",
        "",
        f"- {network_line(study, 'mqar')}: {json.dumps(base.model.__dict__)}",
        f"- task: {json.dumps(task.record()['mqar'])}",
        f"- held-out: {base.train.val_batches} × {base.train.batch_size} fixed sequences, "
        "accuracy at the query positions",
        *study.details,
        "",
        "Regenerate:",
        "",
        "```bash",
        *study.commands,
        "```",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    a = study_parser(__doc__, "mqar").parse_args(argv)

    def base() -> RunConfig:
        if a.smoke:
            return smoke_config(data={"path": MQAR_TASK}, model={"token_shift": True})
        return mqar_config()

    study = run_study(a, "mqar_study.py", raw, base, run_one)
    task = data_for(study.base)
    lines = header(study, task)
    lines += table(study.rows, study.labels, task.config.chance)
    write_study(study, "mqar", a.tag, lines)
    pareto(
        study.rows,
        study.labels,
        study.results / f"mqar-{a.tag}-pareto.png",
        f"MQAR ({a.tag}): cost vs accuracy",
        "accuracy_hard",
        "held-out query accuracy, hard routing",
        (-0.03, 1.03),
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
