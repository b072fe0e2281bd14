"""Train the Bayesian router with SVI and write a run folder.

    python experiments/train_svi.py                         # default: built-in corpus, the recipe
    python experiments/train_svi.py --prior none --out runs/none
    python experiments/train_svi.py --data ../shared/data/tinyshakespeare.txt --steps 2000
    python experiments/train_svi.py --preset mqar --prior fixed-full   # the MQAR recall task
    python experiments/train_svi.py --smoke --out /tmp/smoke   # tiny model, a few steps
    python experiments/train_svi.py --resume runs/latest       # continue a stopped run
    torchrun --nproc_per_node 2 experiments/train_svi.py --distributed --out runs/ddp   # DDP
    python experiments/train_svi.py --tensorboard runs/tb/latest   # curves: tensorboard --logdir runs/tb

Writes config.json, metrics.jsonl, checkpoint.pt and summary.json to --out, and prints a
summary that says whether routing was learned. A folder that already holds a run is refused
unless --overwrite (start again) or --resume (continue it). The checkpoint is written every
--checkpoint-every steps and when SIGINT or SIGTERM stops the run (exit 130 / 143); a run
whose loss diverges stops with an error and keeps its last good checkpoint.

--distributed makes this process one rank of a torchrun launch (torch DDP: gloo on the CPU,
nccl on CUDA; pyro_meta_attention/training/distributed.py): --batch-size is per process, every
rank trains on its own windows, gradients are averaged, rank 0 writes --out and prints.

--tensorboard DIR writes the metrics rows as scalars, the posterior mean routing weights as
histograms per layer and the summary to an event file in DIR (only rank 0 under torchrun;
pyro_meta_attention/training/tensorboard.py; needs the `tensorboard` extra).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from pathlib import Path

from common import (
    ArgumentParser,
    UsageError,
    add_set_flag,
    at_least,
    check_device,
    main_guard,
    parse_set,
    tensorboard_folder,
)

from pyro_meta_attention.analysis.routing_stats import ROUTE_MARGIN
from pyro_meta_attention.bayes.priors import PRIORS
from pyro_meta_attention.config import PRESETS, ROUTING_RECIPE, RunConfig, smoke_config
from pyro_meta_attention.data.sources import data_for
from pyro_meta_attention.mechanisms import MECHANISMS
from pyro_meta_attention.training.build import ELBOS, build
from pyro_meta_attention.training.checkpoint import check_resumable
from pyro_meta_attention.training.distributed import close_world, init_world, launched_by_torchrun
from pyro_meta_attention.training.run_dir import check_writable, prepare_run_dir
from pyro_meta_attention.training.signals import TrainingInterrupted
from pyro_meta_attention.training.svi import CHECKPOINT_EVERY, FitResult, fit, resume

WITH_RESUME = {"resume", "no_progress", "checkpoint_every", "distributed"}  # flags --resume takes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = RunConfig()
    p = ArgumentParser(__doc__)
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="base config")
    p.add_argument(
        "--data",
        default=None,
        help="text/bytes file, synthetic:recall or synthetic:mqar (default: the preset's)",
    )
    p.add_argument("--token-shift", action="store_true", help="add the previous token's embedding")
    p.add_argument(
        "--prior",
        default=None,
        choices=sorted(PRIORS),
        help=f"default: the preset's ({d.prior.name})",
    )
    p.add_argument("--strength", type=float, default=None, help="lambda (default: the preset's)")
    p.add_argument("--kappa", type=float, default=None, help="total concentration (prior default)")
    p.add_argument("--elbo", default=d.train.elbo, choices=sorted(ELBOS))
    p.add_argument("--steps", type=int, default=None, help=f"SVI steps (default {d.train.steps})")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--kl-weight", type=float, default=None, help="final KL weight beta")
    p.add_argument("--kl-anneal", type=int, default=None, help="steps of linear KL warm-up")
    p.add_argument("--guide-init", choices=["prior", "random"], default=None)
    p.add_argument("--guide-floor", type=float, default=None, help="min guide concentration")
    add_set_flag(p, "any config field, e.g. train.full_warmup=1000")
    p.add_argument("--out", default="runs/latest", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a stopped run")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=CHECKPOINT_EVERY,
        help=f"steps between checkpoints (default {CHECKPOINT_EVERY}; 0: only at the end)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one rank of `torchrun --nproc_per_node N` (DDP); --batch-size per process",
    )
    p.add_flags("seed", "device", "smoke", "progress", "tensorboard")
    a = p.parse_args(argv)
    if a.resume is not None:
        given = sorted(k for k, v in vars(a).items() if v != p.get_default(k))
        others = [f"--{k.replace('_', '-')}" for k in given if k not in WITH_RESUME]
        if others:
            p.error(f"--resume continues a run with its own settings; drop {' '.join(others)}")
    return a


def config_from_args(a: argparse.Namespace) -> RunConfig:
    base = PRESETS[a.preset]()
    if a.smoke:  # the smoke network and sizes, on the preset's data, prior and schedules
        recipe = {k: getattr(base.train, k) for k in ROUTING_RECIPE["train"]}
        base = smoke_config(
            data={"path": base.data.path},
            model={"token_shift": base.model.token_shift},
            prior=asdict(base.prior),
            train=recipe,
        )
    train = {"seed": a.seed, "device": a.device, "elbo": a.elbo}
    for key in ("steps", "batch_size", "lr", "kl_weight", "kl_anneal"):
        if getattr(a, key) is not None:
            train[key] = getattr(a, key)
    guide = {}
    if a.guide_init is not None:
        guide["init"] = a.guide_init
    if a.guide_floor is not None:
        guide["floor"] = a.guide_floor
    prior = {"name": a.prior, "strength": a.strength, "concentration": a.kappa}
    config = base.override(
        prior={k: v for k, v in prior.items() if v is not None},
        data={} if a.data is None else {"path": a.data},
        model={"token_shift": True} if a.token_shift else {},
        train=train,
        guide=guide,
    )
    return config.override(**parse_set(a.set, config))


def print_summary(s: dict, out: Path) -> None:
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    shares = ", ".join(
        f"{m} {100 * x:.1f}%" for m, x in zip(MECHANISMS, s["routing_share"], strict=True)
    )
    print(f"\n== summary ({s['prior']}, {s['steps']} steps) -> {out}")
    print(f"val nats/token (soft)   {fmt(s['val_nats_per_token'])}")
    print(f"val bits/byte (soft)    {fmt(s['val_bits_per_byte'])}")
    print(f"val accuracy (soft)     {s['val_accuracy']:.4f}")
    print(f"routing share (argmax)  {shares}")
    print(f"routing entropy         {s['routing_entropy']:.3f} (normalised)")
    print(f"projected hard cost     {s['projected_hard_cost']:.3f} (full attention = 1)")
    print(f"KL(q||p) per token      {fmt(s['kl'])}")
    print(f"argmax differs (prior)  {fmt(s['argmax_differs'])}")
    print(f"routed by the data      {fmt(s['data_routed'])} (flipped by TV >= {ROUTE_MARGIN})")
    print(f"median step             {s['median_step_s']:.3f} s")
    if s["world_size"] > 1:
        print(f"processes (DDP)         {s['world_size']}, batch per process as configured")
    print(s["verdict"])


def train(a: argparse.Namespace) -> tuple[FitResult, Path, bool]:
    """Resume --resume, or check every setting, then train into --out (with --distributed, as
    one rank of the group). Returns the result, the folder, and whether this process reports."""
    progress, board = not a.no_progress, tensorboard_folder(a.tensorboard)
    every = {"checkpoint_every": a.checkpoint_every, "tensorboard": board}
    if a.resume is not None:
        out = Path(a.resume)
        if not a.distributed:
            return resume(out, progress, **every), out, True
        # every rank checks the folder before the process group forms: bad input is exit 2
        checkpoint = check_resumable(out, int(os.environ["WORLD_SIZE"]))
        world = init_world(checkpoint.config.train.device)
        try:
            progress = progress and world.main
            result = resume(out, progress, world=world, **every)
            return result, out, world.main
        finally:
            close_world()
    config = config_from_args(a)
    build(config)  # a bad prior or guide setting fails here, before any output is written
    check_device(a.device)
    out = check_writable(a.out)
    if not a.overwrite:
        prepare_run_dir(out, "refuse")  # only looks: a folder holding a run is refused now
    data = data_for(config)
    existing = "overwrite" if a.overwrite else "refuse"
    if not a.distributed:
        return fit(config, out, progress, data, existing, **every), out, True
    world = init_world(a.device)  # after every rank's checks: none has written anything yet
    try:
        progress = progress and world.main
        result = fit(config, out, progress, data, existing, world=world, **every)
        return result, out, world.main
    finally:
        close_world()


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    at_least(a.checkpoint_every, 0, "--checkpoint-every")
    if a.distributed and not launched_by_torchrun():
        raise UsageError(
            "--distributed runs under torchrun: "
            "torchrun --nproc_per_node N experiments/train_svi.py --distributed ..."
        )
    try:
        result, out, reports = train(a)
    except TrainingInterrupted as e:
        run = a.resume or a.out
        how = f"--resume {run}"
        if a.distributed:
            size = os.environ["WORLD_SIZE"]
            how = f"torchrun --nproc_per_node {size} experiments/train_svi.py --distributed {how}"
        raise TrainingInterrupted(f"{e}; continue with {how}", e.signum) from None
    if reports:
        print_summary(result.summary, out)
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
