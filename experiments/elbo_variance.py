"""Guide-gradient variance of Trace_ELBO vs TraceMeanField_ELBO at identical parameters and batch.

    python experiments/elbo_variance.py --json experiments/results/elbo_variance.json
    python experiments/elbo_variance.py --smoke

For each guide state (initialised at the prior, and a random initialisation) and each estimator,
the ELBO gradient w.r.t. the guide parameters is drawn `--repeats` times with different random
seeds on one fixed batch; we report the total variance (sum over parameters of the per-element
variance), the squared norm of the mean gradient (signal), their ratio, and the time per
gradient. The model parameters, batch and guide parameters are identical for both estimators.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
from common import ArgumentParser, at_least, main_guard

from pyro_meta_attention.config import RunConfig, smoke_config
from pyro_meta_attention.data.sources import data_for
from pyro_meta_attention.training.build import build, make_elbo
from pyro_meta_attention.training.run_dir import versions, write_text


def gradient_draws(config: RunConfig, elbo_name: str, x, y, repeats: int):
    """[repeats, P] guide-gradient draws and the median seconds per draw."""
    pyro.set_rng_seed(config.train.seed)
    model, guide = build(config)
    loss_fn = make_elbo(elbo_name)(model, guide)
    params = list(guide.parameters())
    draws, seconds = [], []
    for r in range(repeats):
        pyro.set_rng_seed(1000 + r)
        t0 = time.perf_counter()
        grads = torch.autograd.grad(loss_fn(x, y), params, allow_unused=True)
        seconds.append(time.perf_counter() - t0)
        draws.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).flatten()
                    for g, p in zip(grads, params, strict=True)
                ]
            )
        )
    return torch.stack(draws).double(), statistics.median(seconds)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(__doc__)
    p.add_argument("--prior", default="compute-dirichlet")
    p.add_argument("--repeats", type=int, default=30, help="gradient draws per estimator")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_flags("smoke")
    a = p.parse_args(argv)
    at_least(a.repeats, 2, "--repeats")
    pyro.settings.set(module_local_params=True)
    base = (smoke_config() if a.smoke else RunConfig()).override(prior={"name": a.prior})
    x, y, _, _ = data_for(base).train_batch(base.train.batch_size, torch.Generator().manual_seed(0))
    rows = []
    for init in ("prior", "random"):
        config = base.override(guide={"init": init})
        for elbo in ("trace", "meanfield"):
            g, sec = gradient_draws(config, elbo, x, y, a.repeats)
            var = float(g.var(0).sum())
            signal = float(g.mean(0).pow(2).sum())
            rows.append(
                {
                    "guide_init": init,
                    "elbo": elbo,
                    "total_variance": var,
                    "signal": signal,
                    "noise_to_signal": var / max(signal, 1e-30),
                    "seconds_per_gradient": sec,
                }
            )
            print(
                f"guide init {init:6s} {elbo:9s}: variance {var:.3e}  signal {signal:.3e}  "
                f"noise/signal {var / max(signal, 1e-30):.3e}  {1000 * sec:.0f} ms"
            )
        trace, mf = rows[-2], rows[-1]
        print(
            f"  -> variance ratio trace / meanfield = {trace['total_variance'] / mf['total_variance']:.1f}x"
        )
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        write_text(
            Path(a.json),
            json.dumps(
                {
                    "prior": a.prior,
                    "repeats": a.repeats,
                    "rows": rows,
                    "model": base.model.__dict__,
                    "versions": versions(),
                },
                indent=2,
            )
            + "\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
