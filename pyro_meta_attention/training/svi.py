"""SVI training: `fit(config)` builds model and guide, trains them with an ELBO, writes the run;
`resume(run_dir)` continues a run from its checkpoint.

Read top-down, one step each:

    fit / resume   set up (`_setup`), then `_run`: `_train`, the final checkpoint, `summarise`
    _setup         data, seed, model + guide on the device, the ELBOModule, the run folder
    _train         the loop: schedules, `_svi_step`, a metrics row every `log_every` steps,
                   a checkpoint every `checkpoint_every` steps and on SIGINT / SIGTERM
    _svi_step      one ELBO gradient step with gradient-norm clipping
    summarise      held-out nats under soft routing plus routing statistics (`summary.py`)

A checkpoint holds network, guide, optimiser, step and every random state (`rng.py`), so a
resumed run logs exactly the rows the uninterrupted run would have (bitwise on the CPU with the
same thread count). A run that fails before its first step leaves no run files behind; one
whose loss diverges (`divergence.py`) stops, keeping its last good checkpoint.

Nothing lives in Pyro's global param store (`module_local_params`; it is cleared at the start
anyway). Schedules: `schedules.py`; the all-full warm-up of the routing recipe: `warmup.py`;
the run folder's owner and lock: `run_dir.py`; several processes: `distributed.py`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm import tqdm  # the plain bar: no ipywidgets needed in a notebook

from ..analysis.routing_stats import routing_stats
from ..bayes.guide import RoutingGuide
from ..bayes.model import RoutingModel
from ..config import RunConfig
from ..data.batches import Batch
from ..data.sources import DataSource, data_for
from ..mechanisms.cost import cost_model_for
from .build import build, make_elbo, make_optimizer, set_seed
from .checkpoint import Checkpoint, check_resumable, continues, restore, save_checkpoint
from .data_identity import DataMismatch, identity, training_data
from .distributed import World, agree_stop, gather, mean_across, rank_seed, shard, wrap
from .divergence import TrainingDiverged, Watchdog
from .rng import rng_state, set_rng_state
from .run_dir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    SUMMARY_FILE,
    append_metrics,
    check_owner,
    check_writable,
    clear_run,
    keep_history,
    lock_run_dir,
    prepare_run_dir,
    write_config,
    write_json,
)
from .schedules import hardening_tau, kl_beta, lr_factor
from .signals import TrainingInterrupted, stop_on_signals
from .summary import metrics_row, summarise
from .tensorboard import TensorBoardLog
from .warmup import FullWarmup, reference_gap

logger = logging.getLogger(__name__)
CHECKPOINT_EVERY = 500  # default steps between periodic checkpoints (0 = none)


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
    generator: torch.Generator  # the batch sampler's
    out: Path | None  # the run folder (None: nothing is written)
    checkpoint_every: int  # steps between periodic checkpoints (0 = none)
    resumed: Checkpoint | None = None  # the checkpoint a resumed run continues
    done: int = 0  # SVI steps done
    step_times: list[float] = field(default_factory=list)
    boundary: tuple[int, dict[str, Any]] | None = None  # (steps done, random states) then
    saved: int | None = None  # steps done at the last checkpoint written
    world: World | None = None  # the DDP process group (None: one process)
    run_id: str | None = None  # the run's owner id (None: a run from before run ids)
    warmup: FullWarmup | None = None  # when the network trains all-full (warmup.py)
    lock: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # the folder's
    board: TensorBoardLog | None = None  # the TensorBoard event writer (rank 0; tensorboard.py)

    def batch(self) -> Batch:
        """The step's global batch: B windows, or B per rank (every rank draws the same)."""
        tc = self.result.config.train
        size = tc.batch_size * (1 if self.world is None else self.world.size)
        return self.result.data.train_batch(size, self.generator).to(tc.device)


