"""Phase-1 figures (matplotlib, Agg): shares, training curves, transition, Pareto, token map.

Each function takes plain data (aggregated rows from `report.aggregate`, metrics.jsonl rows,
transition rows, a `study.token_map` dict) and writes one titled PNG.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from pyro_meta_attention.mechanisms import MECHANISMS  # noqa: E402

COLORS = {"full": "#d62728", "linear": "#1f77b4", "local": "#2ca02c"}
MODEL_STYLE = {
    "compute-dirichlet": ("#9467bd", "o"),
    "none": ("#ff7f0e", "s"),
    "symmetric-dirichlet": ("#8c564b", "D"),
    "fixed-full": (COLORS["full"], "^"),
    "fixed-linear": (COLORS["linear"], "v"),
    "fixed-local": (COLORS["local"], "<"),
}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def shares_figure(models: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Stacked argmax shares per layer (one bar per layer, grouped by model), mean over seeds."""
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(models) * 2), 4.5))
    ticks, labels = [], []
    for i, row in enumerate(models):
        layers = row["layer_share"]["mean"]  # [L][M]
        for layer, shares in enumerate(layers):
            x = i * (len(layers) + 1) + layer
            bottom = 0.0
            for m, share in zip(MECHANISMS, shares, strict=True):
                ax.bar(x, 100 * share, bottom=bottom, color=COLORS[m], edgecolor="white", width=0.9)
                bottom += 100 * share
            ticks.append(x)
            labels.append(f"L{layer}")
        ax.text(
            i * (len(layers) + 1) + (len(layers) - 1) / 2,
            103,
            row["label"],
            ha="center",
            fontsize=8,
        )
    ax.set_xticks(ticks, labels, fontsize=7)
    ax.set_ylim(0, 112)
    ax.set_ylabel("tokens whose argmax ᾱ is the mechanism (%)")
    ax.set_xlabel("model / layer")
    ax.legend(handles=[Patch(color=COLORS[m], label=m) for m in MECHANISMS], loc="lower right")
    ax.set_title(title)
    return _save(fig, path)


def _mean_curve(runs: list[list[dict[str, Any]]], key: str) -> tuple[list[int], list[float]]:
    """Mean over seeds of `key` per logged step (steps present in every run, None skipped)."""
    by_step: dict[int, list[float]] = {}
    for history in runs:
        for row in history:
            if row.get(key) is not None:
                by_step.setdefault(row["step"], []).append(float(row[key]))
    steps = sorted(s for s, v in by_step.items() if len(v) == len(runs))
    return steps, [statistics.fmean(by_step[s]) for s in steps]


