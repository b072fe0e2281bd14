"""Multi-query associative recall (MQAR, Arora et al. 2023, Zoology) in bytes: a known answer
that only attention beyond the local window can find.

Each sequence of T bytes starts with `pairs` key-value pairs, then filler (byte 0) with every key
asked once more at a random later position — always more than `window` tokens after the key,
so a sliding window of that size cannot see it. The answer of a query is its key's value; it is
scored only there (`mask`), as Zoology's labels are. Keys and values come from disjoint byte
ranges, so a value is never mistaken for a key. Chance accuracy is 1 / value_vocab.

    >>> task = MQARTask(MQARConfig(seq_len=24, pairs=2, window=4))
    >>> b = task.batch(1, torch.Generator().manual_seed(0))
    >>> x, y, mask = b.x[0].tolist(), b.y[0].tolist(), b.mask[0]
    >>> keys, values = x[0:4:2], x[1:4:2]
    >>> [(x[t], y[t]) for t in mask.nonzero().flatten().tolist()] in (
    ...     [(keys[0], values[0]), (keys[1], values[1])], [(keys[1], values[1]), (keys[0], values[0])])
    True

Classes per position (`CLASS_NAMES`): key and value (the pairs), query (a repeated key: the
answer is predicted there) and other (filler). Batches are drawn from a seeded generator;
validation batches from a fixed seed of their own, so every run scores the same sequences.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch

from ..config import MQAR_TASK
from .batches import Batch

CLASS_NAMES = ("other", "key", "value", "query")
OTHER, KEY, VALUE, QUERY = range(4)
FILLER_BYTE = 0
VAL_SEED = 1_000_003  # seed of the fixed validation sequences


@dataclass(frozen=True)
class MQARConfig:
    seq_len: int = 64  # T, bytes per sequence
    pairs: int = 4  # key-value pairs, each asked once
    window: int = 8  # every query lies more than this many tokens after its key
    key_start: int = 1  # keys are bytes key_start .. key_start + key_vocab - 1
    key_vocab: int = 64  # distinct keys (pairs <= key_vocab)
    value_start: int = 128  # values are bytes value_start .. value_start + value_vocab - 1
    value_vocab: int = 128  # distinct values: chance accuracy is 1 / value_vocab

    def __post_init__(self) -> None:
        if self.pairs < 1 or self.pairs > self.key_vocab:
            raise ValueError(
                f"MQAR pairs must be in 1..key_vocab={self.key_vocab}, got {self.pairs}"
            )
        if self.window < 0:
            raise ValueError(f"MQAR window must be >= 0, got {self.window}")
        keys = range(self.key_start, self.key_start + self.key_vocab)
        values = range(self.value_start, self.value_start + self.value_vocab)
        if FILLER_BYTE in keys or FILLER_BYTE in values or set(keys) & set(values):
            raise ValueError("MQAR keys, values and the filler byte 0 must not overlap")
        if max(keys[-1], values[-1]) > 255 or min(keys[0], values[0]) < 0:
            raise ValueError("MQAR keys and values must be bytes (0..255)")
        # the last key sits at 2 (pairs - 1); every key needs its own slot beyond the window
        if self.seq_len - (2 * (self.pairs - 1) + self.window + 1) < self.pairs:
            raise ValueError(
                f"MQAR seq_len={self.seq_len} leaves no room for {self.pairs} queries more than "
                f"window={self.window} tokens after their keys"
            )

    @property
    def chance(self) -> float:
        return 1.0 / self.value_vocab


class MQARTask:
    """The MQAR data source: seeded training batches, fixed validation batches, a hash."""

    name = MQAR_TASK
    class_names = CLASS_NAMES

    def __init__(self, config: MQARConfig) -> None:
        self.config = config
        blob = json.dumps(asdict(config), sort_keys=True).encode()
        self.sha256 = hashlib.sha256(b"mqar-v1" + blob).hexdigest()  # what a run records

    def record(self) -> dict[str, object]:
        """What a run folder records of its data."""
        return {"name": self.name, "sha256": self.sha256, "mqar": asdict(self.config)}

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        """batch_size sequences: x [B, T] int64, y [B, T] (the answer where mask), mask, classes."""
        c = self.config
        B, T, P = batch_size, c.seq_len, c.pairs
        keys = torch.rand(B, c.key_vocab, generator=generator).argsort(-1)[:, :P] + c.key_start
        values = torch.randint(c.value_vocab, (B, P), generator=generator) + c.value_start
        x = torch.full((B, T), FILLER_BYTE, dtype=torch.long)
        classes = torch.full((B, T), OTHER, dtype=torch.uint8)
        x[:, 0 : 2 * P : 2], x[:, 1 : 2 * P : 2] = keys, values
        classes[:, 0 : 2 * P : 2], classes[:, 1 : 2 * P : 2] = KEY, VALUE
        y = torch.cat([x[:, 1:], torch.full((B, 1), FILLER_BYTE)], dim=1)  # next byte elsewhere
        mask = torch.zeros(B, T, dtype=torch.bool)
        positions = self._query_positions(B, generator)  # [B, P]: query of key i at [b, i]
        rows = torch.arange(B)[:, None]
        x[rows, positions], y[rows, positions] = keys, values
        mask[rows, positions], classes[rows, positions] = True, QUERY
        return Batch(x, y, mask, classes)

    def _query_positions(self, B: int, generator: torch.Generator) -> torch.Tensor:
        """[B, pairs] distinct positions, the one of key i more than `window` after 2 i.

        Keys are placed latest-first, each at a uniform free position of its allowed range."""
        c = self.config
        T, P = c.seq_len, c.pairs
        free = torch.ones(B, T, dtype=torch.bool)
        free[:, : 2 * P] = False
        out = torch.empty(B, P, dtype=torch.long)
        for i in reversed(range(P)):  # the latest key has the smallest range
            allowed = free.clone()
            allowed[:, : 2 * i + c.window + 1] = False
            pick = torch.multinomial(allowed.double(), 1, generator=generator)[:, 0]  # [B]
            out[:, i] = pick
            free[torch.arange(B), pick] = False
        return out

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        return self.batch(batch_size, generator)

    def val_batches(self, batch_size: int, count: int) -> list[Batch]:
        """`count` fixed validation batches (the same for every run of this config)."""
        generator = torch.Generator().manual_seed(VAL_SEED)
        return [self.batch(batch_size, generator) for _ in range(count)]