def fit(
    config: RunConfig,
    out: str | Path | None = None,
    progress: bool = True,
    data: DataSource | None = None,
    existing: str = "overwrite",
    checkpoint_every: int = CHECKPOINT_EVERY,
    world: World | None = None,
    tensorboard: str | Path | None = None,
) -> FitResult:
    """Train with SVI; with `out`, write config.json, metrics.jsonl, checkpoint.pt, summary.json;
    with `tensorboard`, the curves to that folder's event file (`tensorboard.py`).

    `existing` says what to do with an `out` that holds a run: "overwrite" it, "refuse"
    (RunDirError), or "resume" it when it holds a checkpoint of this config. With `world`
    (`distributed.init_world`) this process is one rank of a DDP run; only rank 0 writes `out`.
    """
    if world is not None:
        if existing == "resume":
            raise ValueError("a distributed run cannot resume a run folder")
        out = out if world.main else None
    if out is not None and existing == "resume":
        data = data_for(config) if data is None else data
        if continues(Path(out), config, data.sha256):
            return resume(out, progress, data, checkpoint_every, tensorboard=tensorboard)
        existing = "overwrite"
    session = _setup(config, out, data, existing, checkpoint_every, world=world)
    return _run(session, progress, tensorboard)


def resume(
    run_dir: str | Path,
    progress: bool = True,
    data: DataSource | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    world: World | None = None,
    tensorboard: str | Path | None = None,
) -> FitResult:
    """Continue the run in `run_dir` from its checkpoint (`check_resumable`; a finished one is
    only summarised). With `world` this process is one rank of the run's own world size; only
    rank 0 writes."""
    run_dir = Path(run_dir).expanduser()
    checkpoint = check_resumable(run_dir, 1 if world is None else world.size)
    if data is None and checkpoint.corpus is None:
        data = data_for(checkpoint.config)
    elif data is None:
        try:
            data = training_data(checkpoint.config, checkpoint.corpus)
        except DataMismatch as e:
            raise DataMismatch(f"cannot resume {run_dir}: {e}") from None
    out = run_dir if world is None or world.main else None
    session = _setup(checkpoint.config, out, data, "resume", checkpoint_every, checkpoint, world)
    return _run(session, progress, tensorboard)


def _run(s: _Session, progress: bool, tensorboard: str | Path | None) -> FitResult:
    """Train (unless finished), write the final checkpoint, then the summary; the folder's lock
    and the event file are released at the end, however it ends."""
    r, steps = s.result, s.result.config.train.steps
    with s.lock:
        if tensorboard is not None and (s.world is None or s.world.main):
            s.board = s.lock.enter_context(contextlib.closing(TensorBoardLog(tensorboard)))
        if s.done < steps:
            try:
                optimizer = _train(s, progress)
            except BaseException:
                if s.out is not None and s.resumed is None and s.done == 0:
                    clear_run(s.out)  # failed before its first step: no half-written folder
                raise
            _save(s, rng_state(s.generator), optimizer)
        r.summary = summarise(r.config, r.model, r.guide, r.data, s.step_times)
        r.summary["world_size"] = 1 if s.world is None else s.world.size
        if s.out is not None:
            write_json(s.out / SUMMARY_FILE, r.summary)
        if s.board is not None:
            s.board.summary(r.summary, s.done)
    return r


def _setup(
    config: RunConfig,
    out: str | Path | None,
    data: DataSource | None,
    existing: str,
    checkpoint_every: int,
    resumed: Checkpoint | None = None,
    world: World | None = None,
) -> _Session:
    tc = config.train
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
    if tc.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch.cuda.is_available() is False")
    pyro.settings.set(module_local_params=True)
    pyro.clear_param_store()
    data = data_for(config) if data is None else data
    gen = set_seed(tc.seed)
    model, guide = build(config) if resumed is None else restore(resumed)
    model, guide = model.to(tc.device), guide.to(tc.device)
    if world is not None and world.rank > 0:  # each rank its own routing samples
        torch.manual_seed(rank_seed(tc.seed, world.rank))
    result = FitResult(config, model, guide, data)
    out_dir = None if out is None else Path(out)
    elbo = make_elbo(tc.elbo)(model, guide)
    s = _Session(result, elbo, gen, out_dir, checkpoint_every, world=world)
    run_id = uuid.uuid4().hex if resumed is None else resumed.state.get("run_id")
    s.run_id = gather(run_id, world)[0]  # rank 0's, on every rank
    s.warmup = FullWarmup.of(tc, model.prior.fixed_weights() is not None)
    s.warmup.load(None if resumed is None else resumed.state.get("warmup"))
    if resumed is not None:
        s.resumed, s.done, s.saved = resumed, resumed.step, resumed.step
        s.step_times = list(resumed.state.get("step_times", []))
    if out_dir is not None:
        check_writable(out_dir)
        with s.lock:  # taken before anything in the folder is read or deleted; kept on success
            s.lock.enter_context(lock_run_dir(out_dir))
            prepare_run_dir(out_dir, existing)
            _start_run_dir(s)
            s.lock = s.lock.pop_all()
    return s


