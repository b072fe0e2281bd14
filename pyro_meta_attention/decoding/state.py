"""Per-layer decoding state: the K/V cache of past tokens and the linear running state.

A full-routed query reads every cached key, a local one the last w of them (a view of the same
cache, never a copy), a linear one the running state S = sum_s phi(k_s) v_s^T [D, D] and its
normaliser z = sum_s phi(k_s) [D]. The running state takes every token's key and value whether
or not that token was routed linear, as the forward pass does; a decoder whose routing can
never choose linear (a dense baseline, `fixed-full`, `fixed-local`) keeps none.

The cache grows as the sequence does: when an append does not fit, the buffer
[B, H, capacity, D] is re-allocated at twice the size (or what the append needs) and the cached
rows copied once, so n tokens cost O(n) copying in all (amortised O(1) per token), never a copy
per token. With `max_context` N the cache keeps only the last N positions: full attention then
reads the last N keys (a sliding window of N, no longer all of them); local attention (w <= N)
and the linear running state (which never drops a key) are unchanged. Its buffer holds 2N rows,
and when it is full the last N - 1 are moved to the front: one copy of N rows per N tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..mechanisms.linear import feature_map


@dataclass
class LayerState:
    """One layer's state for B sequences of equal length.

    keys, values: [B, H, capacity, D]; rows 0 .. stored - 1 hold positions offset .. length - 1
    (offset > 0 once `max_context` dropped older keys); state: [B, H, D, D] and norm: [B, H, D]
    (None when no token can be routed linear); length: positions appended so far.
    """

    keys: Tensor
    values: Tensor
    state: Tensor | None
    norm: Tensor | None
    length: int = 0
    offset: int = 0
    max_context: int | None = None

    @classmethod
    def empty(
        cls,
        B: int,
        H: int,
        D: int,
        capacity: int,
        linear: bool,
        like: Tensor,
        max_context: int | None = None,
    ) -> LayerState:
        """An empty state with room for `capacity` positions (it grows); device and dtype from
        `like`."""
        if max_context is not None:
            capacity = 2 * max_context
        keys = like.new_zeros(B, H, capacity, D)
        values = like.new_zeros(B, H, capacity, D)
        state = like.new_zeros(B, H, D, D) if linear else None
        norm = like.new_zeros(B, H, D) if linear else None
        return cls(keys, values, state, norm, max_context=max_context)

    @property
    def capacity(self) -> int:
        """Rows allocated."""
        return self.keys.shape[2]

    @property
    def stored(self) -> int:
        """Positions cached: length - offset."""
        return self.length - self.offset

    def append(self, k: Tensor, v: Tensor, k_linear: Tensor | None = None) -> None:
        """Add the keys and values of T new positions: k, v [B, H, T, D]; the linear running
        state takes k_linear instead of k when given (unrotated keys under rotary positions)."""
        T = k.shape[2]
        self._make_room(T)
        row = self.stored
        self.keys[:, :, row : row + T] = k
        self.values[:, :, row : row + T] = v
        self.length += T
        if self.state is not None:
            kf = feature_map(k if k_linear is None else k_linear)  # [B, H, T, D]
            self.state += kf.transpose(-1, -2) @ v  # [B, H, D, D]
            self.norm += kf.sum(2)  # [B, H, D]

    def _make_room(self, T: int) -> None:
        """Make rows stored .. stored + T - 1 free: drop keys beyond max_context, or grow."""
        if self.stored + T <= self.capacity:
            return
        if self.max_context is not None and self.max_context >= T:
            keep = min(self.stored, self.max_context - 1)  # the new rows make it N at most
            for buffer in (self.keys, self.values):
                buffer[:, :, :keep] = buffer[:, :, self.stored - keep : self.stored].clone()
            self.offset = self.length - keep
            if keep + T <= self.capacity:
                return
        size = max(2 * self.capacity, self.stored + T)
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_zeros(old.shape[:2] + (size,) + old.shape[3:])
            new[:, :, : self.stored] = old[:, :, : self.stored]
            setattr(self, name, new)

    def cached(self, rows: slice, last: int | None = None) -> tuple[Tensor, Tensor]:
        """Views of the cached keys and values of `rows`, all positions (within max_context) or
        only the `last`: [b, H, t, D] each, no copy."""
        limits = [x for x in (last, self.max_context) if x is not None]
        start = max(0, self.stored - min(limits)) if limits else 0
        return (
            self.keys[rows, :, start : self.stored],
            self.values[rows, :, start : self.stored],
        )

    def nbytes(self) -> dict[str, int]:
        """Bytes held: the allocated K/V cache, its used part, and the linear state."""
        per_position = 2 * self.keys[:, :, :1].nbytes  # one position of keys and values
        linear = 0 if self.state is None else self.state.nbytes + self.norm.nbytes
        return {
            "kv_cache": self.capacity * per_position,
            "kv_used": self.stored * per_position,
            "linear_state": linear,
        }

    def clone(self) -> LayerState:
        """An independent copy (the benchmark starts every variant from one prefill)."""
        state, norm = (None if x is None else x.clone() for x in (self.state, self.norm))
        keys, values = self.keys.clone(), self.values.clone()
        return LayerState(keys, values, state, norm, self.length, self.offset, self.max_context)

    def without_linear(self) -> LayerState:
        """This state, sharing its cache, with no linear running state (for a routing that never
        picks linear)."""
        return LayerState(
            self.keys, self.values, None, None, self.length, self.offset, self.max_context
        )


@dataclass
class DecodeState:
    """Everything a decoder carries from token to token, for B sequences of equal length.

    layers: one LayerState per transformer block; tokens: [B, capacity] int64, the bytes seen so
    far in positions 0 .. length - 1 (the token shift and the guide's causal context read the
    last few; it grows as the caches do); length: positions filled.
    """

    layers: list[LayerState]
    tokens: Tensor
    length: int = 0

    def put_token(self, token: Tensor) -> None:
        """Write token [B] at position `length` (not yet counted), growing the buffer if full."""
        if self.length >= self.tokens.shape[1]:
            grown = self.tokens.new_zeros(self.tokens.shape[0], 2 * self.tokens.shape[1])
            grown[:, : self.length] = self.tokens[:, : self.length]
            self.tokens = grown
        self.tokens[:, self.length] = token

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
