"""SVI training: `fit(config)` builds model and guide, trains them with an ELBO, writes the run.

Read top-down, one step each:

    fit            set up (`_setup`), then `_train`, then `summarise`, writing the run folder
    _setup         data, seed, model + guide on the device, the ELBOModule, the run folder
    _train         the loop: schedules, `_svi_step`, a metrics row every `log_every` steps
    _svi_step      one ELBO gradient step with gradient-norm clipping
    summarise      held-out nats under soft routing plus routing statistics

Nothing lives in Pyro's global param store (`module_local_params`), and it is cleared at the
start anyway, so a new module can never silently pick up an old run's weights. Schedules (KL
weight, learning rate, hardening threshold) are in `schedules.py`. With `full_warmup` the
network first learns with every token on full attention (MQAR's chicken-and-egg: a network that
has not learned recall gives the router no reason to pick full), then the routing acts.
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
from tqdm.auto import tqdm

from ..analysis.evaluation import soft_val_metrics
from ..analysis.routing_stats import routing_learned, routing_stats
from ..bayes.guide import RoutingGuide
from ..bayes.model import RoutingModel
from ..config import RunConfig
from ..data.batches import Batch
from ..data.sources import DataSource, data_for, held_out_batches
from ..mechanisms import MECHANISMS
from ..mechanisms.cost import cost_model_for
from .build import build, make_elbo, make_optimizer, set_seed
from .checkpoint import save_checkpoint
from .run_dir import CHECKPOINT_FILE, SUMMARY_FILE, append_metrics, write_config, write_json
from .schedules import hardening_tau, kl_beta, lr_factor

logger = logging.getLogger(__name__)
FULL = torch.eye(len(MECHANISMS))[MECHANISMS.index("full")]  # the simplex's full corner [M]


@dataclass
class FitResult:
    config: RunConfig  # what was trained
    model: RoutingModel  # network + prior, trained
    guide: RoutingGuide  # the amortised posterior, trained
    data: DataSource  # the corpus or task it was trained on
    history: list[dict[str, Any]] = field(default_factory=list)  # the metrics.jsonl rows
    summary: dict[str, Any] = field(default_factory=dict)  # what summary.json holds


@dataclass
class _Session:
    """What the loop needs: the result being built, the ELBO, the batch source, the folder."""

    result: FitResult
    elbo: Any  # the ELBOModule: elbo(x, y, beta=..., tau=...) -> loss
    batch: Any  # () -> Batch on the device
    out: Path | None
    step_times: list[float] = field(default_factory=list)


def fit(
    config: RunConfig,
    out: str | Path | None = None,
    progress: bool = True,
    data: DataSource | None = None,
) -> FitResult:
    """Train with SVI; with `out`, write config.json, metrics.jsonl, checkpoint.pt, summary.json."""
    session = _setup(config, out, data)
    _train(session, progress)
    result = session.result
    result.summary = summarise(result, session.step_times)
    if session.out is not None:
        save_checkpoint(
            session.out / CHECKPOINT_FILE, config, result.model, result.guide, config.train.steps
        )
        write_json(session.out / SUMMARY_FILE, result.summary)
    return result


def _setup(config: RunConfig, out: str | Path | None, data: DataSource | None) -> _Session:
    tc = config.train
    device = torch.device(tc.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but torch.cuda.is_available() is False")
    pyro.settings.set(module_local_params=True)
    pyro.clear_param_store()
    data = data_for(config) if data is None else data
    gen = set_seed(tc.seed)
    model, guide = (m.to(device) for m in build(config))
    out_dir = None if out is None else Path(out)
    if out_dir is not None:
        _start_run_dir(out_dir, config, data)

    def batch() -> Batch:
        return data.train_batch(tc.batch_size, gen).to(device)

    result = FitResult(config, model, guide, data)
    return _Session(result, make_elbo(tc.elbo)(model, guide), batch, out_dir)


def _start_run_dir(out: Path, config: RunConfig, data: DataSource) -> None:
    """config.json (config, seed, versions, data, cost model) and an empty metrics.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").write_text("")
    cost = cost_model_for(config.model).to_dict()
    extra = {"seed": config.train.seed, "corpus": data.record(), "cost_model": cost}
    write_config(out, config, extra)


