"""Everything a config builds: model and guide, the ELBO, the optimiser, the seeded generator.

Model and guide are modules with module-local parameters, combined into one `ELBOModule`
(`TraceMeanField_ELBO()(model, guide)`) and trained with a torch optimiser — the path that
carries over to torch DDP. ELBO estimators (`TrainConfig.elbo`):
- "meanfield": `TraceMeanField_ELBO`, analytic Dirichlet KL (exact here: the prior on alpha is
  fixed, so no guide descendant of a latent is a model parent of it);
- "trace": `Trace_ELBO`, the Monte Carlo estimator the design names.
The default was chosen by `experiments/elbo_variance.py` (docs/results.md).
"""

from __future__ import annotations

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ..bayes.guide import RoutingGuide
from ..bayes.model import RoutingModel
from ..bayes.priors import make_prior
from ..config import RunConfig
from ..mechanisms.cost import cost_model_for
from ..network import RoutedTransformer

ELBOS = {"meanfield": TraceMeanField_ELBO, "trace": Trace_ELBO}


def build(config: RunConfig) -> tuple[RoutingModel, RoutingGuide]:
    """Fresh model (network + prior) and guide for a config, on the CPU."""
    cost = cost_model_for(config.model).normalised()
    prior = make_prior(config.prior, cost)
    model = RoutingModel(RoutedTransformer(config.model), prior)
    guide = RoutingGuide(config.model, config.guide, prior)
    return model, guide


def make_elbo(name: str):
    """The ELBO class named by `TrainConfig.elbo`, instantiated for the [B, T] plates."""
    if name not in ELBOS:
        raise ValueError(f"unknown elbo {name!r}; choose one of {sorted(ELBOS)}")
    return ELBOS[name](max_plate_nesting=2)


def make_optimizer(model: RoutingModel, guide: RoutingGuide, config: RunConfig):
    """AdamW; weight decay on the network's matrices only (not norms, biases or the guide); the
    guide's learning rate is `guide_lr_scale` times the network's, and a hierarchical prior's
    routing means' `mean_lr_scale` times the guide's. Each group keeps its peak rate as
    "base_lr" for the schedule."""
    tc = config.train
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    means = [guide.mean_logits] if guide.prior.hierarchical else []
    guide_lr = tc.lr * tc.guide_lr_scale
    groups = [
        {"params": decay, "weight_decay": tc.weight_decay, "base_lr": tc.lr},
        {"params": no_decay, "weight_decay": 0.0, "base_lr": tc.lr},
        {
            "params": [p for p in guide.parameters() if all(p is not m for m in means)],
            "weight_decay": 0.0,
            "base_lr": guide_lr,
        },
    ]
    if means:
        groups.append(
            {"params": means, "weight_decay": 0.0, "base_lr": guide_lr * tc.mean_lr_scale}
        )
    return torch.optim.AdamW(groups, lr=tc.lr)


def set_seed(seed: int) -> torch.Generator:
    """Seed python, numpy, torch and Pyro; return the data sampler's own generator."""
    pyro.set_rng_seed(seed)
    return torch.Generator().manual_seed(seed)
