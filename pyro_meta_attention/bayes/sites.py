"""Pyro site and plate names, and the plate/scale/mask context shared by model and guide.

Model and guide enter the same `token_plates` context and wrap each routing site in the same
`routing_scale`, so masking and scaling are applied to both sides of the ELBO (masking only
the model gives a wrong loss). The ELBO is scaled by 1 / (number of unmasked tokens), so the
loss is in nats per token. (A task that scores only some targets masks the observation site
alone, `RoutingModel(obs_mask=...)`; the scale stays 1 / tokens.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pyro
import pyro.poutine as poutine
import torch

BATCH_PLATE = "batch"  # dim -2: B sequences
TOKEN_PLATE = "tokens"  # dim -1: T positions
OBS_SITE = "next_byte"  # observed next byte, Categorical over the vocabulary
ROUTING_PREFIX = "alpha_"  # routing site of layer l is f"alpha_{l}", value [B, T, M]
PENALTY_PREFIX = "penalty_"  # a prior's explicit penalty on layer l's routing (pyro.factor)
MEAN_PREFIX = "routing_mean_"  # layer l's routing mean mu_l [M] (hierarchical priors only)
BUDGET_PREFIX = "budget_"  # each token's price for layer l's routing mean (pyro.factor)


def routing_site(layer: int) -> str:
    return f"{ROUTING_PREFIX}{layer}"


def penalty_site(layer: int) -> str:
    return f"{PENALTY_PREFIX}{layer}"


def routing_mean_site(layer: int) -> str:
    return f"{MEAN_PREFIX}{layer}"


def budget_site(layer: int) -> str:
    return f"{BUDGET_PREFIX}{layer}"


def token_count(B: int, T: int, mask: torch.Tensor | None = None) -> int:
    """Tokens the loss averages over: B · T, or the positions `mask` [B, T] keeps."""
    if mask is not None and mask.shape != (B, T):
        raise ValueError(f"mask must have shape [{B}, {T}], got {tuple(mask.shape)}")
    n_tokens = B * T if mask is None else int(mask.sum())
    if n_tokens == 0:
        raise ValueError("mask selects no token")
    return n_tokens


@contextmanager
def global_scale(B: int, T: int, mask: torch.Tensor | None = None) -> Iterator[None]:
    """Scale a global site (one per layer, outside the plates) by 1 / tokens, like the rest of
    the loss: the hyperprior of a routing mean weighs as much as one token's KL."""
    with poutine.scale(scale=1.0 / token_count(B, T, mask)):
        yield


@contextmanager
def token_plates(B: int, T: int, mask: torch.Tensor | None = None) -> Iterator[None]:
    """Enter the [B, T] plates, scale by 1 / tokens and mask (bool [B, T]) when given."""
    n_tokens = token_count(B, T, mask)
    with ExitStack() as stack:
        stack.enter_context(pyro.plate(BATCH_PLATE, B, dim=-2))
        stack.enter_context(pyro.plate(TOKEN_PLATE, T, dim=-1))
        stack.enter_context(poutine.scale(scale=1.0 / n_tokens))
        if mask is not None:
            stack.enter_context(poutine.mask(mask=mask.bool()))
        yield


def routing_scale(beta: float):
    """KL weight beta >= 0 on a routing site (used identically in model and guide).

    Pyro's scale must be positive, so beta = 0 (no KL at all) masks the site's density instead.
    """
    if beta < 0:
        raise ValueError(f"KL weight beta must be >= 0, got {beta}")
    return poutine.mask(mask=False) if beta == 0 else poutine.scale(scale=beta)
