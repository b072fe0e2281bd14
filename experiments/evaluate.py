"""Evaluate a checkpoint under routing policies; optionally sweep the soft-to-hard transition.

    python experiments/evaluate.py --checkpoint runs/default/checkpoint.pt
    python experiments/evaluate.py --checkpoint CK --policy soft hard threshold:0.5 budget:0.4
    python experiments/evaluate.py --checkpoint CK --sweep --out runs/default/eval
    python experiments/evaluate.py --smoke --sweep --out /tmp/eval

For each policy: held-out nats/token, the projected / counted / wall-clock costs, routing
shares and entropy (see pyro_meta_attention/evaluation.py). --sweep adds the transition curve
over uncertainty thresholds (transition.json and transition.png in --out).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from pyro_meta_attention.checkpoint import load_checkpoint, versions
from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.cost import cost_model_for
from pyro_meta_attention.data import CorpusError, load_corpus, val_windows
from pyro_meta_attention.evaluation import evaluate_policy, transition_curve
from pyro_meta_attention.infer import fit
from pyro_meta_attention.routing import parse_policy

THRESHOLDS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.01]


def plot_transition(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["threshold"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(t, [r["hard_fraction"] for r in rows], "o-", label="fraction hard")
    ax1.plot(t, [r["counted_cost"] for r in rows], "s-", label="counted cost (FLOPs / dense full)")
    ax1.plot(t, [r["wall_ratio"] for r in rows], "^-", label="wall-clock / dense full")
    ax1.axhline(
        rows[0]["projected_cost"], color="gray", ls="--", label="projected (paper's metric)"
    )
    ax1.set_xlabel("uncertainty threshold (normalised entropy of ᾱ)")
    ax1.set_ylabel("fraction / cost ratio")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.plot([r["counted_cost"] for r in rows], [r["val_nats_per_token"] for r in rows], "o-")
    for r in rows:
        ax2.annotate(
            f"{r['threshold']:g}", (r["counted_cost"], r["val_nats_per_token"]), fontsize=7
        )
    ax2.set_xlabel("counted attention cost (dense full = 1)")
    ax2.set_ylabel("held-out nats / token")
    ax2.set_title("loss vs counted cost (point labels: threshold)", fontsize=9)
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_rows(rows: list[dict]) -> None:
    head = f"{'policy':>16} {'nats/tok':>9} {'hard':>6} {'projected':>9} {'counted':>8} {'wall':>6}"
    print(head)
    for r in rows:
        print(
            f"{r['policy']:>16} {r['val_nats_per_token']:9.4f} {r['hard_fraction']:6.2f} "
            f"{r['projected_cost']:9.3f} {r['counted_cost']:8.3f} {r['wall_ratio']:6.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--data", default=None, help="default: the corpus the checkpoint trained on")
    p.add_argument("--policy", nargs="+", default=["soft", "hard"])
    p.add_argument("--sweep", action="store_true", help="transition curve over thresholds")
    p.add_argument(
        "--batches", type=int, default=None, help="held-out batches (default: as trained)"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed forwards per variant")
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--smoke", action="store_true", help="train a tiny model and evaluate it")
    a = p.parse_args(argv)
    try:
        policies = [parse_policy(s) for s in a.policy]
        if a.smoke:
            ck = Path(tempfile.mkdtemp()) / "smoke"
            fit(smoke_config(), out=ck, progress=False)
            a.checkpoint = str(ck / "checkpoint.pt")
        if a.checkpoint is None:
            raise ValueError("--checkpoint is required (or --smoke)")
        config, model, guide = load_checkpoint(a.checkpoint, map_location=a.device)
        data = a.data if a.data is not None else config.data.path
        corpus = load_corpus(
            data, config.model.block_size, config.data.max_bytes, config.data.val_fraction
        )
    except (CorpusError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model.eval()
    guide.eval()
    batches = [
        (x.to(a.device), y.to(a.device))
        for x, y in val_windows(
            corpus.val,
            config.train.batch_size,
            config.model.block_size,
            a.batches or config.train.val_batches,
        )
    ]
    cost_model = cost_model_for(config.model)
    rows = [evaluate_policy(model, guide, batches, pol, cost_model, a.repeats) for pol in policies]
    print_rows(rows)
    meta = {
        "checkpoint": a.checkpoint,
        "corpus": corpus.name,
        "corpus_sha256": corpus.sha256,
        "prior": config.prior.name,
        "batches": len(batches),
        "threads": torch.get_num_threads(),
        "versions": versions(),
    }
    out = Path(a.out) if a.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    if a.sweep:
        curve = transition_curve(model, guide, batches, cost_model, THRESHOLDS, a.repeats)
        print("\ntransition curve (threshold policies):")
        print_rows(curve)
        if out is not None:
            (out / "transition.json").write_text(
                json.dumps({**meta, "rows": curve}, indent=2) + "\n"
            )
            plot_transition(
                curve, out / "transition.png", f"Soft-to-hard transition ({config.prior.name})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
