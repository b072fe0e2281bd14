"""SVI training: `fit(config)` builds model and guide, trains them with an ELBO, writes the run.

Model and guide are modules with module-local parameters, combined into one `ELBOModule`
(`TraceMeanField_ELBO()(model, guide)`) and trained with a torch optimiser — the path that
carries over to torch DDP. Nothing lives in Pyro's global param store, and it is cleared at the
start anyway, so a new module can never silently pick up an old run's weights.

ELBO estimators (`TrainConfig.elbo`):
- "meanfield": `TraceMeanField_ELBO`, analytic Dirichlet KL (exact here: the prior on alpha is
  fixed, so no guide descendant of a latent is a model parent of it);
- "trace": `Trace_ELBO`, the Monte Carlo estimator the design names.
The default was chosen by `experiments/elbo_variance.py` (see the README).

Schedules: beta (the KL weight) rises linearly from kl_weight / kl_anneal to kl_weight over
`kl_anneal` steps; the learning rate warms up linearly, then decays by cosine to 10%; the
optional soft-to-hard schedule raises the hardening threshold tau (`routing.hardening_tau`).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from tqdm.auto import tqdm

from .checkpoint import (
    CHECKPOINT_FILE,
    SUMMARY_FILE,
    append_metrics,
    save_checkpoint,
    write_config,
    write_json,
)
from .config import RunConfig
from .cost import cost_model_for
from .data import Corpus, load_corpus, sample_batch, val_windows
from .guide import RoutingGuide
from .metrics import routing_learned, routing_stats, soft_val_nats
from .model import RoutingModel
from .network import RoutedTransformer
from .priors import make_prior
from .routing import hardening_tau

logger = logging.getLogger(__name__)
ELBOS = {"meanfield": TraceMeanField_ELBO, "trace": Trace_ELBO}


def build(config: RunConfig) -> tuple[RoutingModel, RoutingGuide]:
    """Fresh model (network + prior) and guide for a config, on the CPU."""
    cost = cost_model_for(config.model).normalised()
    prior = make_prior(config.prior, cost)
    model = RoutingModel(RoutedTransformer(config.model), prior)
    guide = RoutingGuide(config.model, config.guide, prior)
    return model, guide


def make_elbo(name: str):
    if name not in ELBOS:
        raise ValueError(f"unknown elbo {name!r}; choose one of {sorted(ELBOS)}")
    return ELBOS[name](max_plate_nesting=2)


def kl_beta(step: int, kl_weight: float, anneal: int) -> float:
    """KL weight at 0-based `step`: linear from kl_weight / anneal up to kl_weight."""
    if anneal <= 0:
        return kl_weight
    return kl_weight * min(1.0, (step + 1) / anneal)


def lr_factor(step: int, warmup: int, steps: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: RoutingModel, guide: RoutingGuide, config: RunConfig):
    """AdamW; weight decay on the network's matrices only (not norms, biases or the guide)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2] + list(guide.parameters())
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.train.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.train.lr,
    )


@dataclass
class FitResult:
    config: RunConfig
    model: RoutingModel
    guide: RoutingGuide
    corpus: Corpus
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def set_seed(seed: int) -> torch.Generator:
    pyro.set_rng_seed(seed)  # seeds python, numpy and torch
    return torch.Generator().manual_seed(seed)