def _start_run_dir(s: _Session) -> None:
    """config.json (config, seed, versions, data, cost model) and metrics.jsonl: empty, or the
    rows of a resumed run before its checkpoint."""
    assert s.out is not None
    r = s.result
    has_config = s.resumed is not None and check_owner(s.out, r.config, s.run_id)
    r.history = keep_history(s.out, s.done, s.run_id)
    if not has_config:
        if s.resumed is not None:
            logger.warning("%s is missing: rebuilt from the checkpoint", s.out / CONFIG_FILE)
        cost = cost_model_for(r.config.model).to_dict()
        extra = {"seed": r.config.train.seed, "corpus": r.data.record(), "cost_model": cost}
        extra["run_id"] = s.run_id
        if s.world is not None:
            extra["distributed"] = {"world_size": s.world.size, "backend": s.world.backend}
        write_config(s.out, r.config, extra)


def _save(s: _Session, rng: dict[str, Any], optimizer) -> None:
    """The checkpoint after `s.done` steps: weights, optimiser, random states (of every rank:
    every rank calls this), data identity."""
    ranks = None if s.world is None else gather(rng, s.world)
    if s.out is None:
        return
    r = s.result
    extra = {"optimizer": optimizer.state_dict(), "rng": rng, "step_times": s.step_times}
    extra |= {"corpus": identity(r.config, r.data), "run_id": s.run_id}
    extra |= {"world_size": 1 if s.world is None else s.world.size, "warmup": s.warmup.state()}
    if ranks is not None:
        extra["rng_ranks"] = ranks
    save_checkpoint(s.out / CHECKPOINT_FILE, r.config, r.model, r.guide, s.done, **extra)
    s.saved = s.done


def _start(s: _Session) -> tuple[Any, Batch | None]:
    """(optimiser, first batch of a fresh run): Pyro's set-up call on a batch, the optimiser,
    DDP around the ELBO when distributed, and for a resumed run its optimiser and random
    states."""
    r, tc = s.result, s.result.config.train
    if s.resumed is None:
        first = s.batch()
    else:  # any batch will do: the random states are restored after this call
        first = r.data.train_batch(tc.batch_size, torch.Generator().manual_seed(0)).to(tc.device)
    mine = shard(first, s.world)
    s.elbo(mine.x, mine.y, obs_mask=mine.mask)  # lets Pyro set up before the optimiser and DDP
    optimizer = make_optimizer(r.model, r.guide, r.config)
    if s.world is not None:  # a fixed prior's guide network takes no part in the loss
        s.elbo = wrap(s.elbo, s.world, find_unused=r.guide.prior.fixed_weights() is not None)
    if s.resumed is None:
        return optimizer, first
    optimizer.load_state_dict(s.resumed.state["optimizer"])
    rank = 0 if s.world is None else s.world.rank
    set_rng_state(s.resumed.state.get("rng_ranks", [s.resumed.state["rng"]])[rank], s.generator)
    return optimizer, None


def _train(s: _Session, progress: bool) -> torch.optim.Optimizer:
    """The SVI loop; stopped by SIGINT / SIGTERM it saves its checkpoint and raises
    TrainingInterrupted (a KeyboardInterrupt mid-step: it saves, then re-raises)."""
    r, tc = s.result, s.result.config.train
    optimizer, pending = _start(s)
    watch = Watchdog(r.config.model.vocab_size)
    bar = tqdm(range(s.done, tc.steps), desc=f"svi {r.config.prior.name}", disable=not progress)
    with stop_on_signals() as stop:
        try:
            for step in bar:
                s.boundary = (s.done, rng_state(s.generator))
                batch, pending = (s.batch() if pending is None else pending), None
                row = _svi_step(s, optimizer, step, batch, watch)
                if row is not None:
                    _log(s, row, bar)
                    watch.check_row(row["nats_per_token"], step, last=step == tc.steps - 1)
                signum = agree_stop(stop.signum, s.world)  # any rank's signal stops all
                if signum is not None and s.done < tc.steps:
                    _stop(s, optimizer, signal.Signals(signum).name, signum)
                every = s.checkpoint_every
                if every and s.done % every == 0 and s.done < tc.steps and not watch.high:
                    _save(s, rng_state(s.generator), optimizer)
        except KeyboardInterrupt:
            _interrupted(s, optimizer)
            raise
        except TrainingDiverged as e:
            kept = "no checkpoint was written" if s.saved is None else f"step {s.saved} kept"
            raise TrainingDiverged(f"{e}; last good checkpoint: {kept}") from None
    return optimizer