def _train(s: _Session, progress: bool) -> None:
    """The SVI loop; on Ctrl-C the checkpoint so far is saved (no summary) and it re-raises."""
    r, tc = s.result, s.result.config.train
    batch = s.batch()
    s.elbo(
        batch.x, batch.y, obs_mask=batch.mask
    )  # warm-up call: lets Pyro set up before the optimiser sees the parameters
    optimizer = make_optimizer(r.model, r.guide, r.config)
    bar = tqdm(range(tc.steps), desc=f"svi {r.config.prior.name}", disable=not progress)
    step = 0
    try:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(step, tc.warmup, tc.steps)
            row = _svi_step(s, optimizer, step, batch)
            if row is not None:
                r.history.append(row)
                if s.out is not None:
                    append_metrics(s.out, row)
                share = "/".join(f"{v:.2f}" for v in row["routing_share"])
                bar.set_postfix(loss=f"{row['loss']:.3f}", kl=f"{row['kl'] or 0:.3f}", share=share)
            batch = s.batch()
    except KeyboardInterrupt:
        if s.out is not None:  # keep what was trained; the summary is not written
            save_checkpoint(s.out / CHECKPOINT_FILE, r.config, r.model, r.guide, step)
            logger.warning("interrupted at step %d: checkpoint saved to %s", step, s.out)
        raise


def _svi_step(s: _Session, optimizer, step: int, batch: Batch) -> dict[str, Any] | None:
    """One gradient step on a batch; returns the metrics row when this step logs, else None."""
    r, tc = s.result, s.result.config.train
    beta = kl_beta(step, tc.kl_weight, tc.kl_anneal)
    tau = hardening_tau(step, tc.harden_start, tc.harden_end, tc.harden_final)
    route = FULL if step < tc.full_warmup else None  # warm-up: the network runs all-full
    x = batch.x
    t0 = time.perf_counter()
    loss = s.elbo(x, batch.y, beta=beta, tau=tau, obs_mask=batch.mask, route=route)
    logging = step % tc.log_every == 0 or step == tc.steps - 1
    if logging:  # before the update, so that kl is the KL term inside this step's loss
        with torch.no_grad():
            stats = routing_stats(r.guide, x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = list(r.model.parameters()) + list(r.guide.parameters())
    torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
    optimizer.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    s.step_times.append(time.perf_counter() - t0)
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"non-finite loss {loss_value} at step {step}")
    if not logging:
        return None
    # loss, kl and penalty are per token; nats are per scored token (all, or the batch's mask);
    # under the warm-up's fixed route the penalty is not in the loss (bayes.model)
    penalty = 0.0 if route is not None else (stats["penalty"] or 0.0)
    routing_terms = beta * (stats["kl"] or 0.0) + penalty
    per_scored = 1.0 if batch.mask is None else x.numel() / int(batch.mask.sum())
    return {
        "step": step,
        "loss": loss_value,
        "nats_per_token": (loss_value - routing_terms) * per_scored,
        "beta": beta,
        "tau": tau,
        **stats,
    }


def summarise(result: FitResult, step_times: list[float]) -> dict[str, Any]:
    """Validation metrics under soft routing plus routing statistics on the held-out split."""
    config, model, guide = result.config, result.model, result.guide
    device = next(model.parameters()).device
    batches = held_out_batches(result.data, config, device=device)
    with torch.no_grad():
        val = soft_val_metrics(model, guide, batches)
        stats = routing_stats(guide, torch.cat([b.x for b in batches]))
    learned, verdict = routing_learned(stats, guide.prior)
    cost = cost_model_for(config.model)
    return {
        "prior": config.prior.name,
        "steps": config.train.steps,
        "val_nats_per_token": val["nats"],
        "val_accuracy": val["accuracy"],
        "val_tokens": sum(b.y.numel() if b.mask is None else int(b.mask.sum()) for b in batches),
        **stats,
        "projected_hard_cost": cost.projected_cost(torch.tensor(stats["routing_share"])),
        "cost_vector": cost.normalised().tolist(),
        "prior_mean": None if guide.prior.mean() is None else guide.prior.mean().tolist(),
        "routing_learned": learned,
        "verdict": verdict,
        "median_step_s": statistics.median(step_times) if step_times else None,
    }
