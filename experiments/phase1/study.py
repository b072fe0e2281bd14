"""Phase-1 study: every routing model on the same network, data, steps and seeds, evaluated alike.

A `Budget` fixes the network, corpus cap, training length, seeds and ablation grid; `plan` turns
it into runs (the `MODELS`, then compute-dirichlet over the λ × κ grid); `run_one` trains or
reuses one run and evaluates it on the held-out batches (soft and hard routing, routing
statistics, epistemic uncertainty, per-class shares on the synthetic task); `report.py`
aggregates over seeds and writes the table beside the paper's numbers.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyro
import torch
from common import visible

from pyro_meta_attention.analysis.evaluation import evaluate_policy, transition_curve
from pyro_meta_attention.analysis.routing_stats import class_shares, routing_stats
from pyro_meta_attention.analysis.uncertainty import (
    posterior_samples,
    routing_uncertainty,
    uncertainty_report,
)
from pyro_meta_attention.bayes.guide import RoutingGuide, check_representable
from pyro_meta_attention.bayes.model import RoutingModel
from pyro_meta_attention.bayes.priors import make_prior
from pyro_meta_attention.bayes.sites import routing_site
from pyro_meta_attention.config import (
    GuideConfig,
    ModelConfig,
    PriorConfig,
    RunConfig,
    smoke_config,
)
from pyro_meta_attention.data.corpus import Corpus
from pyro_meta_attention.data.recall import RECALL_TASK
from pyro_meta_attention.data.sources import DataSource, data_for, held_out_batches
from pyro_meta_attention.mechanisms import MECHANISMS
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.policies import Policy
from pyro_meta_attention.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
)
from pyro_meta_attention.training.run_dir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    SUMMARY_FILE,
    read_json,
    write_json,
)
from pyro_meta_attention.training.svi import fit

EVAL_FILE = "phase1_eval.json"
TRANSITION_FILE = "phase1_transition.json"
THRESHOLDS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.01)
_MODEL_NAMES = "compute-dirichlet none symmetric-dirichlet fixed-full fixed-linear fixed-local"
MODELS = {name: PriorConfig(name=name) for name in _MODEL_NAMES.split()}  # default λ = 2, κ = 3


@dataclass(frozen=True)
class Budget:
    """One study size; the defaults are the `cpu` preset (the default RunConfig network)."""

    name: str  # preset name: smoke, cpu or gpu
    model: ModelConfig = ModelConfig()  # the network every model shares: T, C, L, H, w, chunk
    guide: GuideConfig = GuideConfig()  # the guide network's widths
    max_bytes: int = 4_000_000  # corpus cap, bytes read from the start
    steps: int = 1000  # SVI steps per run (cpu: ~40 min for the whole study on 2 cores)
    batch_size: int = 16  # B, windows per training step and per validation batch
    warmup: int = 50  # linear learning-rate warm-up steps
    kl_anneal: int = 200  # steps over which the KL weight rises to 1
    log_every: int = 20  # steps between metrics.jsonl rows (resolution of the training curves)
    val_batches: int = 8  # held-out batches for every evaluation
    seeds: int = 3  # seeds 0..seeds-1 per model
    strengths: tuple[float, ...] = (0.5, 2.0, 4.0)  # ablation grid: λ of compute-dirichlet
    concentrations: tuple[float, ...] = (0.5, 3.0, 12.0)  # ablation grid: κ of compute-dirichlet
    ablation_seeds: int = 1  # seeds per ablation point
    samples: int = 8  # posterior draws for the epistemic uncertainty
    repeats: int = 3  # timed forwards per variant for the wall-clock ratio
    device: str = "cpu"  # "cpu" or "cuda"

    def config(self, prior: PriorConfig, seed: int, data: str | None) -> RunConfig:
        """The run configuration of one (prior, seed) on `data` (None: the built-in corpus)."""
        keys = ("steps", "batch_size", "warmup", "kl_anneal", "log_every", "val_batches", "device")
        return RunConfig(model=self.model, prior=prior, guide=self.guide).override(
            data={"path": data, "max_bytes": self.max_bytes},
            train={k: getattr(self, k) for k in keys} | {"seed": seed},
        )


_SMOKE = smoke_config()
# fmt: off
BUDGETS = {
    "smoke": Budget(
        "smoke", _SMOKE.model, _SMOKE.guide, max_bytes=200_000, steps=8, batch_size=4, warmup=2,
        kl_anneal=3, log_every=2, val_batches=2, seeds=2, strengths=(0.5, 2.0),
        concentrations=(3.0,), samples=4, repeats=1,
    ),
    "cpu": Budget("cpu"),
    # Sized for one 10-minute call on a lent H200 with --jobs 8 (26 runs x 1,500 steps; the
    # default model measured 0.028 s/step there, launch-bound); not yet run on a GPU.
    "gpu": Budget(
        "gpu", ModelConfig(block_size=256, n_layer=4, n_head=8, n_embd=256, window=32, chunk=32),
        steps=1500, batch_size=32, warmup=100, kl_anneal=300, log_every=25, samples=16,
        repeats=5, device="cuda",
    ),
}
# fmt: on


@dataclass(frozen=True)
class Run:
    label: str  # group name: a MODELS key, or "lam<λ>-kap<κ>" for an ablation point
    seed: int  # training seed
    ablation: bool  # True for the λ × κ grid
    path: str  # run folder relative to the corpus folder
    config: RunConfig  # the full run configuration


def corpus_tag(data: str | None) -> str:
    """Folder/file tag of a corpus: builtin, recall, or the file stem."""
    if data is None:
        return "builtin"
    if data == RECALL_TASK:
        return "recall"
    return Path(data).stem


def ablation_label(strength: float, concentration: float) -> str:
    return f"lam{strength:g}-kap{concentration:g}"


def plan(
    budget: Budget, data: str | None, ablation: bool = True, models: list[str] | None = None
) -> tuple[list[Run], list[dict[str, Any]]]:
    """(runs, skipped): every model (or those in `models`) × seed, then the ablation grid;
    invalid priors are skipped."""
    unknown = sorted(set(models or ()) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    runs = [
        Run(name, s, False, f"{name}/seed{s}", budget.config(prior, s, data))
        for name, prior in MODELS.items()
        if models is None or name in models
        for s in range(budget.seeds)
    ]
    skipped: list[dict[str, Any]] = []
    if not ablation:
        return runs, skipped
    cost = cost_model_for(budget.model).normalised()
    for lam in budget.strengths:
        for kap in budget.concentrations:
            label = ablation_label(lam, kap)
            prior = replace(MODELS["compute-dirichlet"], strength=lam, concentration=kap)
            try:
                check_representable(make_prior(prior, cost), budget.config(prior, 0, data).guide)
            except ValueError as e:
                skipped.append(
                    {"label": label, "strength": lam, "concentration": kap, "skipped": str(e)}
                )
                continue
            runs += [
                Run(label, s, True, f"ablation/{label}/seed{s}", budget.config(prior, s, data))
                for s in range(budget.ablation_seeds)
            ]
    return runs, skipped


def load_run(
    run_dir: str | Path, device: str = "cpu"
) -> tuple[RunConfig, RoutingModel, RoutingGuide]:
    config, model, guide = load_checkpoint(Path(run_dir) / CHECKPOINT_FILE, map_location=device)
    return config, model.eval(), guide.eval()


def finished_run(out: Path, config: RunConfig, corpus: DataSource) -> bool:
    """Whether `out` holds a run of `config` on `corpus` whose checkpoint is at its final step."""
    stored = read_json(out / CONFIG_FILE) or {}
    same = stored.get("config") == config.to_dict()
    if not (same and stored.get("corpus", {}).get("sha256") == corpus.sha256):
        return False
    if not (out / SUMMARY_FILE).is_file():
        return False
    try:
        return read_checkpoint(out / CHECKPOINT_FILE).finished
    except (CheckpointError, FileNotFoundError):
        return False


def _trained(
    config: RunConfig, out: Path, corpus: DataSource, progress: bool, tensorboard: Path | None
) -> tuple[RoutingModel, RoutingGuide, str]:
    """Reuse a finished run with the same config and corpus, resume a stopped one, else train."""
    if finished_run(out, config, corpus):
        _, model, guide = load_run(out, config.train.device)
        return model, guide, "checkpoint"
    result = fit(
        config, out=out, progress=progress, data=corpus, existing="resume", tensorboard=tensorboard
    )
    return result.model.eval(), result.guide.eval(), "trained"


def evaluate_run(
    model: RoutingModel,
    guide: RoutingGuide,
    config: RunConfig,
    corpus: DataSource,
    samples: int,
    repeats: int,
) -> dict[str, Any]:
    """Every Phase-1 metric of a trained run on the held-out batches (JSON-serialisable)."""
    batches = held_out_batches(corpus, config)
    cost_model = cost_model_for(config.model)
    names = corpus.class_names
    soft = evaluate_policy(model, guide, batches, Policy("soft"), cost_model, repeats, names)
    hard = evaluate_policy(model, guide, batches, Policy("hard"), cost_model, repeats, names)
    x = torch.cat([b.x for b in batches])  # [N, T]
    with torch.no_grad():
        alpha_bar = guide.posterior_mean(x)  # [N, T, L, M]
        stats = routing_stats(guide, x, alpha_bar)
        alpha_bar = alpha_bar.cpu()
    pyro.set_rng_seed(config.train.seed)  # the same draws however often a run is evaluated
    report = uncertainty_report(model, guide, x, samples)
    epistemic = [layer["epistemic"] for layer in report["layers"]]
    classes = None
    if names is not None:
        classes = class_shares(alpha_bar, torch.cat([b.classes for b in batches]).cpu(), names)
        for name, share in classes.items():
            share["nats_soft"] = soft["class_nats"][name]
            share["nats_hard"] = hard["class_nats"][name]
    return {
        "val_nats_soft": soft["val_nats_per_token"],
        "val_nats_hard": hard["val_nats_per_token"],
        "projected_hard_cost": hard["projected_cost"],
        "counted_hard_cost": hard["counted_cost"],
        "wall_ratio_hard": hard["wall_ratio"],
        "routing_entropy": stats["routing_entropy"],
        "collapse_fraction": stats["collapse_fraction"],
        "kl": stats["kl"],
        "epistemic": 0.0 if report["deterministic"] else statistics.fmean(epistemic),
        "token_spread": stats["token_spread"],
        "routing_share": stats["routing_share"],
        "layer_share": stats["layer_share"],
        "class_share": classes,
        "soft": soft,
        "hard": hard,
    }


def run_one(
    config: RunConfig,
    out_dir: str | Path,
    label: str | None = None,
    corpus: DataSource | None = None,
    progress: bool = False,
    samples: int = 8,
    repeats: int = 3,
    tensorboard: Path | None = None,
) -> dict[str, Any]:
    """Train (or reuse) and evaluate one run; writes and returns `out_dir/phase1_eval.json`
    (with `tensorboard`, the training curves go to that folder too).

    Resumable: a phase1_eval.json of the same config and corpus (sha256) is returned as is
    ("source": "cached"); a finished checkpoint of the same config and corpus is evaluated
    without training ("checkpoint").
    """
    out = Path(out_dir)
    if corpus is None:
        corpus = data_for(config)
    cached = read_json(out / EVAL_FILE) or {}
    if cached.get("config") == config.to_dict() and cached.get("corpus_sha256") == corpus.sha256:
        return cached | {"source": "cached"}
    model, guide, source = _trained(config, out, corpus, progress, tensorboard)
    summary = read_json(out / SUMMARY_FILE) or {}
    row = {
        "label": label or config.prior.name,
        "model": config.prior.name,
        "seed": config.train.seed,
        "strength": config.prior.strength,
        "concentration": guide.prior.kappa,
        "median_step_s": summary.get("median_step_s"),
        **evaluate_run(model, guide, config, corpus, samples, repeats),
        "run_dir": str(out),
        "config": config.to_dict(),
        "corpus_sha256": corpus.sha256,
        "source": source,
    }
    write_json(out / EVAL_FILE, row)
    (out / TRANSITION_FILE).unlink(missing_ok=True)
    return row


def transition_rows(
    run_dir: str | Path, corpus: DataSource, device: str = "cpu"
) -> list[dict[str, Any]]:
    """`analysis.evaluation.transition_curve` over THRESHOLDS for a finished run (cached in the run)."""
    path = Path(run_dir) / TRANSITION_FILE
    cached = read_json(path)
    if cached is not None:
        return cached
    config, model, guide = load_run(run_dir, device)
    rows = transition_curve(
        model,
        guide,
        held_out_batches(corpus, config),
        cost_model_for(config.model),
        list(THRESHOLDS),
        1,
    )
    write_json(path, rows)
    return rows


def token_map(
    run_dir: str | Path, corpus: Corpus, rows: int = 4, cols: int = 64, samples: int = 16
) -> dict[str, Any]:
    """Per byte of a held-out sample (rows windows of cols bytes, cols <= T): layer argmax of ᾱ
    and epistemic uncertainty (nats): {"text": [rows][cols] str, "argmax", "epistemic":
    [L][rows][cols]}."""
    config, model, guide = load_run(run_dir)
    cols = min(cols, config.model.block_size)
    x = corpus.val[: rows * cols].long().view(rows, cols)  # [rows, cols]
    pyro.set_rng_seed(config.train.seed)
    u = routing_uncertainty(posterior_samples(model, guide, x, samples))
    sites = [u[routing_site(layer)] for layer in range(guide.n_layer)]
    with torch.no_grad():
        argmax = guide.posterior_mean(x).argmax(-1)  # [rows, cols, L]
    return {
        "text": [[visible(bytes([b])) for b in row] for row in x.tolist()],
        "argmax": argmax.permute(2, 0, 1).tolist(),
        "epistemic": [s["epistemic"].clamp_min(0).tolist() for s in sites],
        "mechanisms": list(MECHANISMS),
        "model": config.prior.name,
    }