def fit(
    config: RunConfig,
    out: str | Path | None = None,
    progress: bool = True,
    corpus: Corpus | None = None,
) -> FitResult:
    """Train with SVI; with `out`, write config.json, metrics.jsonl, checkpoint.pt, summary.json."""
    tc, mc = config.train, config.model
    device = torch.device(tc.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but torch.cuda.is_available() is False")
    pyro.settings.set(module_local_params=True)
    pyro.clear_param_store()
    if corpus is None:
        corpus = load_corpus(
            config.data.path, mc.block_size, config.data.max_bytes, config.data.val_fraction
        )
    gen = set_seed(tc.seed)
    model, guide = build(config)
    model, guide = model.to(device), guide.to(device)
    elbo = make_elbo(tc.elbo)(model, guide)
    cost = cost_model_for(mc)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.jsonl").write_text("")
        write_config(
            out_dir,
            config,
            {
                "seed": tc.seed,
                "corpus": {
                    "name": corpus.name,
                    "bytes": corpus.n_bytes,
                    "sha256": corpus.sha256,
                    "train_bytes": corpus.train.numel(),
                    "val_bytes": corpus.val.numel(),
                },
                "cost_model": cost.to_dict(),
            },
        )

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = sample_batch(corpus.train, tc.batch_size, mc.block_size, gen)
        return x.to(device), y.to(device)

    x, y = batch()
    elbo(x, y)  # warm-up call: lets Pyro set up before the optimiser sees the parameters
    optimizer = make_optimizer(model, guide, config)
    result = FitResult(config, model, guide, corpus)
    step_times: list[float] = []
    bar = tqdm(range(tc.steps), desc=f"svi {config.prior.name}", disable=not progress)
    step = 0
    try:
        for step in bar:
            beta = kl_beta(step, tc.kl_weight, tc.kl_anneal)
            for group in optimizer.param_groups:
                group["lr"] = tc.lr * lr_factor(step, tc.warmup, tc.steps)
            t0 = time.perf_counter()
            tau = hardening_tau(step, tc.harden_start, tc.harden_end, tc.harden_final)
            loss = elbo(x, y, beta=beta, tau=tau)
            logging = step % tc.log_every == 0 or step == tc.steps - 1
            if logging:  # before the update, so that kl is the KL term inside this step's loss
                with torch.no_grad():
                    stats = routing_stats(guide, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                list(model.parameters()) + list(guide.parameters()), tc.grad_clip
            )
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - t0)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"non-finite loss {loss_value} at step {step}")
            if logging:
                kl = stats["kl"] or 0.0
                row = {
                    "step": step,
                    "loss": loss_value,
                    "nats_per_token": loss_value - beta * kl,
                    "beta": beta,
                    "tau": tau,
                    **stats,
                }
                result.history.append(row)
                if out_dir is not None:
                    append_metrics(out_dir, row)
                bar.set_postfix(
                    loss=f"{loss_value:.3f}",
                    kl=f"{kl:.3f}",
                    share="/".join(f"{s:.2f}" for s in stats["routing_share"]),
                )
            x, y = batch()
    except KeyboardInterrupt:
        if out_dir is not None:  # keep what was trained; the summary is not written
            save_checkpoint(out_dir / CHECKPOINT_FILE, config, model, guide, step)
            logger.warning("interrupted at step %d: checkpoint saved to %s", step, out_dir)
        raise
    result.summary = summarise(result, cost, step_times)
    if out_dir is not None:
        save_checkpoint(out_dir / CHECKPOINT_FILE, config, model, guide, tc.steps)
        write_json(out_dir / SUMMARY_FILE, result.summary)
    return result


def summarise(result: FitResult, cost, step_times: list[float]) -> dict[str, Any]:
    """Validation metrics under soft routing plus routing statistics on the held-out split."""
    tc, mc = result.config.train, result.config.model
    device = next(result.model.parameters()).device
    batches = [
        (x.to(device), y.to(device))
        for x, y in val_windows(result.corpus.val, tc.batch_size, mc.block_size, tc.val_batches)
    ]
    model, guide = result.model, result.guide
    with torch.no_grad():
        val_nats = soft_val_nats(model, guide, batches)
        stats = routing_stats(guide, torch.cat([x for x, _ in batches]))
    learned, verdict = routing_learned(stats, guide.prior)
    return {
        "prior": result.config.prior.name,
        "steps": tc.steps,
        "val_nats_per_token": val_nats,
        "val_tokens": sum(y.numel() for _, y in batches),
        **stats,
        "projected_hard_cost": cost.projected_cost(torch.tensor(stats["routing_share"])),
        "cost_vector": cost.normalised().tolist(),
        "prior_mean": None if guide.prior.mean() is None else guide.prior.mean().tolist(),
        "routing_learned": learned,
        "verdict": verdict,
        "median_step_s": statistics.median(step_times) if step_times else None,
    }