def _log(s: _Session, row: dict[str, Any], bar) -> None:
    row["run_id"] = s.run_id
    s.result.history.append(row)
    if s.out is not None:
        append_metrics(s.out, row)
    if s.board is not None:
        s.board.row(row)
    share = "/".join(f"{v:.2f}" for v in row["routing_share"])
    bar.set_postfix(loss=f"{row['loss']:.3f}", kl=f"{row['kl'] or 0:.3f}", share=share)


def _stop(s: _Session, optimizer, name: str, signum: int) -> None:
    """Save after a signal, then raise TrainingInterrupted."""
    _save(s, rng_state(s.generator), optimizer)
    where = f"; checkpoint saved in {s.out}" if s.out is not None else ""
    if s.world is not None and not s.world.main:
        where = f" (rank {s.world.rank}; rank 0 saved the checkpoint)"
    steps = s.result.config.train.steps
    raise TrainingInterrupted(f"{name} after step {s.done} of {steps}{where}", signum)


def _interrupted(s: _Session, optimizer) -> None:
    """A KeyboardInterrupt mid-step: save what was trained (one process, after its first step)."""
    if s.out is None or s.done == 0 or s.world is not None:
        return
    at, rng = s.boundary if s.boundary is not None else (None, None)
    _save(s, rng if at == s.done else rng_state(s.generator), optimizer)
    logger.warning("interrupted after step %d: checkpoint saved to %s", s.done, s.out)


def _svi_step(
    s: _Session, optimizer, step: int, batch: Batch, watch: Watchdog
) -> dict[str, Any] | None:
    """One gradient step on a batch (this process's part of it); returns the metrics row when
    this step logs, else None."""
    r, tc = s.result, s.result.config.train
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * lr_factor(step, tc.warmup, tc.steps)
    beta = kl_beta(step, tc.kl_weight, tc.kl_anneal)
    at = step - s.warmup.offset()  # hardening counts from the warm-up's end ("evidence")
    tau = hardening_tau(at, tc.harden_start, tc.harden_end, tc.harden_final)
    warm = s.warmup.active(step)
    route = s.warmup.route(step)  # warm-up: all-full (or all-full and all-local alternately)
    x, mine = batch.x, shard(batch, s.world)  # statistics: global batch; loss: this rank's
    t0 = time.perf_counter()
    if warm and s.warmup.probes(step):  # the evidence that ends an "evidence" warm-up
        gap = reference_gap(r.model.net, mine.x, mine.y, mine.mask)
        s.warmup.observe(step, mean_across(torch.tensor(gap), s.world))
    loss = s.elbo(mine.x, mine.y, beta=beta, tau=tau, obs_mask=mine.mask, route=route)
    loss_value = mean_across(loss, s.world)  # the global batch's loss
    watch.check_loss(loss_value, step)  # before the update: the checkpoint stays good
    logging = step % tc.log_every == 0 or step == tc.steps - 1
    if logging:  # before the update, so that kl is the KL term inside this step's loss
        with torch.no_grad():
            alpha_bar = r.guide.posterior_mean(x)  # [B, T, L, M]
            stats = routing_stats(r.guide, x, alpha_bar)
            if s.board is not None:
                s.board.alphas(step, alpha_bar)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = list(r.model.parameters()) + list(r.guide.parameters())
    torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
    optimizer.step()
    s.done = step + 1
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    s.step_times.append(time.perf_counter() - t0)
    if not logging:
        return None
    scored = 1.0 if batch.mask is None else x.numel() / int(batch.mask.sum())  # tokens / scored
    return metrics_row(step, loss_value, scored, beta, tau, warm, s.warmup.gap(), stats)
