"""What full attention gains per token over local attention, against the price a Bayesian router
pays to route one token to full: which text tokens a router at KL weight 1 could buy.

    python experiments/token_gain.py \\
        --local runs/text/G/fixed-local/seed0/checkpoint.pt runs/text/G/fixed-local/seed1/... \\
        --full runs/text/G/fixed-full/seed0/checkpoint.pt runs/text/G/fixed-full/seed1/... \\
        --json experiments/results/token-gain-G.json --plot experiments/results/token-gain-G.png
    python experiments/token_gain.py --smoke

Pairs --local[i] with --full[i] (the same held-out windows of the same corpus; the repeat
classes use the local model's window) and gives every held-out position its gain
g = nats_local - nats_full (`analysis/token_gain.py`): per repeat class its mean, quantiles and
the share of positions whose gain exceeds the price, and the oracle that routes to full exactly
the positions with g > tau. The price is the break-even gain of routing one token to full: the
least g at which a Dirichlet posterior that makes full its sample's argmax with probability
P >= --target gains more log-likelihood (g · (P - P_prior), hard straight-through samples) than
it pays in KL, under compute-dirichlet at --strength (kappa 3) on the local model's cost vector
(`analysis/decision_price.break_even_gain`) — the per-token prior of the default recipe
(hierarchical-budget) at its mode — or --price nats. With two or more --full models the
same statistics of full seed i+1 against full seed i measure the token-level noise between two
networks trained alike: a gain no single network could reproduce.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch
from common import ArgumentParser, UsageError, load_run, main_guard, smoke_checkpoint
from studies import fmt

from pyro_meta_attention.analysis.decision_price import GRID, break_even_gain
from pyro_meta_attention.analysis.repeats import DEFAULT_K, REPEAT_CLASSES, with_repeat_classes
from pyro_meta_attention.analysis.token_gain import (
    auc,
    gain_by_class,
    hard_position_nats,
    oracle_curve,
    predictability,
    share_to_close,
)
from pyro_meta_attention.bayes.priors import make_prior
from pyro_meta_attention.config import PriorConfig
from pyro_meta_attention.data.corpus import Corpus
from pyro_meta_attention.data.kgrams import match_features
from pyro_meta_attention.data.sources import held_out_batches
from pyro_meta_attention.mechanisms import MECHANISMS
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.training.run_dir import versions, write_json

MATCH_KS = (2, 3, 4, 6, 8)  # the causal match features a guide could read, per k (2 bits each)
TAUS = (-0.5, -0.25, 0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75,
        1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)  # oracle thresholds, nats  # fmt: skip


def scored_model(checkpoint: str, routes: tuple[str, ...] = ("hard",)) -> dict[str, Any]:
    """A checkpoint's held-out positions: "nats" {route: [P]}, per route "hard" (each token runs
    its argmax) or a mechanism every token is forced onto; "classes" [P] under its
    own window; "batches", "config", "corpus" (sha256), "cost" [M]."""
    config, model, guide, source = load_run(checkpoint)
    if not isinstance(source, Corpus):
        raise UsageError(f"{checkpoint} trained on {config.data.path}, not on text")
    batches = with_repeat_classes(held_out_batches(source, config), DEFAULT_K, config.model.window)
    if any(b.mask is not None for b in batches):
        raise UsageError(f"{checkpoint}: its held-out batches score only some positions")
    cost = cost_model_for(config.model).normalised()
    nats = {
        r: hard_position_nats(model, guide, batches, cost, None if r == "hard" else r)
        for r in routes
    }
    return {
        "nats": {r: n for r, (n, _) in nats.items()},
        "classes": nats[routes[0]][1],
        "batches": batches,
        "config": config,
        "corpus": source.record()["sha256"],
        "cost": cost,
    }


def causal_features(scored: dict) -> dict[str, torch.Tensor]:
    """What a guide could read at each position of `scored`'s windows: "features" [P, 2 ·
    len(MATCH_KS)] (match features, its window), and "half" [P], True on the first half of the
    windows (where the predictors fit; they are scored on the rest)."""
    x = torch.cat([b.x for b in scored["batches"]])  # [N, T]: positions in the order of the nats
    w = scored["config"].model.window
    features = torch.cat([match_features(x, k, w) for k in MATCH_KS], -1)  # [N, T, F]
    N, T = x.shape
    half = (torch.arange(N) < N // 2).repeat_interleave(T)
    return {"features": features.flatten(0, 1).double(), "half": half}


def check_pair(local: dict, full: dict, names: tuple[str, str]) -> None:
    """The two models must score the same positions of the same text."""
    if local["corpus"] != full["corpus"]:
        raise UsageError(f"{names[0]} and {names[1]} trained on different corpora")
    lm, fm = local["config"].model, full["config"].model
    if lm.block_size != fm.block_size or local["classes"].shape != full["classes"].shape:
        raise UsageError(f"{names[0]} and {names[1]} score different held-out windows")


def the_price(a, cost: torch.Tensor) -> dict[str, Any]:
    """The break-even gain of one token's move to full, or the --price given."""
    if a.price is not None:
        return {"gain": a.price, "source": "--price"}
    prior = make_prior(PriorConfig(strength=a.strength), cost)
    conc = prior.concentration()
    p = break_even_gain(conc, MECHANISMS.index("full"), a.target, GRID, a.samples)
    source = (
        f"break-even gain under compute-dirichlet lambda {a.strength:g}: KL {p['kl']:.2f} nats "
        f"moves P(argmax full) from {p['prior_probability']:.2f} to {p['probability']:.2f}"
    )
    return {**p, "source": source, "prior_concentration": conc.tolist()}


