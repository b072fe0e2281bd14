"""What the DDP test's ranks and its single-process reference share: the configs and a recorder
of every parameter after every SVI step."""

from collections.abc import Callable

import torch

from pyro_meta_attention.config import smoke_config

PRIORS = ("none", "compute-dirichlet", "fixed-local")  # deterministic, Bayesian, fixed
WORLD = 2  # processes
BATCH = 2  # windows per rank; the single-process reference trains on WORLD x BATCH


def config_for(prior: str, per_rank: bool):
    batch = BATCH if per_rank else WORLD * BATCH
    train = {"steps": 4, "batch_size": batch, "log_every": 1, "kl_anneal": 2, "seed": 3}
    return smoke_config(prior={"name": prior}, data={"max_bytes": 20_000}, train=train)


def recorder(step: Callable) -> tuple[list[torch.Tensor], Callable]:
    """(steps, recorded): `recorded` is svi's `_svi_step` that also appends every parameter
    (flattened, model then guide) to `steps` after the step."""
    steps: list[torch.Tensor] = []

    def recorded(s, *args):
        row = step(s, *args)
        params = [*s.result.model.parameters(), *s.result.guide.parameters()]
        steps.append(torch.cat([p.detach().flatten() for p in params]).clone())
        return row

    return steps, recorded
