"""The routed transformer LM: a byte-level causal LM whose attention is a per-token mixture.

Each block's attention computes one shared QKV projection, runs the attention cores of every
mechanism on it, mixes their outputs with the routing weights alpha [B, T, M] and applies one
shared output projection. Mechanisms differ only in the attention core, so routing changes
compute, never parameters. The network is plain torch; the Pyro model (`bayes/model.py`)
supplies alpha.

Positions (`ModelConfig.positions`): "rope" rotates the queries and keys of full and local
attention (`mechanisms/rotary.py`), so the network runs at any length; the linear mechanism
reads them unrotated unless `rope_linear` (docs/design-notes.md says why). "learned" adds a
table of `block_size` absolute position embeddings to the input, as every run before rotary
positions did, and ends there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .mechanisms import MECHANISMS, run_mechanism
from .mechanisms.rotary import apply_rotary
from .mechanisms.routed import routed_attention


@dataclass(frozen=True)
class Heads:
    """Queries, keys and values of T positions, each [B, H, T, D]: q, k as full and local
    attention read them (rotated under rotary positions), q_linear, k_linear as the linear
    mechanism reads them (the same tensors unless only full and local are rotated)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    q_linear: torch.Tensor
    k_linear: torch.Tensor


class MixedAttention(nn.Module):
    """One QKV projection, the mechanisms' cores mixed per token by alpha, one output projection."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def heads(self, x: torch.Tensor, start: int = 0) -> Heads:
        """x [B, T, C] at positions start .. start + T - 1 -> `Heads`, each [B, H, T, D]."""
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.config.n_head, self.config.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # [3, B, H, T, D]
        q, k, v = qkv
        if not self.config.rotary:
            return Heads(q, k, v, q, k)
        qr, kr = apply_rotary(qkv[:2], start)  # q and k in one call
        if self.config.rope_linear:
            return Heads(qr, kr, v, qr, kr)
        return Heads(qr, kr, v, q, k)

    def forward(
        self, x: torch.Tensor, alpha: torch.Tensor, assignment: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [B, T, C], alpha [B, T, M] on the simplex -> [B, T, C].

        Without `assignment` the mechanisms are mixed (soft routing); a mechanism whose weight is
        zero for every token is skipped (single-mechanism models run one core). With an
        assignment [B, T] int64 (m = hard-routed to m, -1 = soft), each query runs only its
        mechanism (`mechanisms.routed.routed_attention`); soft tokens are mixed with alpha.
        """
        h = self.heads(x)
        return self.proj(self.attend(h, alpha, assignment).transpose(1, 2).reshape(x.shape))

    def attend(
        self, h: Heads, alpha: torch.Tensor, assignment: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The attention core of `forward`: heads of T positions -> o [B, H, T, D]."""
        sizes = {"window": self.config.window, "chunk": self.config.chunk}
        alpha = alpha.to(h.q.dtype)
        if assignment is not None:
            linear_qk = (h.q_linear, h.k_linear)
            return routed_attention(h.q, h.k, h.v, assignment, alpha, linear_qk=linear_qk, **sizes)
        active = (alpha.detach() != 0).flatten(0, -2).any(0).tolist()  # [M]
        o = 0
        for m, name in enumerate(MECHANISMS):
            if active[m]:
                q, k = (h.q_linear, h.k_linear) if name == "linear" else (h.q, h.k)
                o = o + alpha[:, None, :, m, None] * run_mechanism(name, q, k, h.v, **sizes)
        return o  # [B, H, T, D]


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm block: x + attn(ln(x), alpha), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = MixedAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, alpha: torch.Tensor, assignment: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), alpha, assignment)
        return x + self.mlp(self.ln2(x))


class RoutedTransformer(nn.Module):
    """Byte-level causal LM; `forward(idx, alphas)` with one alpha [B, T, M] per layer."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        learned = config.positions == "learned"
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd) if learned else None
        # token shift: what a short causal convolution before attention gives H3, Based and
        # Zoology's models; it lets one attention layer match a key to the token before it
        self.shift = nn.Linear(config.n_embd, config.n_embd) if config.token_shift else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied LM head
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """idx [B, T] int64 -> token (+ shifted previous token) (+ learned position) embeddings
        [B, T, C]. Only learned positions limit T, to block_size."""
        T = idx.shape[-1]
        if self.pos_emb is not None and self.config.block_size < T:
            raise ValueError(
                f"sequence length {T} exceeds block_size {self.config.block_size}: this model's "
                "learned positions end there"
            )
        e = self.tok_emb(idx)  # [B, T, C]
        if self.shift is not None:
            e = e + self.shift(F.pad(e, (0, 0, 1, 0))[:, :-1])  # previous token's, 0 at t = 0
        if self.pos_emb is None:
            return e
        return e + self.pos_emb(torch.arange(T, device=idx.device))

    def forward(
        self,
        idx: torch.Tensor,
        alphas: list[torch.Tensor],
        assignments: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """idx [B, T] int64, alphas n_layer x [B, T, M] -> logits [B, T, vocab].

        `assignments` (n_layer x [B, T] int64, -1 = soft) switches to hard-routed execution.
        """
        if len(alphas) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} routing tensors, got {len(alphas)}")
        if assignments is None:
            assignments = [None] * len(self.blocks)
        elif len(assignments) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} assignments, got {len(assignments)}")
        x = self.embed(idx)
        for block, alpha, assignment in zip(self.blocks, alphas, assignments, strict=True):
            x = block(x, alpha, assignment)
        return self.head(self.ln_f(x))