def summarise(
    gain: torch.Tensor, classes: torch.Tensor, seen: dict[str, torch.Tensor], price: float
) -> dict[str, Any]:
    """Every statistic of one set of per-position gains [P]: classes [P], `seen` the positions'
    `causal_features`."""
    half = seen["half"]
    at_price = oracle_curve(gain, [price])[0]
    long = (classes[~half] == REPEAT_CLASSES.index("long-repeat")).double()
    return {
        "predict": predictability(gain, seen["features"], half, price),
        "auc_long_repeat": auc(long, gain[~half] > price),
        "mean": float(gain.mean()),
        "classes": gain_by_class(gain, classes, REPEAT_CLASSES, price),
        "oracle": oracle_curve(gain, TAUS),
        "at_price": at_price,
        "half_gap": share_to_close(gain, 0.5),
    }


def pm(values: list[float]) -> str:
    """`fmt` over the finite values (nan: e.g. no gap to close, no positive to find)."""
    return fmt([v if math.isfinite(v) else None for v in values])


def report(label: str, rows: list[dict[str, Any]], price: float) -> list[str]:
    """Markdown lines: per class, then the oracle at the price and at half the gap."""
    lines = [
        f"**{label}** ({len(rows)} pair{'s' if len(rows) > 1 else ''}; mean ± sd over pairs)",
        "",
        f"| class | share | mean gain | median | 90 % | 99 % | gain > {price:.2f} | their share "
        "of the class's positive gain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in REPEAT_CLASSES:
        c = [r["classes"][name] for r in rows if "mean" in r["classes"][name]]
        if not c:
            continue
        q = [[x["quantiles"][k] for x in c] for k in ("0.5", "0.9", "0.99")]
        lines.append(
            f"| {name} | {pm([x['share'] for x in c])} | {pm([x['mean'] for x in c])} | "
            f"{pm(q[0])} | {pm(q[1])} | {pm(q[2])} | {pm([x['above_price'] for x in c])} | "
            f"{pm([x['gain_above_price'] for x in c])} |"
        )
    lines += [
        "",
        f"All positions: mean gain {pm([r['mean'] for r in rows])} nats. An oracle routing to "
        f"full every position whose gain exceeds the price routes "
        f"{pm([r['at_price']['routed'] for r in rows])} of them and saves "
        f"{pm([r['at_price']['nats_saved'] for r in rows])} nats per position; to close half the "
        f"gap it must route {pm([r['half_gap']['routed'] for r in rows])}, the weakest of which "
        f"gains {pm([r['half_gap']['weakest_gain'] for r in rows])} nats. Finding the "
        f"positions above the price (base rate {pm([r['predict']['base_rate'] for r in rows])}) "
        f"from causal match features: AUC {pm([r['predict']['auc'] for r in rows])}, precision "
        f"{pm([r['predict']['precision_at_half_recall'] for r in rows])} at half recall (a "
        f"logistic fit on half the windows, scored on the rest); the long-repeat class itself, "
        f"which reads the next byte: AUC {pm([r['auc_long_repeat'] for r in rows])}.",
        "",
    ]
    return lines


def plot(
    reference: list[dict],
    noise: list[dict],
    within: list[dict],
    samples: dict,
    price: float,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    bins = torch.linspace(-4, 6, 81).tolist()
    colours = {"novel": "#7f7f7f", "short-repeat": "#1f77b4", "long-repeat": "#d62728"}
    for name, colour in colours.items():
        g = samples["reference"][name]
        if g.numel():
            left.hist(
                g.tolist(), bins=bins, density=True, histtype="step", color=colour, label=name
            )
    if samples["noise"].numel():
        left.hist(samples["noise"].tolist(), bins=bins, density=True, histtype="step",
                  color="k", ls="--", label="full seed vs full seed")  # fmt: skip
    left.axvline(price, color="k", lw=1, label=f"price {price:.2f} nats")
    left.set_yscale("log")
    left.set_xlabel("gain per position: nats local − nats full")
    left.set_ylabel("density")
    left.legend(fontsize=8)
    blocks = (
        (reference, "#d62728", "-", "fixed-local → fixed-full"),
        (noise, "k", "--", "full seed → full seed (noise)"),
        (within, "#1f77b4", ":", "a router's own weights"),
    )
    for rows, colour, line, label in blocks:
        for i, r in enumerate(rows):
            xs = [o["routed"] for o in r["oracle"]]
            ys = [o["nats_saved"] for o in r["oracle"]]
            right.plot(xs, ys, color=colour, ls=line, alpha=0.8, label=label if i == 0 else None)
            right.plot(r["at_price"]["routed"], r["at_price"]["nats_saved"], "o", color=colour)
    half = sum(r["mean"] for r in reference) / len(reference) / 2
    right.axhline(half, color="#999999", lw=0.8, label="half the local − full gap")
    right.set_xlabel("share of positions routed to full (oracle: largest gains first)")
    right.set_xscale("symlog", linthresh=0.01)  # the few positions that pay are the story
    right.set_xlim(0, 1)
    right.set_ylabel("nats saved per position")
    right.set_title("dots: route exactly the positions whose gain exceeds the price", fontsize=9)
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(__doc__)
    p.add_argument("--local", nargs="+", default=None, help="fixed-local checkpoints")
    p.add_argument("--full", nargs="+", default=None, help="fixed-full checkpoints, same count")
    p.add_argument(
        "--router",
        nargs="+",
        default=[],
        help="routed checkpoints: the gain of all-full over all-local in their own weights",
    )
    p.add_argument("--price", type=float, default=None, help="nats (default: priced, see above)")
    p.add_argument("--strength", type=float, default=0.5, help="lambda of the priced prior")
    p.add_argument("--target", type=float, default=0.5, help="P(argmax full) priced")
    p.add_argument("--samples", type=int, default=4000, help="Monte Carlo draws per priced q")
    p.add_argument("--json", default=None, help="write every statistic here")
    p.add_argument("--plot", default=None, help="write a PNG here")
    p.add_flags("smoke")
    a = p.parse_args(argv)
    if not 0 < a.target < 1:
        raise UsageError(f"--target must lie in (0, 1), got {a.target}")
    if a.samples < 100:
        raise UsageError(f"--samples must be >= 100, got {a.samples}")
    for path, suffix in ((a.json, ".json"), (a.plot, ".png")):
        if path is not None and (Path(path).suffix != suffix or not Path(path).parent.is_dir()):
            raise UsageError(f"{path}: give a {suffix} file in an existing folder")
    if not a.smoke and (not a.local or not a.full):
        raise UsageError("--local and --full are required (or --smoke)")
    if a.smoke:
        a.local = [str(smoke_checkpoint(0))]
        a.full = [str(smoke_checkpoint(1)), str(smoke_checkpoint(2))]
        a.local.append(a.local[0])
        a.router = [a.local[0]]
        a.samples = 500
    if len(a.local) != len(a.full):
        raise UsageError(f"{len(a.local)} --local for {len(a.full)} --full checkpoints")
    local = [scored_model(c) for c in a.local]
    full = [scored_model(c) for c in a.full]
    for i, (lo, fu) in enumerate(zip(local, full, strict=True)):
        check_pair(lo, fu, (a.local[i], a.full[i]))
    classes, seen = local[0]["classes"], causal_features(local[0])  # every pair's positions
    priced = the_price(a, local[0]["cost"])
    price = priced["gain"]
    reference, noise = [], []
    samples = {"reference": {n: [] for n in REPEAT_CLASSES}, "noise": []}
    for lo, fu in zip(local, full, strict=True):
        gain = lo["nats"]["hard"] - fu["nats"]["hard"]
        reference.append(summarise(gain, classes, seen, price))
        for c, name in enumerate(REPEAT_CLASSES):
            samples["reference"][name].append(gain[classes == c])
    if len(local) > 1:  # per-position nats averaged over the seeds: the seed noise shrinks
        mean_local = torch.stack([lo["nats"]["hard"] for lo in local]).mean(0)
        mean_full = torch.stack([fu["nats"]["hard"] for fu in full]).mean(0)
        averaged = [summarise(mean_local - mean_full, classes, seen, price)]
    else:
        averaged = []
    within = []
    for checkpoint in a.router:
        forced = scored_model(checkpoint, ("local", "full"))
        check_pair(local[0], forced, (a.local[0], checkpoint))
        gain = forced["nats"]["local"] - forced["nats"]["full"]
        within.append(summarise(gain, classes, seen, price))
    n = len(full)
    for i in range(n if n > 2 else n - 1):  # full seed i+1 against full seed i, cyclic
        gain = full[i]["nats"]["hard"] - full[(i + 1) % n]["nats"]["hard"]
        noise.append(summarise(gain, classes, seen, price))
        samples["noise"].append(gain)
    cat = {
        "reference": {k: torch.cat(v) for k, v in samples["reference"].items()},
        "noise": torch.cat(samples["noise"]) if samples["noise"] else torch.zeros(0),
    }
    lines = [
        f"Price of one token's move to full: a gain of {price:.2f} nats ({priced['source']}).",
        "",
        *report("fixed-full against fixed-local (gain = nats local − nats full)", reference, price),
    ]
    if noise:
        lines += report("noise: fixed-full seed i+1 against seed i", noise, price)
    if averaged:
        lines += report(
            "per-position nats averaged over the pairs, then local − full", averaged, price
        )
    for checkpoint, row in zip(a.router, within, strict=True):
        lines += report(f"{checkpoint}, its own weights: all-local − all-full", [row], price)
    print("\n".join(lines))
    if a.json:
        write_json(
            Path(a.json),
            {
                "command": "python experiments/token_gain.py " + " ".join(argv or sys.argv[1:]),
                "local": a.local,
                "full": a.full,
                "price": priced,
                "reference": reference,
                "noise": noise,
                "averaged": averaged,
                "router": a.router,
                "within": within,
                "versions": versions(),
            },
        )
        print(f"wrote {a.json}")
    if a.plot:
        plot(reference, noise, within, cat, price, Path(a.plot))
        print(f"wrote {a.plot}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main_guard(main))
