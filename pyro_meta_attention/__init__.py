"""Bayesian per-token attention routing with Pyro: full, linear and local attention.

Folders by concern: `mechanisms/` (the attention kernels, their naive twins, hard-routed
execution, FLOP counts), `bayes/` (Pyro sites, priors, model, guide), `training/` (build, the
SVI loop, schedules, run folder, checkpoints), `analysis/` (routing statistics, uncertainty,
evaluation, timing), `data/` (corpora, batches, synthetic tasks); `network.py` is the plain-torch
transformer, `policies.py` the inference-time routing policies, `config.py` the run config,
`demo/` the shipped demo checkpoint (`load_demo()`: a model whose routing was learned).
"""

from .bayes.priors import PRIORS, make_prior, register_prior
from .config import DataConfig, GuideConfig, ModelConfig, PriorConfig, RunConfig, TrainConfig
from .demo import load_demo
from .mechanisms import MECHANISMS
from .mechanisms.cost import CostModel, cost_model_for

__all__ = [
    "MECHANISMS",
    "PRIORS",
    "CostModel",
    "DataConfig",
    "GuideConfig",
    "ModelConfig",
    "PriorConfig",
    "RunConfig",
    "TrainConfig",
    "cost_model_for",
    "load_demo",
    "make_prior",
    "register_prior",
]
