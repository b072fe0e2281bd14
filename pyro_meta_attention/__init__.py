"""Bayesian per-token attention routing with Pyro: full, linear and local attention."""

from .attention import MECHANISMS
from .config import DataConfig, GuideConfig, ModelConfig, PriorConfig, RunConfig, TrainConfig
from .cost import CostModel, cost_model_for
from .priors import PRIORS, make_prior, register_prior

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
    "make_prior",
    "register_prior",
]
