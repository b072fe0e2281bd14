"""What one routing decision costs in KL under compute-dirichlet priors, beside what it can gain.

    python experiments/decision_price.py --json experiments/results/decision_price.json
    python experiments/decision_price.py --smoke
    python experiments/decision_price.py --checkpoint runs/text/TAG/MODEL/seed0/checkpoint.pt

For every (lambda, kappa) the prior is compute-dirichlet on the MQAR preset's cost vector; the
table gives its mean, the prior's own P(argmax = full) and the least KL(q || p) at which a
Dirichlet q sends a token to full with probability >= each target (`analysis/decision_price.py`,
a grid search: an upper bound). A query's answer carries at most ln(value_vocab) nats; a price
near that leaves the ELBO (KL weight 1) no reason to route the query to full.
With --checkpoint the priors priced are a trained model's, one per layer (a hierarchical
prior's routing means have moved with the data): what sending one token to full costs there.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from common import ArgumentParser, UsageError, load_run, main_guard, smoke_checkpoint

from pyro_meta_attention.analysis.decision_price import GRID, decision_price
from pyro_meta_attention.bayes.priors import make_prior
from pyro_meta_attention.config import PriorConfig, mqar_config
from pyro_meta_attention.data.mqar import MQARConfig
from pyro_meta_attention.mechanisms import MECHANISMS
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.training.run_dir import versions, write_json


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(__doc__)
    p.add_argument("--strengths", type=float, nargs="+", default=[2.0, 1.0, 0.5], help="lambda")
    p.add_argument("--kappas", type=float, nargs="+", default=[3.0, 1.0, 0.3], help="kappa")
    p.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.9], help="P(full)")
    p.add_argument("--samples", type=int, default=4000, help="Monte Carlo draws per q")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="price each layer of this model's prior ('smoke': train one)",
    )
    p.add_flags("smoke")
    a = p.parse_args(argv)
    grid = GRID
    if a.smoke:
        a.strengths, a.kappas, a.samples, grid = [2.0], [3.0], 500, (0.3, 1.0, 3.0, 8.0)
    if a.samples < 100:
        raise UsageError(f"--samples must be >= 100, got {a.samples}")
    if any(not 0 < t < 1 for t in a.targets):
        raise UsageError(f"--targets must lie in (0, 1), got {a.targets}")
    if a.checkpoint is not None:
        return price_layers(a, grid, argv)
    config = mqar_config()
    cost = cost_model_for(config.model).normalised()
    gain = math.log(MQARConfig().value_vocab)
    rows = []
    for lam in a.strengths:
        for kappa in a.kappas:
            prior = make_prior(PriorConfig(strength=lam, concentration=kappa, floor=1e-3), cost)
            priced = price(prior.concentration(), a.targets, grid, a.samples)
            rows.append({"strength": lam, "kappa": kappa, **priced})
    head = " | ".join(f"KL for P(full) >= {t}" for t in a.targets)
    lines = [
        f"cost vector (MQAR preset) {[round(c, 3) for c in cost.tolist()]}; "
        f"a query's answer is worth at most ln {MQARConfig().value_vocab} = {gain:.2f} nats",
        "",
        f"| lambda | kappa | prior mean (full/linear/local) | prior P(full) | {head} |",
        "|---" * (4 + len(a.targets)) + "|",
    ]
    for r in rows:
        mean = " / ".join(f"{m:.2f}" for m in r["prior_mean"])
        kls = " | ".join(f"{pr['kl']:.2f}" for pr in r["prices"])
        lines.append(
            f"| {r['strength']:g} | {r['kappa']:g} | {mean} | {r['prior_p_full']:.3f} | {kls} |"
        )
    print("\n".join(lines))
    if a.json:
        write_record(a.json, argv, grid, rows)
    return 0


def price(conc: torch.Tensor, targets: list[float], grid, samples: int) -> dict[str, object]:
    """One prior Dir(conc [M]): its mean, its own P(argmax = full) and the KL price of each
    target P(full) (`analysis/decision_price.py`)."""
    full = MECHANISMS.index("full")
    prices = [decision_price(conc, full, t, grid, samples) for t in targets]
    return {
        "prior_concentration": conc.tolist(),
        "prior_mean": (conc / conc.sum()).tolist(),
        "prior_p_full": prices[0]["prior_probability"],
        "prices": [{"target": t, **pr} for t, pr in zip(targets, prices, strict=True)],
    }


def write_record(path: str, argv: list[str] | None, grid, rows: list, **extra) -> None:
    record = {"argv": sys.argv[1:] if argv is None else argv, "grid": grid, "rows": rows}
    write_json(Path(path), {**record, **extra, "versions": versions()})


def price_layers(a, grid: tuple[float, ...], argv: list[str] | None) -> int:
    """The price of a token's move to full against each layer's prior of a trained model."""
    if a.checkpoint == "smoke":
        a.checkpoint = str(smoke_checkpoint())
    config, _, guide, _ = load_run(a.checkpoint, need_data=False)
    conc = guide.prior_concentration()  # [L, M]
    if conc is None:
        raise UsageError(f"{a.checkpoint}: prior {config.prior.name!r} has no density to price")
    head = " | ".join(f"KL for P(full) >= {t}" for t in a.targets)
    lines = [
        f"{a.checkpoint}: prior {config.prior.name} (lambda {config.prior.strength:g})",
        "",
        f"| layer | prior mean (full/linear/local) | prior P(full) | {head} |",
        "|---" * (3 + len(a.targets)) + "|",
    ]
    rows = [
        {"layer": layer, **price(a_l, a.targets, grid, a.samples)} for layer, a_l in enumerate(conc)
    ]
    for r in rows:
        kls = " | ".join(f"{pr['kl']:.2f}" for pr in r["prices"])
        shown = " / ".join(f"{m:.3f}" for m in r["prior_mean"])
        lines.append(f"| {r['layer']} | {shown} | {r['prior_p_full']:.4f} | {kls} |")
    print("\n".join(lines))
    if a.json:
        write_record(a.json, argv, grid, rows, checkpoint=a.checkpoint)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main_guard(main))
