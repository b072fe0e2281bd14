"""Typed, frozen run configuration: network, prior, guide, data and training.

Every field has a documented default; `RunConfig.to_dict` / `RunConfig.from_dict` round-trip
through JSON so a run's `config.json` can rebuild the exact model it describes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

MAX_SEED = 2**32 - 1  # numpy's seed range (pyro.set_rng_seed seeds numpy too)
POSITIONS = ("rope", "learned")  # ModelConfig.positions
FULL_UNTIL = ("steps", "evidence")  # TrainConfig.full_until
WARMUP_ROUTES = ("full", "full-local")  # TrainConfig.warmup_route


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 256  # byte-level LM: one token per byte
    block_size: int = 128  # T, tokens per training window (and the table of learned positions)
    n_layer: int = 2  # transformer blocks, each with one routing site
    n_head: int = 4  # H, attention heads
    n_embd: int = 128  # C, channels; head size D = C / H
    window: int = 16  # w, local attention sees tokens t-w+1..t
    chunk: int = 16  # chunk length of the chunked linear attention
    dropout: float = 0.0  # dropout in the MLP and residual paths
    token_shift: bool = False  # add a learned linear map of the previous token's embedding
    positions: str = "rope"  # "rope": rotary queries and keys, any length; "learned": a table
    # of block_size absolute positions (every run before rotary; such a config.json has no field)
    rope_linear: bool = False  # rotate the linear mechanism's queries and keys too (before phi)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "window", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab_size < 256:
            raise ValueError(f"vocab_size must be >= 256 (tokens are bytes), got {self.vocab_size}")
        if self.window > self.block_size:
            raise ValueError(
                f"window {self.window} > block_size {self.block_size}: a local window longer than "
                "the training window is full attention"
            )
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head size, got {self.head_dim}")
        if self.rope_linear and self.positions != "rope":
            raise ValueError("rope_linear needs positions = 'rope'")

    @property
    def rotary(self) -> bool:
        return self.positions == "rope"

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass(frozen=True)
class PriorConfig:
    name: str = "compute-dirichlet"  # a key of priors.PRIORS
    strength: float = 2.0  # lambda: cost pressure of compute-dirichlet (0 = uniform mean)
    concentration: float | None = (
        None  # kappa = sum_m a_m; None: the prior's default (3, sparse 0.3)
    )
    floor: float = 0.03  # smallest allowed concentration per mechanism (Dirichlet numerics)
    layers: str | None = (
        None  # fixed-layers: each layer's mechanism, first layer first ("local,full")
    )


@dataclass(frozen=True)
class GuideConfig:
    embd: int = 32  # width of the guide's own token embedding
    hidden: int = 64  # hidden width of the guide MLP
    context: int = 4  # causal context: tokens t-context+1..t read by a depthwise conv
    floor: float = 0.05  # lower bound of the guide's Dirichlet concentration
    cap: float = 200.0  # upper bound of the guide's Dirichlet concentration
    init: str = "prior"  # "prior": q starts equal to the prior; "random": default init
    match_k: int = 0  # > 0: the guide also reads whether the k bytes ending at t occurred before


@dataclass(frozen=True)
class DataConfig:
    path: str | None = None  # text/bytes file; None = the built-in stdlib corpus
    max_bytes: int = 4_000_000  # cap on the corpus size (bytes read from the start)
    val_fraction: float = 0.1  # the last 10% of the bytes are the validation split
    mqar_pairs: int = 4  # synthetic:mqar: key-value pairs per sequence (data/mqar.py)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000  # SVI steps
    batch_size: int = 16  # B, windows per step (per process in a distributed run)
    lr: float = 3e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.01  # AdamW weight decay (network weights only, not the guide)
    warmup: int = 50  # linear learning-rate warm-up steps, then cosine decay to 10%
    grad_clip: float = 1.0  # global gradient-norm clip (by norm, unlike ClippedAdam)
    elbo: str = "meanfield"  # "meanfield" (analytic KL) or "trace" (Monte Carlo KL)
    kl_weight: float = 1.0  # final weight beta of the routing KL
    kl_anneal: int = 200  # steps over which beta rises linearly from 0 to kl_weight
    full_warmup: int = 0  # first steps in which the network runs all-full attention (see fit)
    full_until: str = "steps"  # "steps": full_warmup steps; "evidence": until full attention
    # has learned what it pays for (training/warmup.py); hardening then counts from its end
    warmup_route: str = "full"  # what the network runs in the warm-up: "full" every step, or
    # "full-local": all-full and all-local on alternate steps (both references train)
    guide_lr_scale: float = 1.0  # the guide's learning rate over the network's
    mean_lr_scale: float = 10.0  # a hierarchical prior's routing means' rate over the guide's:
    # L x M global numbers whose gradient averages every token of the batch (docs/results.md)
    harden_final: float = 0.0  # soft-to-hard schedule: final entropy threshold tau (0 = off)
    harden_start: int = 0  # step at which tau starts rising from 0
    harden_end: int = 0  # step at which tau reaches harden_final
    log_every: int = 25  # steps between metrics.jsonl rows
    val_batches: int = 8  # held-out batches for validation metrics
    seed: int = 0  # seeds torch, pyro and the data sampler
    device: str = "cpu"  # "cpu" or "cuda"

    def __post_init__(self) -> None:
        minimum = {"steps": 1, "batch_size": 1, "log_every": 1, "val_batches": 1}
        minimum |= dict.fromkeys(("warmup", "kl_anneal", "full_warmup"), 0)
        minimum |= dict.fromkeys(("harden_start", "harden_end", "seed"), 0)
        for name, least in minimum.items():
            if getattr(self, name) < least:
                raise ValueError(
                    f"TrainConfig.{name} must be >= {least}, got {getattr(self, name)}"
                )
        if self.seed > MAX_SEED:
            raise ValueError(f"TrainConfig.seed must be <= {MAX_SEED}, got {self.seed}")
        positive = ("lr", "grad_clip", "guide_lr_scale", "mean_lr_scale")
        for name in positive + ("weight_decay", "kl_weight", "harden_final"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name in positive and value == 0):
                bound = "> 0" if name in positive else ">= 0"
                raise ValueError(f"TrainConfig.{name} must be finite and {bound}, got {value}")
        if self.full_until not in FULL_UNTIL:
            raise ValueError(
                f"TrainConfig.full_until must be one of {FULL_UNTIL}, got {self.full_until!r}"
            )
        if self.warmup_route not in WARMUP_ROUTES:
            raise ValueError(
                f"TrainConfig.warmup_route must be one of {WARMUP_ROUTES}, "
                f"got {self.warmup_route!r}"
            )
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"TrainConfig.device must be 'cpu' or 'cuda', got {self.device!r}")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    guide: GuideConfig = field(default_factory=GuideConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        parts = {f.name: f.default_factory for f in fields(cls)}  # type: ignore[misc]
        unknown = set(d) - set(parts)
        if unknown:
            raise ValueError(f"unknown config sections: {sorted(unknown)}")
        sections = {}
        for name, values in d.items():
            kind = parts[name]().__class__
            extra = set(values) - {f.name for f in fields(kind)}
            if extra:
                raise ValueError(f"unknown {name} config field(s): {sorted(extra)}")
            if name == "model" and "positions" not in values:  # written before rotary positions
                values = {**values, "positions": "learned"}
            sections[name] = kind(**values)
        return cls(**sections)

    def override(self, **sections: dict[str, Any]) -> RunConfig:
        """Return a copy with fields replaced per section, e.g. `override(train={"steps": 5})`."""
        return replace(self, **{k: replace(getattr(self, k), **v) for k, v in sections.items()})


MQAR_TASK = "synthetic:mqar"  # DataConfig.path of the built-in MQAR task (data/mqar.py)


def mqar_config(**sections: dict[str, Any]) -> RunConfig:
    """The MQAR preset: T = 64, 4 key-value pairs, every query beyond the window w = 8, a
    2-layer, 2-head, C = 64 network with a token shift (see docs/results.md for its sizing)."""
    base = RunConfig(
        model=ModelConfig(
            block_size=64, n_layer=2, n_head=2, n_embd=64, window=8, chunk=8, token_shift=True
        ),
        guide=GuideConfig(embd=16, hidden=32),
        data=DataConfig(path=MQAR_TASK, mqar_pairs=4),
        train=TrainConfig(steps=2000, batch_size=64, lr=3e-3, log_every=50, val_batches=4),
    )
    return base.override(**sections)


def mqar_routing_config(**sections: dict[str, Any]) -> RunConfig:
    """The MQAR preset with the routing recipe that learns per-token routing at KL weight 1
    (docs/results.md, `mqar-hard-st-lambda05.md`): the network first trains 1,000 steps on
    all-full attention, then every sampled alpha is routed hard (straight-through), under a
    compute-dirichlet prior with lambda = 0.5 (a routing decision's KL price is about half of
    lambda = 2's: `experiments/decision_price.py`)."""
    recipe = mqar_config(
        prior={"strength": 0.5},
        train={"full_warmup": 1000, "harden_final": 1.0, "harden_start": 1000, "harden_end": 1000},
    )
    return recipe.override(**sections)


ROUTING_RECIPE: dict[str, dict[str, Any]] = {  # the default preset's routing, one for every task
    # a per-layer routing mean with a compute budget; its strength lambda = 0.5
    "prior": {"name": "hierarchical-budget", "strength": 0.5},
    # all-full until full attention's gain over local has held (training/warmup.py), then
    # every sampled alpha routed hard (straight-through), counted from the warm-up's end
    "train": {"full_until": "evidence", "harden_final": 1.0, "harden_start": 0, "harden_end": 0},
}


def default_config(**sections: dict[str, Any]) -> RunConfig:
    """The default preset (`train_svi.py` with no flags): the built-in corpus, the default
    network, and the routing recipe ROUTING_RECIPE (docs/results.md § A compute budget on the
    layer mean, and one recipe)."""
    return RunConfig().override(**ROUTING_RECIPE).override(**sections)


def text_config(**sections: dict[str, Any]) -> RunConfig:
    """The natural-text preset for routing studies: T = 512, local window w = 32 (a sixteenth of
    the context), the default network with a token shift, batch 8, 1,000 steps (sized in
    docs/results.md). Its data is the built-in corpus unless a file is named (`text_study.py`
    uses tinyshakespeare)."""
    base = RunConfig(
        model=ModelConfig(block_size=512, window=32, chunk=32, token_shift=True),
        train=TrainConfig(steps=1000, batch_size=8, log_every=100),
    )
    return base.override(**sections)


PRESETS = {  # name -> config factory
    "default": default_config,
    "mqar": mqar_config,
    "mqar-routing": mqar_routing_config,
    "text512": text_config,
}


def smoke_config(**sections: dict[str, Any]) -> RunConfig:
    """A tiny configuration that trains in seconds (tests and `--smoke`)."""
    base = RunConfig(
        model=ModelConfig(block_size=32, n_layer=2, n_head=2, n_embd=32, window=8, chunk=8),
        guide=GuideConfig(embd=8, hidden=16),
        data=DataConfig(max_bytes=200_000),
        train=TrainConfig(steps=6, batch_size=4, warmup=2, kl_anneal=3, log_every=2, val_batches=2),
    )
    return base.override(**sections)