def training_figure(
    histories: dict[str, list[list[dict[str, Any]]]], path: Path, title: str
) -> Path:
    """Routing entropy and KL(q‖p) over SVI steps, mean over seeds, one line per model."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, runs in histories.items():
        color, marker = MODEL_STYLE.get(label, ("black", "."))
        steps, entropy = _mean_curve(runs, "routing_entropy")
        ax1.plot(steps, entropy, color=color, label=label, marker=marker, markevery=0.1, ms=4)
        points = [(s, k) for s, k in zip(*_mean_curve(runs, "kl"), strict=True) if k > 1e-8]
        if points:  # KL is None without a proper prior, and ~0 at step 0 (q starts at p)
            steps, kl = zip(*points, strict=True)
            ax2.plot(steps, kl, color=color, label=label, marker=marker, markevery=0.1, ms=4)
    ax1.set_ylabel("routing entropy H(ᾱ) / log M (training batch)")
    ax2.set_ylabel("KL(q‖p), nats per token (all layers)")
    ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.set_xlabel("SVI step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax2.set_title("KL (models with a proper prior only)", fontsize=9)
    fig.suptitle(title)
    return _save(fig, path)


def transition_figure(curves: dict[str, list[dict[str, Any]]], path: Path, title: str) -> Path:
    """Fraction hard, counted cost and held-out loss vs the uncertainty threshold, per model."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    panels = [
        ("hard_fraction", "fraction of tokens routed hard"),
        ("counted_cost", "counted attention cost (dense full = 1)"),
        ("val_nats_per_token", "held-out nats / token"),
    ]
    for ax, (key, ylabel) in zip(axes, panels, strict=True):
        for label, rows in curves.items():
            color, marker = MODEL_STYLE.get(label, ("black", "."))
            ax.plot(
                [r["threshold"] for r in rows],
                [r[key] for r in rows],
                marker=marker,
                color=color,
                label=label,
            )
        ax.set_xlabel("uncertainty threshold (normalised entropy of ᾱ)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def pareto_figure(
    models: list[dict[str, Any]], ablation: list[dict[str, Any]], path: Path, title: str
) -> Path:
    """Counted hard cost vs hard held-out loss: the λ × κ grid and the models, ± sd over seeds."""
    fig, ax = plt.subplots(figsize=(8, 5.5))

    def point(row: dict[str, Any], **style: Any) -> None:
        x, y = row["counted_hard_cost"], row["val_nats_hard"]
        ax.errorbar(x["mean"], y["mean"], xerr=x["sd"], yerr=y["sd"], capsize=3, ls="none", **style)

    grid = [r for r in ablation if "skipped" not in r]
    for i, row in enumerate(grid):
        point(row, marker="x", color="gray", label="compute-dirichlet grid" if i == 0 else None)
        ax.annotate(
            f"λ={row['strength']:g}, κ={row['concentration']:g}",
            (row["counted_hard_cost"]["mean"], row["val_nats_hard"]["mean"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
            color="dimgray",
        )
    for row in models:
        color, marker = MODEL_STYLE.get(row["label"], ("black", "."))
        point(row, marker=marker, color=color, ms=8, label=row["label"])
    ax.set_xlabel("counted hard attention cost (executed FLOPs / dense causal full)")
    ax.set_ylabel("held-out nats / token, hard routing")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def token_figure(tokens: dict[str, Any], path: Path, title: str, layers: int = 2) -> Path:
    """Bytes of a held-out sample coloured by layer argmax ᾱ, opacity 1 - epistemic / max."""
    shown = min(layers, len(tokens["argmax"]))
    text = tokens["text"]  # [rows][cols]
    rows, cols = len(text), len(text[0])
    peak = max(max(max(r) for r in tokens["epistemic"][layer]) for layer in range(shown)) or 1.0
    height = 0.45 * rows * shown + 2.2
    fig, axes = plt.subplots(shown, 1, figsize=(max(8, 0.22 * cols), height))
    axes = [axes] if shown == 1 else list(axes)
    for layer, ax in enumerate(axes):
        for i in range(rows):
            for j in range(cols):
                mech = tokens["mechanisms"][tokens["argmax"][layer][i][j]]
                alpha = max(0.15, 1.0 - tokens["epistemic"][layer][i][j] / peak)
                ax.add_patch(plt.Rectangle((j, i), 1, 1, color=COLORS[mech], alpha=alpha, lw=0))
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    text[i][j],
                    ha="center",
                    va="center",
                    fontsize=7,
                    family="DejaVu Sans Mono",
                    parse_math=False,
                )
        ax.set_xlim(0, cols)
        ax.set_ylim(rows, 0)
        ax.set_xticks([])
        ax.set_yticks([i + 0.5 for i in range(rows)], [f"window {i}" for i in range(rows)])
        ax.set_title(f"layer {layer}", fontsize=9)
    handles = [Patch(color=COLORS[m], label=f"argmax ᾱ = {m}") for m in MECHANISMS]
    axes[-1].set_xlabel(
        f"byte position (⏎ = newline); opacity = 1 − epistemic / {peak:.3g} nats (pale = uncertain)"
    )
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.94), ncol=3, fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
