"""A run's curves in TensorBoard: `fit(config, tensorboard=DIR)` writes an event file to DIR.

What it writes, at the step of each metrics row (`log_every`):

- scalars `train/<key>` for loss, nats_per_token, bits_per_byte, kl, beta, tau, reference_gap,
  routing_entropy, prior_distance, data_routed, penalty, layer_shift (those the row has);
- scalars `routing/<mechanism>` (argmax share over tokens and layers) and
  `routing/layer<l>/<mechanism>` (per layer), and `prior_mean/layer<l>/<mechanism>` (the prior
  mean of alpha per layer: a hierarchical prior's routing means move as it learns);
- histograms `alpha/layer<l>/<mechanism>`: the posterior mean alpha_bar of that mechanism over
  the batch's tokens, so one sees the routing split (or not) as training goes;

and at the end the summary: `summary/<key>` scalars (held-out nats, costs, shares) and the whole
summary as a text. Under torchrun only rank 0 writes (`fit` gives the others none).
The `tensorboard` package is the optional extra `.[tensorboard]`; `tensorboard --logdir DIR`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..mechanisms import MECHANISMS

SCALARS = (
    "loss",
    "nats_per_token",
    "bits_per_byte",
    "kl",
    "beta",
    "tau",
    "reference_gap",
    "routing_entropy",
    "prior_distance",
    "data_routed",
    "penalty",
    "layer_shift",
)  # the metrics row's keys written as train/<key>


def check_installed() -> None:
    """ValueError with the install line unless torch's SummaryWriter can be used."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ValueError(
            "--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'"
        ) from None


class TensorBoardLog:
    """An event-file writer for one run (a folder of its own: runs in one folder mix curves)."""

    def __init__(self, log_dir: str | Path):
        check_installed()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(log_dir).expanduser()))

    def row(self, row: dict[str, Any]) -> None:
        """One metrics row (svi's) as scalars at its step."""
        step = int(row["step"])
        for key in SCALARS:
            value = row.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"train/{key}", value, step)
        for name, share in zip(MECHANISMS, row["routing_share"], strict=True):
            self.writer.add_scalar(f"routing/{name}", share, step)
        for layer, shares in enumerate(row.get("layer_share") or []):
            for name, share in zip(MECHANISMS, shares, strict=True):
                self.writer.add_scalar(f"routing/layer{layer}/{name}", share, step)
        for layer, means in enumerate(row.get("layer_prior_mean") or []):
            for name, mean in zip(MECHANISMS, means, strict=True):
                self.writer.add_scalar(f"prior_mean/layer{layer}/{name}", mean, step)

    def alphas(self, step: int, alpha_bar: torch.Tensor) -> None:
        """Histograms of the posterior mean alpha_bar [B, T, L, M] per layer and mechanism."""
        alpha_bar = alpha_bar.detach().float().cpu()
        for layer in range(alpha_bar.shape[2]):
            for m, name in enumerate(MECHANISMS):
                values = alpha_bar[:, :, layer, m].reshape(-1)
                self.writer.add_histogram(f"alpha/layer{layer}/{name}", values, step, bins=20)

    def summary(self, summary: dict[str, Any], step: int) -> None:
        """The run's summary: its numbers as summary/<key> scalars, and all of it as a text."""
        for key, value in summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"summary/{key}", value, step)
        text = json.dumps(summary, indent=2, default=str)
        self.writer.add_text("summary", f"```\n{text}\n```", step)

    def close(self) -> None:
        self.writer.close()
