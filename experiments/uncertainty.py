"""Routing uncertainty of a trained checkpoint: total, aleatoric and epistemic, per layer.

    python experiments/uncertainty.py --checkpoint runs/latest/checkpoint.pt
    python experiments/uncertainty.py --checkpoint runs/c600/checkpoint.pt --samples 64 --out runs/c600
    python experiments/uncertainty.py --smoke --out /tmp/unc   # trains a tiny model first

Draws --samples posterior samples of every routing site on --batches validation batches (the
held-out split of the checkpoint's corpus, or of --data), prints a table per layer and the
tokens with the highest and lowest epistemic uncertainty, and with --out writes
uncertainty.json ({"config": ..., "report": ...}).
"""

from __future__ import annotations

import sys
from typing import Any

import pyro
import torch
from common import (
    ArgumentParser,
    at_least,
    load_run,
    main_guard,
    out_folder,
    smoke_checkpoint,
    visible,
)

from pyro_meta_attention.analysis.uncertainty import uncertainty_report
from pyro_meta_attention.data.sources import held_out_batches
from pyro_meta_attention.training.run_dir import write_json

CONTEXT_BYTES = 20  # left context shown with each listed token


def with_text(report: dict[str, Any], x: torch.Tensor) -> dict[str, Any]:
    """The report with each listed token's byte and left context as visible text."""
    rows = [bytes(r) for r in x.tolist()]

    def text(tok: dict[str, Any]) -> dict[str, Any]:
        row, t = rows[tok["batch"]], tok["position"]
        context = visible(row[max(0, t - CONTEXT_BYTES) : t])
        return tok | {"context": context, "byte": visible(row[t : t + 1])}

    lists = ("most_epistemic", "least_epistemic")
    return report | {k: [text(tok) for tok in report[k]] for k in lists}


def _fmt(v: float | None, width: int = 9, digits: int = 4) -> str:
    return f"{'n/a':>{width}}" if v is None else f"{v:>{width}.{digits}f}"


def _tokens(title: str, tokens: list[dict[str, Any]]) -> list[str]:
    lines = [title, f"  {'layer':>5} {'pos':>4} {'epist.':>8}  {'alpha_bar':<20}  context⟨byte⟩"]
    for tok in tokens:
        alpha = "/".join(f"{a:.2f}" for a in tok["alpha_mean"])
        text = f"{tok['context']:>{CONTEXT_BYTES}}⟨{tok['byte']}⟩"
        lines.append(
            f"  {tok['layer']:>5} {tok['position']:>4} {tok['epistemic']:>8.4f}  {alpha:<20}  {text}"
        )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """A fixed-width text rendering of `uncertainty_report`: two tables and the token lists."""
    mechs = report["mechanisms"]
    B, T = report["shape"]
    lines = [
        f"routing uncertainty: prior {report['prior']}, {report['num_samples']} samples, "
        f"{B} x {T} tokens (entropies in nats)",
        "",
        "alpha_bar (mean) / argmax share",
        f"{'layer':>5} " + " ".join(f"{m:>16}" for m in mechs),
    ]
    for row in report["layers"]:
        cells = [
            f"{row['alpha_mean'][m]:>7.3f} / {100 * row['argmax_share'][m]:>5.1f}%" for m in mechs
        ]
        lines.append(f"{row['layer']:>5} " + " ".join(cells))
    lines += [
        "",
        f"{'layer':>5} {'total':>9} {'aleatoric':>9} {'epistemic':>9} {'a0':>9} {'gap':>9}",
    ]
    for row in report["layers"]:
        values = ("total", "aleatoric", "epistemic", "concentration_total", "aleatoric_gap")
        lines.append(f"{row['layer']:>5} " + " ".join(_fmt(row[k]) for k in values))
    lines.append("gap: closed-form E[H(alpha)] minus its Monte Carlo estimate, mean over tokens")
    if report["deterministic"]:
        lines += [
            "",
            "deterministic router (Delta guide): no posterior uncertainty, epistemic = 0 for every "
            "token; total = aleatoric = entropy of the router's softmax",
        ]
        return "\n".join(lines)
    lines.append("")
    lines += _tokens("most epistemic (pooled over layers)", report["most_epistemic"])
    lines.append("")
    lines += _tokens("least epistemic (pooled over layers)", report["least_epistemic"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(__doc__)
    p.add_argument("--checkpoint", default=None, help="checkpoint.pt (required unless --smoke)")
    p.add_argument("--data", default=None, help="corpus file (default: the checkpoint's corpus)")
    p.add_argument("--samples", type=int, default=32, help="posterior samples S")
    p.add_argument("--batches", type=int, default=2, help="validation batches")
    p.add_argument("--top-k", type=int, default=5, help="tokens listed per direction")
    p.add_argument("--out", default=None, help="folder for uncertainty.json")
    p.add_flags("seed", "smoke")
    a = p.parse_args(argv)
    if a.checkpoint is None and not a.smoke:
        p.error("--checkpoint is required unless --smoke")
    at_least(a.samples, 1, "--samples")
    at_least(a.batches, 1, "--batches")
    out = out_folder(a.out)
    checkpoint = smoke_checkpoint(a.seed) if a.smoke else a.checkpoint
    config, model, guide, data = load_run(checkpoint, a.data)
    x = torch.cat([b.x for b in held_out_batches(data, config, a.batches, "cpu")])  # [N, T]
    pyro.set_rng_seed(a.seed)
    report = with_text(uncertainty_report(model, guide, x, a.samples, top_k=a.top_k), x)
    print(format_report(report))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        run = {
            "checkpoint": "smoke (temporary)" if a.smoke else str(checkpoint),
            "data": data.name,
            "corpus_sha256": data.sha256,
            "samples": a.samples,
            "batches": a.batches,
            "seed": a.seed,
        }
        write_json(out / "uncertainty.json", {"config": run, "report": report})
        print(f"\nwrote {out / 'uncertainty.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
