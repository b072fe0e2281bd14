"""Attention cost model: FLOPs per query for each mechanism, and the normalised cost vector c.

What is counted (per head, 2 FLOPs per multiply-add, D = head size, averaged over the T query
positions of a causal window):

- full:   query t scores t keys and mixes t values: 4·D·t, mean over t = 1..T  ->  2·D·(T + 1).
- local:  query t sees min(t, w) keys:               4·D·mean_t min(t, w).
- linear: a query reads the running state, phi(q)·S (2·D²) and phi(q)·z (2·D) -> 2·D² + 2·D;
          the running state itself costs 2·D² + D per token (S += phi(k) vᵀ, z += phi(k)) and is
          reported on its own (`linear_state`). Feature maps and softmax exponentials are
          element-wise and not counted.

The cost vector c used by the prior and the projected-cost metric is per query and includes
the linear state amortised per token (c_linear = (query + state) / full), so that an all-linear
model costs exactly c_linear. The shared QKV and output projections (8·C² per token) are the
same for every routing and are reported separately (`projection`), never folded into c.
These are the algorithmic counts; the blocked local and chunked linear kernels execute more
(whole blocks, masked halves included) — hard-routed execution counts those separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import MECHANISMS


@dataclass(frozen=True)
class CostModel:
    T: int  # tokens in the causal window the cost is averaged over
    window: int  # local attention window w
    head_dim: int  # D
    n_head: int  # H (FLOP totals are per head times H)
    n_embd: int  # C, for the projection count

    def __post_init__(self) -> None:
        for name in ("T", "window", "head_dim", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"CostModel.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def full(self) -> float:
        """FLOPs per query, all heads: softmax attention over the causal prefix."""
        return self.n_head * 2.0 * self.head_dim * (self.T + 1)

    @property
    def local(self) -> float:
        """FLOPs per query, all heads: softmax attention over the last w tokens."""
        w, T = min(self.window, self.T), self.T
        mean_keys = (w * (w + 1) / 2 + (T - w) * w) / T
        return self.n_head * 4.0 * self.head_dim * mean_keys

    @property
    def linear_query(self) -> float:
        """FLOPs per query, all heads: reading the running state and its normaliser."""
        return self.n_head * (2.0 * self.head_dim**2 + 2.0 * self.head_dim)

    @property
    def linear_state(self) -> float:
        """FLOPs per token, all heads: accumulating phi(k) vᵀ and phi(k) into the state."""
        return self.n_head * (2.0 * self.head_dim**2 + self.head_dim)

    @property
    def projection(self) -> float:
        """FLOPs per token of the shared QKV and output projections (routing-independent)."""
        return 8.0 * self.n_embd**2

    def per_query(self) -> dict[str, float]:
        """FLOPs per query for each mechanism (linear includes its amortised state)."""
        return {
            "full": self.full,
            "linear": self.linear_query + self.linear_state,
            "local": self.local,
        }

    def normalised(self) -> torch.Tensor:
        """c: [M] float64 cost per query relative to full attention (c_full = 1), MECHANISMS order."""
        flops = self.per_query()
        return torch.tensor([flops[m] / self.full for m in MECHANISMS], dtype=torch.float64)

    def projected_cost(self, shares: torch.Tensor) -> float:
        """Sum_m share_m · c_m for routing shares [M] (the paper's projected hard cost)."""
        shares = torch.as_tensor(shares, dtype=torch.float64)
        if shares.shape != (len(MECHANISMS),):
            raise ValueError(
                f"shares must have shape [{len(MECHANISMS)}], got {tuple(shares.shape)}"
            )
        return float((shares * self.normalised()).sum())

    def to_dict(self) -> dict[str, object]:
        return {
            "T": self.T,
            "window": self.window,
            "head_dim": self.head_dim,
            "n_head": self.n_head,
            "flops_per_query": self.per_query(),
            "linear_state_flops_per_token": self.linear_state,
            "projection_flops_per_token": self.projection,
            "normalised": dict(zip(MECHANISMS, self.normalised().tolist(), strict=True)),
        }


def cost_model_for(model_config) -> CostModel:
    """The cost model at a `ModelConfig`'s training length, window and head size."""
    return CostModel(
        T=model_config.block_size,
        window=model_config.window,
        head_dim=model_config.head_dim,
        n_head=model_config.n_head,
        n_embd=model_config.n_embd,
    )
