"""What a run reports: a `metrics.jsonl` row every `log_every` steps (`metrics_row`), and when
finished `summary.json`: held-out nats under soft routing, the routing statistics of the guide
on the held-out split and the `routing_learned` verdict (`summarise`)."""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch

from ..analysis.bits import bits_per_byte
from ..analysis.evaluation import soft_val_metrics
from ..analysis.routing_stats import routing_learned, routing_stats
from ..bayes.guide import RoutingGuide
from ..bayes.model import RoutingModel
from ..config import RunConfig
from ..data.sources import DataSource, held_out_batches
from ..mechanisms.cost import cost_model_for
from .divergence import diverged


def metrics_row(
    step: int,
    loss: float,
    scored: float,
    beta: float,
    tau: float,
    warm: bool,
    gap: float | None,
    stats: dict[str, Any],
) -> dict[str, Any]:
    """One metrics row: the step's loss (nats per token; KL, hyperprior and penalty included),
    its nats per scored token (`scored` = tokens / scored tokens), the schedules, the warm-up
    state and the guide's routing statistics on the batch. Under the warm-up's fixed all-full
    route the penalty is not in the loss (bayes.model), so it is not taken out."""
    penalty = 0.0 if warm else (stats["penalty"] or 0.0)
    prior_terms = (stats["kl"] or 0.0) + (stats["hyperprior"] or 0.0)
    nats = (loss - beta * prior_terms - penalty) * scored
    return {
        "step": step,
        "loss": loss,
        "nats_per_token": nats,
        "bits_per_byte": bits_per_byte(nats),
        "beta": beta,
        "tau": tau,
        "full_warmup": warm,
        "reference_gap": gap,
        **stats,
    }


def summarise(
    config: RunConfig,
    model: RoutingModel,
    guide: RoutingGuide,
    data: DataSource,
    step_times: list[float],
) -> dict[str, Any]:
    """Validation metrics under soft routing plus routing statistics on the held-out split;
    a run whose held-out loss is non-finite or far above uniform is marked diverged."""
    device = next(model.parameters()).device
    batches = held_out_batches(data, config, device=device)
    with torch.no_grad():
        val = soft_val_metrics(model, guide, batches)
        stats = routing_stats(guide, torch.cat([b.x for b in batches]))
    learned, verdict = routing_learned(stats, guide.prior)
    bad = diverged(val["nats"], config.model.vocab_size)
    if bad:
        learned, verdict = False, f"DIVERGED: held-out loss {val['nats']:.4g} nats/token"
    cost = cost_model_for(config.model)
    nats = val["nats"] if math.isfinite(val["nats"]) else None
    return {
        "prior": config.prior.name,
        "steps": config.train.steps,
        "val_nats_per_token": nats,
        "val_bits_per_byte": bits_per_byte(nats),
        "val_accuracy": val["accuracy"],
        "val_tokens": sum(b.y.numel() if b.mask is None else int(b.mask.sum()) for b in batches),
        **stats,
        "projected_hard_cost": cost.projected_cost(torch.tensor(stats["routing_share"])),
        "cost_vector": cost.normalised().tolist(),
        "prior_mean": None if guide.prior.mean() is None else guide.prior.mean().tolist(),
        "diverged": bad,
        "routing_learned": learned,
        "verdict": verdict,
        "median_step_s": statistics.median(step_times) if step_times else None,
    }
