"""Incremental decoding of a `RoutedTransformer`: prefill a prompt, then one token per step.

    decoder = Decoder(net, GuideRouter(guide, parse_policy("hard"), cost))
    logits = decoder.prefill(prompt)        # prompt [B, T] -> [B, T, V]
    logits = decoder.step(next_tokens)      # [B] -> [B, V], one position further

Prefill runs the hard-routed engine (`mechanisms.routed.routed_attention`) on the prompt under
the router's routing and fills every layer's `LayerState`; a step embeds the new token, routes
it (`routing.py`) and runs each layer with `attend.attend_step` against the state. Prefill and
steps together give the logits the forward pass gives the whole sequence under the same routing
(`Decoder.route`): tests/decoding/test_decoder.py checks this to float64 precision.

Positions: under rotary positions (`ModelConfig.positions = "rope"`) a sequence decodes to any
length: the state grows (`state.py`), and `max_context` N bounds it to the last N keys (full
attention then sees those N only). A model with learned positions (runs made before rotary
positions) has a table of `block_size` rows: a step beyond it raises `PositionLimitError` and
leaves the state as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..network import Block, RoutedTransformer
from .attend import LINEAR, attend_step, executed
from .flops import PARTS, step_flops
from .routing import GuideRouter, MixRouter, Route
from .state import DecodeState, LayerState

Router = GuideRouter | MixRouter


class PositionLimitError(ValueError):
    """A position beyond a learned positional table (`ModelConfig.block_size`)."""


@dataclass
class DecodeMeter:
    """What the steps so far executed: steps, seconds in attention (state update and the
    mechanisms' reads, all layers) and attention FLOPs per part (`flops.PARTS`)."""

    steps: int = 0
    attention_s: float = 0.0
    flops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARTS, 0))


