"""Evaluate a checkpoint under routing policies; optionally sweep the soft-to-hard transition.

    python experiments/evaluate.py --checkpoint runs/default/checkpoint.pt
    python experiments/evaluate.py --checkpoint CK --policy soft hard threshold:0.5 budget:0.4
    python experiments/evaluate.py --checkpoint CK --sweep --out runs/default/eval
    python experiments/evaluate.py --smoke --sweep --out /tmp/eval

For each policy: held-out nats/token and bits per byte (nats / ln 2), the projected / counted / wall-clock costs, routing
shares and entropy (see pyro_meta_attention/analysis/evaluation.py). --sweep adds the transition curve
over uncertainty thresholds (transition.json and transition.png in --out).

On text, every held-out position is classed by where the information that predicts its next
byte lives (pyro_meta_attention/analysis/repeats.py): a long-range repeat (the last --repeat-k
bytes occurred, with the same next byte, only beyond the local window), a short-range repeat, or
novel. Each policy then also reports each class's share, its nats/token and, per layer, its
argmax routing shares (class_share, class_nats, class_layer_share in evaluation.json). A task
with classes of its own (MQAR, recall) reports those instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from common import (
    ArgumentParser,
    UsageError,
    at_least,
    check_device,
    load_run,
    main_guard,
    out_folder,
    smoke_checkpoint,
)

from pyro_meta_attention.analysis.evaluation import evaluate_policy, transition_curve
from pyro_meta_attention.analysis.repeats import DEFAULT_K, REPEAT_CLASSES, with_repeat_classes
from pyro_meta_attention.data.sources import held_out_batches
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.policies import parse_policy
from pyro_meta_attention.training.run_dir import versions, write_json

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
    head = f"{'policy':>16} {'nats/tok':>9} {'bpb':>6} {'hard':>6} {'projected':>9} {'counted':>8}"
    head += f" {'wall':>6}"
    print(head)
    for r in rows:
        print(
            f"{r['policy']:>16} {r['val_nats_per_token']:9.4f} {r['val_bits_per_byte']:6.3f} "
            f"{r['hard_fraction']:6.2f} "
            f"{r['projected_cost']:9.3f} {r['counted_cost']:8.3f} {r['wall_ratio']:6.2f}"
        )


def print_classes(rows: list[dict]) -> None:
    """Per class: share of positions, nats/token per policy, argmax shares per layer."""
    names = list(rows[0]["class_nats"])
    shares = ", ".join(f"{n} {100 * rows[0]['class_share'][n]:.1f}%" for n in names)
    print(f"\nposition classes: {shares}")
    for r in rows:
        nats = ", ".join(
            f"{n} {'-' if r['class_nats'][n] is None else format(r['class_nats'][n], '.3f')}"
            for n in names
        )
        print(f"{r['policy']:>16}: nats/token {nats}")
        for layer, by_class in enumerate(r["class_layer_share"]):
            text = "; ".join(
                f"{n} " + "/".join(f"{100 * v:.0f}" for v in by_class[n]) for n in names
            )
            print(f"{'':>16}  layer {layer} argmax full/linear/local %: {text}")


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(__doc__)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--data", default=None, help="default: the corpus the checkpoint trained on")
    p.add_argument("--policy", nargs="+", default=["soft", "hard"])
    p.add_argument("--sweep", action="store_true", help="transition curve over thresholds")
    p.add_argument(
        "--batches", type=int, default=None, help="held-out batches (default: as trained)"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed forwards per variant")
    p.add_argument("--repeat-k", type=int, default=DEFAULT_K, help="bytes a repeat must share")
    p.add_argument("--out", default=None)
    p.add_flags("device", "smoke")
    a = p.parse_args(argv)
    policies = [parse_policy(s) for s in a.policy]
    at_least(a.batches, 1, "--batches")
    at_least(a.repeats, 1, "--repeats")
    check_device(a.device)
    out = out_folder(a.out)
    if a.smoke:
        a.checkpoint = str(smoke_checkpoint())
    if a.checkpoint is None:
        raise UsageError("--checkpoint is required (or --smoke)")
    config, model, guide, data = load_run(a.checkpoint, a.data, a.device)
    batches = held_out_batches(data, config, a.batches, a.device)
    class_names = data.class_names
    if class_names is None:  # text: the repeat class of every position
        if not 1 <= a.repeat_k <= 8:
            raise UsageError(f"--repeat-k must be in 1 .. 8, got {a.repeat_k}")
        batches = with_repeat_classes(batches, a.repeat_k, config.model.window)
        class_names = REPEAT_CLASSES
    cost_model = cost_model_for(config.model)
    rows = [
        evaluate_policy(model, guide, batches, pol, cost_model, a.repeats, class_names)
        for pol in policies
    ]
    print_rows(rows)
    print_classes(rows)
    meta = {
        "checkpoint": a.checkpoint,
        "corpus": data.name,
        "corpus_sha256": data.sha256,
        "prior": config.prior.name,
        "batches": len(batches),
        "threads": torch.get_num_threads(),
        "versions": versions(),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "evaluation.json", {**meta, "rows": rows})
    if a.sweep:
        curve = transition_curve(model, guide, batches, cost_model, THRESHOLDS, a.repeats)
        print("\ntransition curve (threshold policies):")
        print_rows(curve)
        if out is not None:
            write_json(out / "transition.json", {**meta, "rows": curve})
            plot_transition(
                curve, out / "transition.png", f"Soft-to-hard transition ({config.prior.name})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
