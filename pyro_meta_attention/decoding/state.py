"""Per-layer decoding state: the K/V cache of every past token and the linear running state.

A full-routed query reads every cached key, a local one the last w of them (a view of the same
cache, never a copy), a linear one the running state S = sum_s phi(k_s) v_s^T [D, D] and its
normaliser z = sum_s phi(k_s) [D]. The running state takes every token's key and value whether
or not that token was routed linear, as the forward pass does; a decoder whose routing can
never choose linear (a dense baseline, `fixed-full`, `fixed-local`) keeps none.

The cache is allocated once for `capacity` positions, [B, H, capacity, D]: appending a token
writes one slot and nothing is re-allocated or copied as the sequence grows.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..mechanisms.linear import feature_map


@dataclass
class LayerState:
    """One layer's state for B sequences of equal length.

    keys, values: [B, H, capacity, D], valid in positions 0 .. length - 1;
    state: [B, H, D, D] and norm: [B, H, D] (None when no token can be routed linear).
    """

    keys: Tensor
    values: Tensor
    state: Tensor | None
    norm: Tensor | None
    length: int = 0

    @classmethod
    def empty(cls, B: int, H: int, D: int, capacity: int, linear: bool, like: Tensor) -> LayerState:
        """An empty state; device and dtype from `like`."""
        keys = like.new_zeros(B, H, capacity, D)
        values = like.new_zeros(B, H, capacity, D)
        state = like.new_zeros(B, H, D, D) if linear else None
        norm = like.new_zeros(B, H, D) if linear else None
        return cls(keys, values, state, norm)

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def append(self, k: Tensor, v: Tensor) -> None:
        """Add the keys and values of T new positions: k, v [B, H, T, D]."""
        T = k.shape[2]
        if self.length + T > self.capacity:
            raise ValueError(
                f"decoding state is full: {self.length} + {T} positions exceed its capacity "
                f"{self.capacity}"
            )
        self.keys[:, :, self.length : self.length + T] = k
        self.values[:, :, self.length : self.length + T] = v
        self.length += T
        if self.state is not None:
            kf = feature_map(k)  # [B, H, T, D]
            self.state += kf.transpose(-1, -2) @ v  # [B, H, D, D]
            self.norm += kf.sum(2)  # [B, H, D]

    def cached(self, rows: slice, last: int | None = None) -> tuple[Tensor, Tensor]:
        """Views of the cached keys and values of `rows`, all positions or only the `last`:
        [b, H, t, D] each, no copy."""
        start = 0 if last is None else max(0, self.length - last)
        return (
            self.keys[rows, :, start : self.length],
            self.values[rows, :, start : self.length],
        )

    def nbytes(self) -> dict[str, int]:
        """Bytes held: the allocated K/V cache, its used part, and the linear state."""
        per_position = 2 * self.keys[:, :, :1].nbytes  # one position of keys and values
        linear = 0 if self.state is None else self.state.nbytes + self.norm.nbytes
        return {
            "kv_cache": self.capacity * per_position,
            "kv_used": self.length * per_position,
            "linear_state": linear,
        }

    def clone(self) -> LayerState:
        """An independent copy (the benchmark starts every variant from one prefill)."""
        state, norm = (None if x is None else x.clone() for x in (self.state, self.norm))
        return LayerState(self.keys.clone(), self.values.clone(), state, norm, self.length)

    def without_linear(self) -> LayerState:
        """This state, sharing its cache, with no linear running state (for a routing that never
        picks linear)."""
        return LayerState(self.keys, self.values, None, None, self.length)


@dataclass
class DecodeState:
    """Everything a decoder carries from token to token, for B sequences of equal length.

    layers: one LayerState per transformer block; tokens: [B, capacity] int64, the bytes seen so
    far (the token shift and the guide's causal context read the last few); length: positions
    filled.
    """

    layers: list[LayerState]
    tokens: Tensor
    length: int = 0

    def nbytes(self) -> dict[str, int]:
        """Bytes of every layer's state, summed: kv_cache, kv_used, linear_state."""
        total = dict.fromkeys(("kv_cache", "kv_used", "linear_state"), 0)
        for layer in self.layers:
            for key, value in layer.nbytes().items():
                total[key] += value
        return total

    def clone(self, linear: bool = True) -> DecodeState:
        """An independent copy; linear=False drops the linear running state."""
        layers = [layer.clone() for layer in self.layers]
        if not linear:
            layers = [layer.without_linear() for layer in layers]
        return DecodeState(layers, self.tokens.clone(), self.length)
