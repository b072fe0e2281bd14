"""SVI step time of Bayesian routing against the prior-free `none` baseline, side by side.

    python experiments/bench_step.py                 # default model size, 30 timed steps each
    python experiments/bench_step.py --smoke         # tiny, for tests
    python experiments/bench_step.py --checkpoint-cost   # cost of --checkpoint-every 1

Both variants are built from the same config (only the prior differs) and their steps are
interleaved in one loop, so machine noise hits both alike; the ratio of medians is printed and
optionally written as JSON. A plain-torch step (no Pyro, alpha fixed at the prior-free router's
softmax) is timed too, to show Pyro's own overhead. --compare-learned adds both SVI variants
with learned absolute positions (runs before rotary positions) to the same loop: the rotary
network's step against the learned one's, side by side.

--checkpoint-cost instead times the SVI step with and without writing the training loop's
checkpoint after it (weights, optimiser, random states; atomically, as `--checkpoint-every 1`
does), interleaved the same way, and prints the ratio: the cost per step of checkpointing every
step (every N steps costs 1/N of the difference).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from common import ArgumentParser, at_least, main_guard

from pyro_meta_attention.config import RunConfig, smoke_config
from pyro_meta_attention.data.sources import data_for
from pyro_meta_attention.training.build import build, make_elbo, make_optimizer
from pyro_meta_attention.training.checkpoint import save_checkpoint
from pyro_meta_attention.training.rng import rng_state
from pyro_meta_attention.training.run_dir import CHECKPOINT_FILE, versions, write_json


def svi_stepper(config: RunConfig, checkpoint_to: Path | None = None):
    """An SVI step; with `checkpoint_to`, followed by the training loop's checkpoint there."""
    model, guide = build(config)
    elbo = make_elbo(config.train.elbo)(model, guide)
    opt = make_optimizer(model, guide, config)
    generator = torch.Generator().manual_seed(0)
    times: list[float] = []

    def step(x, y):
        loss = elbo(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if checkpoint_to is not None:
            extra = {"optimizer": opt.state_dict(), "rng": rng_state(generator)}
            times.append(0.0)
            path = checkpoint_to / CHECKPOINT_FILE
            save_checkpoint(path, config, model, guide, len(times), step_times=times, **extra)

    return step


def plain_stepper(config: RunConfig):
    model, guide = build(config.override(prior={"name": "none"}))
    opt = make_optimizer(model, guide, config)

    def step(x, y):
        alphas = list(guide.posterior_mean(x).unbind(2))
        loss = F.cross_entropy(model.net(x, alphas).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(__doc__)
    p.add_argument("--prior", default="compute-dirichlet")
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument(
        "--checkpoint-cost", action="store_true", help="time steps with and without a checkpoint"
    )
    p.add_argument("--compare-learned", action="store_true", help="add learned-position variants")
    p.add_flags("smoke")
    a = p.parse_args(argv)
    at_least(a.steps, 2 if a.checkpoint_cost else 1, "--steps")
    at_least(a.warmup, 0, "--warmup")
    base = (smoke_config() if a.smoke else RunConfig()).override(prior={"name": a.prior})
    pyro.settings.set(module_local_params=True)
    pyro.clear_param_store()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as folder:
        variants = {
            a.prior: svi_stepper(base),
            "none": svi_stepper(base.override(prior={"name": "none"})),
            "plain-torch": plain_stepper(base),
        }
        if a.compare_learned:
            learned = base.override(model={"positions": "learned"})
            variants[f"{a.prior} [learned]"] = svi_stepper(learned)
            variants["none [learned]"] = svi_stepper(learned.override(prior={"name": "none"}))
        if a.checkpoint_cost:
            variants = {
                "step": variants[a.prior],
                "step+checkpoint": svi_stepper(base, Path(folder)),
            }
        med = timed(variants, base, a.warmup, a.steps)
        size = (Path(folder) / CHECKPOINT_FILE).stat().st_size if a.checkpoint_cost else None
    result = {
        "median_step_s": med,
        "steps": a.steps,
        "model": base.model.__dict__,
        "batch_size": base.train.batch_size,
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
    }
    result |= ratios(med, a.prior, size)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(a.json), result)
    return 0


def ratios(med: dict[str, float], prior: str, size: int | None) -> dict[str, float | int]:
    """Print the medians and their ratios; return the ratios (and the checkpoint size)."""
    for name, m in med.items():
        print(f"{name:>20}: median {1000 * m:7.1f} ms/step")
    if size is not None:
        ratio = med["step+checkpoint"] / med["step"]
        print(f"checkpoint {size / 1e6:.2f} MB; step+checkpoint / step = {ratio:.3f}x")
        return {"checkpoint_bytes": size, "ratio_checkpoint": ratio}
    vs_none, vs_plain = med[prior] / med["none"], med["none"] / med["plain-torch"]
    print(f"{prior} / none = {vs_none:.3f}x")
    print(f"none / plain-torch = {vs_plain:.3f}x")
    out = {"ratio_vs_none": vs_none, "ratio_none_vs_plain": vs_plain}
    if f"{prior} [learned]" in med:
        learned = med[f"{prior} [learned]"] / med["none [learned]"]
        rope = med[prior] / med[f"{prior} [learned]"]
        print(f"learned positions: {prior} / none = {learned:.3f}x")
        print(f"rotary / learned positions ({prior}) = {rope:.3f}x")
        out |= {"ratio_vs_none_learned": learned, "ratio_rotary_vs_learned": rope}
    return out


def timed(variants: dict, config: RunConfig, warmup: int, steps: int) -> dict[str, float]:
    """Median seconds per step of each variant, their steps interleaved on the same batches."""
    data = data_for(config)
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(warmup + steps):
        x, y, _, _ = data.train_batch(config.train.batch_size, gen)
        for name, step in variants.items():
            t0 = time.perf_counter()
            step(x, y)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


if __name__ == "__main__":
    sys.exit(main_guard(main))