class Decoder:
    """Prefill + incremental decoding with per-mechanism state; device and dtype from `net`.

    capacity: positions the state first allocates room for (default `block_size`; it grows);
    keep_linear: whether the state keeps the linear running state (default: iff the router can
    route a token linear; True lets another decoder continue from this one's state,
    `start_from`); max_context: keep only the last N keys and values (None: all; at least the
    local window; rotary positions only).
    """

    def __init__(
        self,
        net: RoutedTransformer,
        router: Router,
        capacity: int | None = None,
        keep_linear: bool | None = None,
        max_context: int | None = None,
    ):
        self.net = net
        self.router = router
        self.keep_linear = bool(router.possible[LINEAR]) if keep_linear is None else keep_linear
        self.config = net.config
        self.capacity = self.config.block_size if capacity is None else capacity
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if max_context is not None:
            if not self.config.rotary:
                raise ValueError("max_context needs rotary positions; this model's are learned")
            if max_context < self.config.window:
                raise ValueError(
                    f"max_context must be >= the local window {self.config.window}, "
                    f"got {max_context}"
                )
        self.max_context = max_context
        self.state: DecodeState | None = None
        self.routes: list[Route] = []
        self.meter = DecodeMeter()

    @property
    def length(self) -> int:
        """Positions decoded so far (0 before prefill)."""
        return 0 if self.state is None else self.state.length

    @property
    def route(self) -> Route:
        """The routing of every position so far: alpha [B, t, L, M], assignment [B, t, L]."""
        if not self.routes:
            raise ValueError("nothing routed yet: prefill a prompt or decode a step first")
        return Route.cat(self.routes)

    @torch.no_grad()
    def prefill(self, idx: Tensor) -> Tensor:
        """Start from a prompt idx [B, T] int64 (T >= 1): its logits [B, T, V]."""
        if idx.dim() != 2 or idx.shape[1] < 1:
            raise ValueError(f"prompt must be [B, T] with T >= 1, got {tuple(idx.shape)}")
        B, T = idx.shape
        if not self.config.rotary and self.config.block_size < T:
            raise PositionLimitError(
                f"prompt of {T} tokens exceeds block_size {self.config.block_size}: this "
                "model's learned positions end there"
            )
        if self.max_context is not None and self.max_context < T:
            raise ValueError(f"prompt of {T} tokens is longer than max_context {self.max_context}")
        route = self.router.prefill(idx)
        c = self.config
        like = self.net.tok_emb.weight
        capacity = max(self.capacity, T)
        layers = [
            LayerState.empty(
                B, c.n_head, c.head_dim, capacity, self.keep_linear, like, self.max_context
            )
            for _ in range(c.n_layer)
        ]
        x = self.net.embed(idx)  # [B, T, C]
        for i, (block, layer) in enumerate(zip(self.net.blocks, layers, strict=True)):
            alpha, assignment = route.layer(i)  # [B, T, M], [B, T]
            h = block.attn.heads(block.ln1(x))  # [B, H, T, D] each
            o = block.attn.attend(h, alpha, assignment)  # the hard-routed engine: [B, H, T, D]
            layer.append(h.k, h.v, h.k_linear)
            x = _finish(block, x, o)
        tokens = idx.new_zeros(B, capacity)
        tokens[:, :T] = idx
        self.state = DecodeState(layers, tokens, T)
        self.routes = [route]
        self.meter = DecodeMeter()
        return self.net.head(self.net.ln_f(x))

    def start_from(self, state: DecodeState) -> None:
        """Continue from a state another decoder filled (a prefill shared by several decoders);
        the routing of its positions is not this decoder's, so `route` covers the steps only."""
        if self.keep_linear and any(layer.state is None for layer in state.layers):
            raise ValueError("this decoder routes linear, but the state keeps no linear state")
        if any(layer.max_context != self.max_context for layer in state.layers):
            raise ValueError(f"the state's max_context is not this decoder's {self.max_context}")
        if getattr(self.router, "budget", None) is not None:
            raise ValueError("budget routing counts the prompt's cost: start with prefill")
        self.state = state
        self.routes = []
        self.meter = DecodeMeter()

    @torch.no_grad()
    def step(self, token: Tensor) -> Tensor:
        """Append one token per sequence, token [B] int64: the logits at its position [B, V]."""
        state = self.state
        if state is None:
            raise ValueError("prefill a prompt before decoding steps")
        t = state.length
        if not self.config.rotary and t >= self.config.block_size:
            raise PositionLimitError(
                f"position {t} is beyond the positional table: this model's learned positions "
                f"end at block_size {self.config.block_size}"
            )
        if token.shape != (state.tokens.shape[0],):
            raise ValueError(
                f"token must be [B] = [{state.tokens.shape[0]}], got {tuple(token.shape)}"
            )
        state.put_token(token)
        reach = self.router.context
        start = 0 if reach is None else max(0, t - reach + 1)
        route = self.router.step(state.tokens[:, start : t + 1], start)  # T = 1
        c = self.config
        x = self._embed(token, t)  # [B, 1, C]
        for i, (block, layer) in enumerate(zip(self.net.blocks, state.layers, strict=True)):
            alpha, assignment = route.alpha[:, 0, i], route.assignment[:, 0, i]  # [B, M], [B]
            h = block.attn.heads(block.ln1(x), start=t)  # [B, H, 1, D] each
            t0 = time.perf_counter()
            layer.append(h.k, h.v, h.k_linear)
            o = attend_step(
                layer, h.q, assignment, alpha, window=c.window, q_linear=h.q_linear
            )  # [B, H, 1, D]
            self.meter.attention_s += time.perf_counter() - t0
            flops = step_flops(
                executed(assignment, alpha),
                min(t + 1, self.max_context or t + 1),
                n_head=c.n_head,
                head_dim=c.head_dim,
                window=c.window,
                linear_state=layer.state is not None,
            )
            for part in PARTS:
                self.meter.flops[part] += flops[part]
            x = _finish(block, x, o)
        state.length = t + 1
        self.routes.append(route)
        self.meter.steps += 1
        return self.net.head(self.net.ln_f(x))[:, 0]

    def _embed(self, token: Tensor, t: int) -> Tensor:
        """Embedding of token [B] at position t -> [B, 1, C], as `RoutedTransformer.embed`."""
        net = self.net
        e = net.tok_emb(token[:, None])  # [B, 1, C]
        if net.shift is not None:  # the previous token's embedding, 0 at t = 0
            prev = torch.zeros_like(e)
            if t > 0:
                prev = net.tok_emb(self.state.tokens[:, t - 1 : t])
            e = e + net.shift(prev)
        return e if net.pos_emb is None else e + net.pos_emb.weight[t]


def _finish(block: Block, x: Tensor, o: Tensor) -> Tensor:
    """The rest of a block after the attention core: x [B, T, C], o [B, H, T, D] -> [B, T, C]."""
    x = x + block.attn.proj(o.transpose(1, 2).reshape(x.shape))
    return x + block.mlp(block.ln2(x))
