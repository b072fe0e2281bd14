"""Held-out loss by position, past the training length: where a model stops generalising.

`position_nats` runs the network on held-out windows of L positions (L up to any multiple of
the training length under rotary positions) once per routing variant and returns the next-byte
loss of every position; `bucket` averages it over position buckets. The variants:

- `soft`: every layer mixed by the guide's posterior mean alpha_bar (training's mixture);
- `hard`: every token runs only the argmax of alpha_bar (the hard-routed engine);
- `all-full`, `all-local`: the same weights with every token forced onto one mechanism;
- `full-windowed`: every token full, but over the last `block_size` keys only (a local window
  of the training length): what `generate.py --max-context block_size` gives full tokens.

The guide's own position feature stays at 1 past the training length (`bayes/guide.py`).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..bayes.guide import RoutingGuide
from ..bayes.model import RoutingModel
from ..network import RoutedTransformer
from ..policies import assign, one_mechanism, parse_policy

VARIANTS = ("soft", "hard", "all-full", "all-local", "full-windowed")


def windows(val: Tensor, length: int, count: int) -> Tensor:
    """Up to `count` consecutive, non-overlapping windows of length + 1 bytes from the start of
    a held-out split val [N] -> [n, length + 1] int64 (inputs and their next bytes)."""
    n = min(count, (val.numel() - 1) // length)
    if n < 1:
        raise ValueError(
            f"the held-out split has {val.numel()} bytes: too few for one window of {length + 1}"
        )
    index = torch.arange(n)[:, None] * length + torch.arange(length + 1)  # [n, L + 1]
    return val[index].long()


@torch.no_grad()
def position_nats(
    model: RoutingModel, guide: RoutingGuide, data: Tensor, cost: Tensor, batch_size: int = 4
) -> dict[str, Tensor]:
    """data [N, L + 1] held-out windows -> {variant: nats [N, L]} (float64), the loss of
    predicting byte t + 1 at every position t, for each of `VARIANTS`."""
    hard = parse_policy("hard")
    out: dict[str, list[Tensor]] = {v: [] for v in VARIANTS}
    L = len(model.net.blocks)
    config = model.net.config
    windowed = RoutedTransformer(replace(config, window=config.block_size))
    windowed.load_state_dict(model.net.state_dict())
    windowed.to(model.net.tok_emb.weight).eval()
    for chunk in data.split(batch_size):
        x, y = chunk[:, :-1], chunk[:, 1:]  # [b, T]
        mean = list(guide.posterior_mean(x).unbind(2))  # L x [b, T, M]
        routes = {
            "soft": (mean, None),
            "hard": (mean, [assign(hard, a, cost) for a in mean]),
        }
        for name in ("full", "local"):
            routes[f"all-{name}"] = one_mechanism(x, name, L, mean[0].dtype)
        routes["full-windowed"] = routes["all-local"]  # run by `windowed`: w = block_size
        for variant, (alphas, assignments) in routes.items():
            net = windowed if variant == "full-windowed" else model.net
            logits = net(x, alphas, assignments)  # [b, T, V]
            nats = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # [b, T]
            out[variant].append(nats.double())
    return {v: torch.cat(parts) for v, parts in out.items()}


def bucket(nats: Tensor, width: int) -> tuple[list[int], list[float], list[float]]:
    """nats [N, L] -> (first position, mean, standard error over the N windows) per bucket of
    `width` positions (the last bucket may be shorter)."""
    starts, means, errors = [], [], []
    for s in range(0, nats.shape[1], width):
        per_window = nats[:, s : s + width].mean(1)  # [N]
        starts.append(s)
        means.append(float(per_window.mean()))
        n = per_window.numel()
        errors.append(float(per_window.std() / n**0.5) if n > 1 else 0.0)
    return starts, means, errors
